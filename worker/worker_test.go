package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// rig is a real embedded JetStream queue and a real SQLite store.
type rig struct {
	t     *testing.T
	q     *queue.Queue
	st    *sqlite.Store
	cons  *queue.Consumer
	qcfg  queue.Config
	count int
}

func newRig(t *testing.T, mutate func(*queue.Config)) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	qcfg := queue.DefaultConfig()
	qcfg.DataDir = t.TempDir()
	qcfg.PublishTimeout = 3 * time.Second
	qcfg.Partitions = 4 // the workers drain several streams, fairly
	if mutate != nil {
		mutate(&qcfg)
	}
	q, err := queue.Open(ctx, qcfg, prometheus.NewRegistry(), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = q.Close(ctx)
	})
	st, err := sqlite.Open(ctx, sqlite.Config{Path: t.TempDir() + "/levee.db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, q: q, st: st, cons: cons, qcfg: q.Config()}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// publish queues n distinct messages and returns their ids.
func (r *rig) publish(n int) []string {
	r.t.Helper()
	var ids []string
	for range n {
		r.count++
		body := fmt.Appendf(nil, "From: a@client.test\r\nSubject: m%d\r\n\r\nbody %d\r\n", r.count, r.count)
		env := mail.Envelope{From: "a@client.test", To: []string{"rcpt@example.test"}, ReceivedAt: time.Now()}
		m := &mail.Message{ID: mail.ID(env.From, env.To, body), Envelope: env, Raw: body, Size: int64(len(body))}
		if _, err := r.q.Publish(context.Background(), m); err != nil {
			r.t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	return ids
}

func (r *rig) worker(cfg Config, st store.Store) (*Worker, *prometheus.Registry) {
	r.t.Helper()
	reg := prometheus.NewRegistry()
	cfg.ProgressEvery = r.qcfg.AckWait / 3
	if cfg.FetchWait == 0 {
		cfg.FetchWait = 100 * time.Millisecond
	}
	w, err := New(cfg, r.cons, st, reg, testLog(r.t))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Shutdown(ctx)
	})
	return w, reg
}

func (r *rig) stored() int {
	r.t.Helper()
	page, err := r.st.Messages(context.Background(), "rcpt@example.test", store.Page{Limit: store.MaxPageLimit})
	if errors.Is(err, store.ErrNotFound) {
		return 0
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return len(page.Messages)
}

// queueState is the part of the queue's state the tests look at.
type queueState struct {
	Messages    uint64 // in the mail stream
	DeadLetters uint64
	Consumer    struct {
		NumPending    uint64
		NumAckPending int
	}
}

func (r *rig) status() queueState {
	r.t.Helper()
	ctx := context.Background()
	var st queueState
	info := func(name string) *jetstream.StreamInfo {
		s, err := r.q.JetStream().Stream(ctx, name)
		if err != nil {
			r.t.Fatal(err)
		}
		return s.CachedInfo()
	}
	st.DeadLetters = info(r.qcfg.DeadStream).State.Msgs
	for _, p := range r.qcfg.Layout() {
		st.Messages += info(p.Stream).State.Msgs
		c, err := r.q.JetStream().Consumer(ctx, p.Stream, r.qcfg.Durable)
		if err != nil {
			r.t.Fatal(err)
		}
		st.Consumer.NumPending += c.CachedInfo().NumPending
		st.Consumer.NumAckPending += c.CachedInfo().NumAckPending
	}
	return st
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func deliveries(reg *prometheus.Registry, result string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "levee_worker_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestDrainsQueueIntoStoreAndAcks(t *testing.T) {
	r := newRig(t, nil)
	r.publish(100)
	w, reg := r.worker(Config{Concurrency: 3, BatchSize: 16}, r.st)
	w.Start()
	waitFor(t, 30*time.Second, "queue drained", func() bool {
		s := r.status()
		return s.Messages == 0 && s.Consumer.NumAckPending == 0
	})
	if n := r.stored(); n != 100 {
		t.Fatalf("stored %d, want 100", n)
	}
	if got := deliveries(reg, "stored"); got != 100 {
		t.Fatalf("levee_worker_deliveries_total{result=stored} = %v, want 100", got)
	}
	if got := testutil.ToFloat64(w.metrics.concurrency); got != 3 {
		t.Fatalf("concurrency gauge %v, want 3", got)
	}
}

func TestZeroConcurrencyPausesDraining(t *testing.T) {
	r := newRig(t, nil)
	r.publish(10)
	w, _ := r.worker(Config{Concurrency: 0}, r.st)
	w.Start()
	time.Sleep(300 * time.Millisecond)
	if s := r.status(); s.Messages != 10 || r.stored() != 0 {
		t.Fatalf("paused worker drained: queue %d, stored %d", s.Messages, r.stored())
	}
	w.SetConcurrency(2)
	waitFor(t, 20*time.Second, "drained after resume", func() bool { return r.stored() == 10 })
	w.SetConcurrency(0)
	if c := w.Concurrency(); c != 0 {
		t.Fatalf("concurrency %d after SetConcurrency(0)", c)
	}
}

// crashAfterCommit commits through the real store and then kills the
// delivery goroutine before it can ack, as a worker process dying between
// the commit and the ack would.
type crashAfterCommit struct {
	store.Store
	crashed atomic.Bool
}

func (c *crashAfterCommit) Deliver(ctx context.Context, msgs []*mail.Message) ([]store.DeliveryResult, error) {
	res, err := c.Store.Deliver(ctx, msgs)
	if err == nil && c.crashed.CompareAndSwap(false, true) {
		runtime.Goexit()
	}
	return res, err
}

func TestWorkerDyingAfterCommitBeforeAckDoesNotDuplicate(t *testing.T) {
	r := newRig(t, func(c *queue.Config) {
		c.AckWait = 300 * time.Millisecond
		c.Backoff = []time.Duration{300 * time.Millisecond}
	})
	ids := r.publish(1)
	crashing := &crashAfterCommit{Store: r.st}
	dying, _ := r.worker(Config{Concurrency: 1, BatchSize: 1}, crashing)
	dying.Start()
	waitFor(t, 10*time.Second, "commit then crash", func() bool { return crashing.crashed.Load() })
	if n := r.stored(); n != 1 {
		t.Fatalf("after the crash the store holds %d, want the 1 committed", n)
	}
	// The dead worker never acked: JetStream redelivers to a healthy one.
	healthy, reg := r.worker(Config{Concurrency: 1}, r.st)
	healthy.Start()
	waitFor(t, 20*time.Second, "redelivery settled", func() bool { return deliveries(reg, "duplicate") == 1 })
	waitFor(t, 10*time.Second, "queue empty", func() bool {
		s := r.status()
		return s.Messages == 0 && s.Consumer.NumAckPending == 0
	})
	if n := r.stored(); n != 1 {
		t.Fatalf("store holds %d messages after redelivery, want 1", n)
	}
	if _, err := r.st.Message(context.Background(), ids[0]); err != nil {
		t.Fatal(err)
	}
}

// flakyStore fails every call, Ping included, while down: a store outage.
type flakyStore struct {
	store.Store
	down  atomic.Bool
	calls atomic.Int64
}

var errStoreDown = errors.New("connection refused")

func (f *flakyStore) Deliver(ctx context.Context, msgs []*mail.Message) ([]store.DeliveryResult, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return nil, errStoreDown
	}
	return f.Store.Deliver(ctx, msgs)
}

func (f *flakyStore) Ping(ctx context.Context) error {
	if f.down.Load() {
		return errStoreDown
	}
	return f.Store.Ping(ctx)
}

func TestStoreOutageBacksOffKeepsMailQueuedAndRecovers(t *testing.T) {
	r := newRig(t, func(c *queue.Config) { c.MaxDeliver = 2 })
	r.publish(20)
	flaky := &flakyStore{Store: r.st}
	flaky.down.Store(true)
	w, reg := r.worker(Config{Concurrency: 2, BatchSize: 8, RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 200 * time.Millisecond}, flaky)
	w.Start()
	// Long enough for many more attempts than MaxDeliver.
	waitFor(t, 20*time.Second, "several failed attempts", func() bool { return flaky.calls.Load() >= 6 })
	if got := testutil.ToFloat64(w.metrics.storeAvailable); got != 0 {
		t.Fatalf("levee_worker_store_available = %v during the outage, want 0", got)
	}
	if dl := deliveries(reg, "dead_lettered"); dl != 0 {
		t.Fatalf("%v messages dead-lettered because the store was down; an outage must not burn deliveries", dl)
	}
	if s := r.status(); s.Messages != 20 {
		t.Fatalf("queue holds %d during the outage, want all 20", s.Messages)
	}
	flaky.down.Store(false)
	waitFor(t, 30*time.Second, "all stored after recovery", func() bool { return r.stored() == 20 })
	waitFor(t, 10*time.Second, "queue empty", func() bool { return r.status().Messages == 0 })
	if s := r.status(); s.DeadLetters != 0 {
		t.Fatalf("dead letters %d, want 0", s.DeadLetters)
	}
	if got := deliveries(reg, "stored"); got != 20 {
		t.Fatalf("stored counter %v, want 20", got)
	}
}

// fullStore refuses every write with store.ErrUnavailable while full, and
// answers Ping all along: a store whose disk is full.
type fullStore struct {
	store.Store
	full  atomic.Bool
	calls atomic.Int64
}

var errDiskFull = fmt.Errorf("sqlite: deliver: %w: database or disk is full (13)", store.ErrUnavailable)

func (f *fullStore) Deliver(ctx context.Context, msgs []*mail.Message) ([]store.DeliveryResult, error) {
	f.calls.Add(1)
	if f.full.Load() {
		return nil, errDiskFull
	}
	return f.Store.Deliver(ctx, msgs)
}

// TestFullStoreIsAnOutageNotTheMessagesFault (issue 12 item 5): a store
// that refuses writes as unavailable but answers Ping is an outage: the
// batch is held without spending delivery attempts, StoreOutage says why
// (for /readyz), and draining resumes once the store takes writes.
func TestFullStoreIsAnOutageNotTheMessagesFault(t *testing.T) {
	r := newRig(t, func(c *queue.Config) { c.MaxDeliver = 2 })
	r.publish(20)
	full := &fullStore{Store: r.st}
	full.full.Store(true)
	w, reg := r.worker(Config{Concurrency: 2, BatchSize: 8, RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond}, full)
	if err := w.StoreOutage(); err != nil {
		t.Fatalf("StoreOutage before any write: %v", err)
	}
	w.Start()
	// Many more attempts than MaxDeliver allows each message.
	waitFor(t, 30*time.Second, "many failed writes", func() bool {
		return full.calls.Load() >= 3*20 || deliveries(reg, "dead_lettered") > 0
	})
	if dl := deliveries(reg, "dead_lettered"); dl != 0 {
		t.Fatalf("%v messages dead-lettered because the store's disk was full", dl)
	}
	if err := w.StoreOutage(); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("StoreOutage during the outage = %v, want the store's error", err)
	}
	if got := testutil.ToFloat64(w.metrics.storeAvailable); got != 0 {
		t.Fatalf("levee_worker_store_available = %v while full, want 0", got)
	}
	if s := r.status(); s.Messages != 20 {
		t.Fatalf("queue holds %d while the store is full, want all 20", s.Messages)
	}
	full.full.Store(false)
	waitFor(t, 30*time.Second, "all stored once the store has room", func() bool { return r.stored() == 20 })
	waitFor(t, 10*time.Second, "queue empty", func() bool { return r.status().Messages == 0 })
	if err := w.StoreOutage(); err != nil {
		t.Fatalf("StoreOutage after recovery = %v, want nil", err)
	}
	if s := r.status(); s.DeadLetters != 0 {
		t.Fatalf("dead letters %d, want 0", s.DeadLetters)
	}
}

// fillsWhileIsolating refuses any batch of more than one message as a
// healthy store refuses a poison message, and single messages as full
// while full: the disk fills while the worker isolates the batch.
type fillsWhileIsolating struct {
	fullStore
}

func (f *fillsWhileIsolating) Deliver(ctx context.Context, msgs []*mail.Message) ([]store.DeliveryResult, error) {
	if len(msgs) > 1 {
		f.calls.Add(1)
		return nil, errors.New("value too long for column")
	}
	return f.fullStore.Deliver(ctx, msgs)
}

func TestDiskFillingWhileIsolatingHoldsTheRest(t *testing.T) {
	r := newRig(t, func(c *queue.Config) { c.MaxDeliver = 2 })
	r.publish(4)
	st := &fillsWhileIsolating{fullStore{Store: r.st}}
	st.full.Store(true)
	w, reg := r.worker(Config{Concurrency: 1, BatchSize: 4, RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond}, st)
	w.Start()
	waitFor(t, 30*time.Second, "many failed writes", func() bool {
		return st.calls.Load() >= 20 || deliveries(reg, "dead_lettered") > 0
	})
	if dl := deliveries(reg, "dead_lettered"); dl != 0 {
		t.Fatalf("%v messages dead-lettered because the disk filled while a batch was isolated", dl)
	}
	st.full.Store(false)
	waitFor(t, 30*time.Second, "all stored one by one", func() bool { return r.stored() == 4 })
}

// refuseOne refuses one message id while the store is otherwise healthy:
// a poison message.
type refuseOne struct {
	store.Store
	id string
}

func (p *refuseOne) Deliver(ctx context.Context, msgs []*mail.Message) ([]store.DeliveryResult, error) {
	for _, m := range msgs {
		if m.ID == p.id {
			return nil, errors.New("value too long for column")
		}
	}
	return p.Store.Deliver(ctx, msgs)
}

func TestPoisonMessageIsDeadLetteredWithReasonOthersStored(t *testing.T) {
	r := newRig(t, func(c *queue.Config) { c.MaxDeliver = 3 })
	ids := r.publish(6)
	poison := &refuseOne{Store: r.st, id: ids[2]}
	w, reg := r.worker(Config{Concurrency: 1, BatchSize: 6, RetryDelay: 20 * time.Millisecond, MaxRetryDelay: 50 * time.Millisecond}, poison)
	w.Start()
	waitFor(t, 30*time.Second, "poison message dead-lettered", func() bool { return deliveries(reg, "dead_lettered") == 1 })
	waitFor(t, 10*time.Second, "queue empty", func() bool {
		s := r.status()
		return s.Messages == 0 && s.Consumer.NumAckPending == 0
	})
	if n := r.stored(); n != 5 {
		t.Fatalf("stored %d, want the 5 healthy messages", n)
	}
	if _, err := r.st.Message(context.Background(), ids[2]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("poison message stored or lookup failed: %v", err)
	}
	dead, err := r.q.JetStream().Stream(context.Background(), r.qcfg.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := dead.GetLastMsgForSubject(context.Background(), ">")
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get(queue.HeaderMsgID); got != ids[2] {
		t.Fatalf("dead letter id %q, want %q", got, ids[2])
	}
	if reason := msg.Header.Get(queue.HeaderDeadReason); !strings.Contains(reason, "value too long for column") || !strings.Contains(reason, "3 times") {
		t.Fatalf("dead letter reason %q lacks the store's error and the attempt count", reason)
	}
}

func TestMessageRedeliveredPastMaxDeliverIsDeadLetteredBeforeTrying(t *testing.T) {
	r := newRig(t, func(c *queue.Config) {
		c.MaxDeliver = 2
		c.AckWait = 100 * time.Millisecond
		c.Backoff = []time.Duration{100 * time.Millisecond}
	})
	r.publish(1)
	// Take the message twice without settling it, as two crashing workers would.
	for i := range 2 {
		ds, _, err := r.cons.Fetch(1, 5*time.Second)
		if err != nil || len(ds) != 1 {
			t.Fatalf("fetch %d: got %d messages, %v", i, len(ds), err)
		}
	}
	w, reg := r.worker(Config{Concurrency: 1}, r.st)
	w.Start()
	waitFor(t, 20*time.Second, "dead-lettered", func() bool { return deliveries(reg, "dead_lettered") == 1 })
	if n := r.stored(); n != 0 {
		t.Fatalf("a message that crashed workers twice was tried again: stored %d", n)
	}
}

func TestShutdownFinishesInFlightBatch(t *testing.T) {
	r := newRig(t, nil)
	r.publish(50)
	w, _ := r.worker(Config{Concurrency: 2, BatchSize: 10}, r.st)
	w.Start()
	waitFor(t, 20*time.Second, "some stored", func() bool { return r.stored() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	// Acks are asynchronous: give the server a moment to apply the last ones.
	waitFor(t, 5*time.Second, "acks applied", func() bool { return r.status().Consumer.NumAckPending == 0 })
	s := r.status()
	if got := int(s.Messages) + r.stored(); got != 50 {
		t.Fatalf("queued %d + stored %d != 50: a message was lost or duplicated", s.Messages, r.stored())
	}
	w.SetConcurrency(3)
	if w.Concurrency() != 0 {
		t.Fatal("SetConcurrency after Shutdown started loops")
	}
}

// TestEachMessageIsParsedOnceAndCounted: the worker's MIME parse (the only
// one a message gets) sorts messages into clean, messy and headers-only,
// and all three are stored.
func TestEachMessageIsParsedOnceAndCounted(t *testing.T) {
	r := newRig(t, nil)
	bodies := [][]byte{
		[]byte("From: a@client.test\r\nSubject: clean\r\n\r\nhello\r\n"),
		[]byte("From: a@client.test\r\nSubject: messy\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nno closing boundary\r\n"),
		[]byte("From: a@client.test\r\nSubject: many parts\r\n\r\n" + strings.Repeat("--x\r\n", 5)),
	}
	for _, body := range bodies {
		env := mail.Envelope{From: "a@client.test", To: []string{"rcpt@example.test"}, ReceivedAt: time.Now()}
		m := &mail.Message{ID: mail.ID(env.From, env.To, body), Envelope: env, Raw: body, Size: int64(len(body))}
		if _, err := r.q.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Concurrency: 1}
	cfg.ParseLimits.MaxParts = 3
	w, _ := r.worker(cfg, r.st)
	w.Start()
	waitFor(t, 20*time.Second, "all stored", func() bool { return r.stored() == 3 })
	for result, want := range map[string]float64{"ok": 1, "warnings": 1, "headers_only": 1} {
		if got := testutil.ToFloat64(w.metrics.parse.WithLabelValues(result)); got != want {
			t.Errorf("levee_worker_parse_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}
