package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// These tests run the autoscaler on the real clock against the real queue
// and SQLite. The store is wrapped to take longer the more writes are in
// flight, as a loaded database does, so that the outcome does not hang on
// how fast this machine's SQLite is; a slower machine only makes writes
// slower still, which every assertion here tolerates.

// loadedStore delays each write by base + perInFlight * writes in flight.
type loadedStore struct {
	store.Store
	base, perInFlight time.Duration
	inflight          atomic.Int64
	mostInFlight      atomic.Int64

	mu     sync.Mutex
	writes []time.Time // commit times, one per message
}

func (s *loadedStore) Deliver(ctx context.Context, msgs []*mail.Message) ([]store.DeliveryResult, error) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		most := s.mostInFlight.Load()
		if n <= most || s.mostInFlight.CompareAndSwap(most, n) {
			break
		}
	}
	t := time.NewTimer(s.base + time.Duration(n)*s.perInFlight)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res, err := s.Store.Deliver(ctx, msgs)
	if err == nil {
		s.mu.Lock()
		for range msgs {
			s.writes = append(s.writes, time.Now())
		}
		s.mu.Unlock()
	}
	return res, err
}

func (s *loadedStore) commits() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.writes...)
}

// mailboxCount is how many messages the test mailbox holds (beyond one page).
func (r *rig) mailboxCount() int64 {
	r.t.Helper()
	boxes, err := r.st.Mailboxes(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, b := range boxes {
		if b.Address == "rcpt@example.test" {
			return b.Messages
		}
	}
	return 0
}

func (r *rig) drained() bool {
	s := r.status()
	return s.Messages == 0 && s.Consumer.NumPending == 0 && s.Consumer.NumAckPending == 0
}

// runAutoscaler runs a until the test ends.
func runAutoscaler(t *testing.T, a *Autoscaler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestAutoscalerDrainsRealQueueExactlyOnce(t *testing.T) {
	r := newRig(t, nil)
	ids := r.publish(300)
	// One loop would take about 300/4 * 25ms ≈ 2s: more than target_drain.
	st := &loadedStore{Store: r.st, base: 20 * time.Millisecond, perInFlight: 5 * time.Millisecond}
	w, reg := r.worker(Config{Concurrency: 1, BatchSize: 4}, st)
	a, err := NewAutoscaler(AutoscaleConfig{
		Enabled: true, Min: 1, Max: 8, Interval: 50 * time.Millisecond, TargetDrain: time.Second,
		LatencyBudget: time.Second, LatencyWindow: time.Second, Cooldown: 200 * time.Millisecond, ScaleDownDelay: 300 * time.Millisecond,
	}, w, AutoscalerDeps{Backlog: r.q, Registerer: reg, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	// The consumer's pending count trails the stream by a moment after the
	// last publish (the server updates it asynchronously): wait for it.
	var n uint64
	waitFor(t, 10*time.Second, "the queue's Backlog to count the 300 published", func() bool {
		var err error
		n, _, err = r.q.Backlog(context.Background())
		if err != nil || n > 300 {
			t.Fatalf("Backlog: %d, %v; want the 300 published", n, err)
		}
		return n == 300
	})
	w.Start()
	runAutoscaler(t, a)
	waitFor(t, 60*time.Second, "queue drained", r.drained)

	if up := testutil.ToFloat64(a.metrics.changes.WithLabelValues("up")); up < 1 {
		t.Fatalf("the autoscaler never raised concurrency above min 1 for a backlog of 300 (changes up %v)", up)
	}
	if most := st.mostInFlight.Load(); most < 2 {
		t.Fatalf("at most %d store writes in flight; the raised concurrency never wrote", most)
	}
	if n := r.mailboxCount(); n != 300 {
		t.Fatalf("mailbox holds %d messages, want 300", n)
	}
	for _, id := range ids {
		if _, err := r.st.Message(context.Background(), id); err != nil {
			t.Fatalf("message %s: %v", id, err)
		}
	}
	if got, dup := deliveries(reg, "stored"), deliveries(reg, "duplicate"); got != 300 || dup != 0 {
		t.Fatalf("deliveries stored %v duplicate %v, want 300 and 0", got, dup)
	}
	waitFor(t, 20*time.Second, "back to min after the drain", func() bool { return w.Concurrency() == 1 })
}

func TestAutoscalerHoldsSlowStoreUnderBudgetWithRealQueue(t *testing.T) {
	r := newRig(t, nil)
	r.publish(200)
	// One write in flight takes 35ms, two take 65ms: over a 50ms budget.
	st := &loadedStore{Store: r.st, base: 5 * time.Millisecond, perInFlight: 30 * time.Millisecond}
	w, reg := r.worker(Config{Concurrency: 1, BatchSize: 4}, st)
	cfg := AutoscaleConfig{
		Enabled: true, Min: 1, Max: 8, Interval: 100 * time.Millisecond, TargetDrain: time.Second,
		LatencyBudget: 50 * time.Millisecond, LatencyWindow: time.Second, Cooldown: 300 * time.Millisecond, ScaleDownDelay: 300 * time.Millisecond,
	}
	a, err := NewAutoscaler(cfg, w, AutoscalerDeps{Backlog: r.q, Registerer: reg, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	// Step as Run does, keeping every decision.
	var ds []Decision
	for !r.drained() {
		if len(ds) > 600 {
			t.Fatalf("not drained after %d steps", len(ds))
		}
		ds = append(ds, a.Step(context.Background()))
		time.Sleep(cfg.Interval)
	}
	if !decided(ds, "over budget") {
		trace(t, ds, 1)
		t.Fatal("no decision saw the store over its budget")
	}
	// The backlog asked for more loops than the latency limit allowed, and
	// the limit held: the store is over budget from 2 writes in flight on
	// (on a slow machine from 1, which only holds concurrency lower).
	held := false
	for _, d := range ds {
		held = held || d.Wanted > d.Limit && d.Next == d.Limit
	}
	if most := st.mostInFlight.Load(); !held || most > 3 {
		trace(t, ds, 1)
		t.Fatalf("limit held concurrency back: %v; most writes in flight %d", held, most)
	}
	if n := r.mailboxCount(); n != 200 {
		t.Fatalf("mailbox holds %d messages, want 200", n)
	}
	if dup := deliveries(reg, "duplicate"); dup != 0 {
		t.Fatalf("%v duplicates", dup)
	}
}

func TestWriteCeilingWithRealQueue(t *testing.T) {
	r := newRig(t, nil)
	r.publish(150)
	st := &loadedStore{Store: r.st}
	const ceiling = 100.0
	w, reg := r.worker(Config{Concurrency: 4, BatchSize: 10, MaxWritesPerSecond: ceiling}, st)
	w.Start()
	waitFor(t, 60*time.Second, "queue drained", r.drained)
	commits := st.commits()
	if len(commits) != 150 || deliveries(reg, "stored") != 150 {
		t.Fatalf("%d messages committed, want 150", len(commits))
	}
	// Over any second, at most the ceiling plus one batch of burst.
	for i, c := range commits {
		n := 0
		for _, d := range commits[i:] {
			if d.Sub(c) < time.Second {
				n++
			}
		}
		if n > int(ceiling*1.1) {
			t.Fatalf("%d messages stored within one second from commit %d; ceiling %v/s", n, i, ceiling)
		}
	}
	if el := commits[len(commits)-1].Sub(commits[0]); float64(len(commits)-10)/el.Seconds() > ceiling*1.1 {
		t.Fatalf("150 messages in %s: faster than %v/s", el, ceiling)
	}
}
