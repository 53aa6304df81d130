package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue/natsserver"
)

func TestPublishDuplicateIsSuccess(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	first, err := q.Publish(ctx, testMessage("dup-1", 500))
	if err != nil || first.Duplicate {
		t.Fatalf("first publish: %+v %v", first, err)
	}
	again, err := q.Publish(ctx, testMessage("dup-1", 500))
	if err != nil {
		t.Fatalf("retransmission: %v", err)
	}
	if !again.Duplicate || again.Seq != first.Seq {
		t.Errorf("retransmission = %+v, want duplicate of seq %d", again, first.Seq)
	}
	if got := storedIDs(t, q, q.Config().Stream); len(got) != 1 || got["dup-1"] != 1 {
		t.Errorf("stream holds %v", got)
	}
}

func TestPublishQueueFull(t *testing.T) {
	t.Run("max_msgs", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.MaxMsgs = 3
		q := openQueue(t, cfg)
		ctx := ctxT(t)
		for _, id := range ids("ok", 3) {
			if _, err := q.Publish(ctx, testMessage(id, 100)); err != nil {
				t.Fatal(err)
			}
		}
		_, err := q.Publish(ctx, testMessage("over", 100))
		if !errors.Is(err, ErrQueueFull) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTooLarge) {
			t.Fatalf("publish over max_msgs = %v, want only ErrQueueFull", err)
		}
		// A retransmission of a queued message is still a success when full.
		if res, err := q.Publish(ctx, testMessage("ok-1", 100)); err != nil || !res.Duplicate {
			t.Errorf("duplicate while full = %+v %v, want duplicate", res, err)
		}
		waitFor(t, "Fill() ~ 1", func() bool { return q.Fill() > 0.99 })
	})
	// DiscardNew with MaxBytes must refuse, not lose (nats-server #4771):
	// every acknowledged message is in the stream.
	t.Run("max_bytes", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.MaxBytes = 64 << 10
		cfg.MaxMsgSize = 16 << 10
		q := openQueue(t, cfg)
		ctx := ctxT(t)
		accepted := map[string]int{}
		full := 0
		for i := range 40 {
			id := fmt.Sprintf("b-%d", i)
			_, err := q.Publish(ctx, testMessage(id, 4000))
			switch {
			case err == nil:
				accepted[id]++
			case errors.Is(err, ErrQueueFull):
				full++
			default:
				t.Fatalf("publish %s: %v", id, err)
			}
		}
		if full == 0 || len(accepted) == 0 {
			t.Fatalf("accepted %d, full %d: want both", len(accepted), full)
		}
		stored := storedIDs(t, q, cfg.Stream)
		if len(stored) != len(accepted) {
			t.Errorf("stored %d messages, acknowledged %d", len(stored), len(accepted))
		}
		for id := range accepted {
			if stored[id] != 1 {
				t.Errorf("acknowledged %s stored %d times", id, stored[id])
			}
		}
		waitFor(t, "Fill() near 1", func() bool { return q.Fill() > 0.9 })
	})
}

func TestPublishTooLarge(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgSize = 8 << 10
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	// Over the stream's max_msg_size: refused by JetStream (10054).
	_, err := q.Publish(ctx, testMessage("big", 16<<10))
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrQueueFull) {
		t.Fatalf("publish over max_msg_size = %v, want ErrTooLarge", err)
	}
	// Over the server's max_payload too: refused by the client.
	_, err = q.Publish(ctx, testMessage("huge", 200<<10))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("publish over max_payload = %v, want ErrTooLarge", err)
	}
	if _, err := q.Publish(ctx, testMessage("small", 1000)); err != nil {
		t.Fatalf("small message after refusals: %v", err)
	}
}

// newReq builds a request as Publish would, for driving flush directly.
func newReq(q *Queue, m *mail.Message) *pubReq {
	ctx, cancel := context.WithTimeout(context.Background(), q.cfg.PublishTimeout)
	_ = cancel // released by the timeout; the tests are short
	msg := encode(q.lanes[0].part, m)
	r := &pubReq{ctx: ctx, msg: msg, id: m.ID, size: msgSize(msg), res: make(chan pubOutcome, 1)}
	r.deadline, _ = ctx.Deadline()
	return r
}

// flushNow publishes msgs as one group commit and returns their outcomes.
func flushNow(q *Queue, msgs ...*mail.Message) []pubOutcome {
	reqs := make([]*pubReq, len(msgs))
	for i, m := range msgs {
		reqs[i] = newReq(q, m)
	}
	q.flush(q.lanes[0], reqs)
	out := make([]pubOutcome, len(reqs))
	for i, r := range reqs {
		out[i] = <-r.res
	}
	return out
}

// TestGroupCommit drives the flusher's batch logic deterministically.
func TestGroupCommit(t *testing.T) {
	cfg := testConfig(t)
	cfg.GroupSync = false // the embedded server batches only with its own fsyncs
	cfg.MaxMsgs = 9
	reg := prometheus.NewRegistry()
	q := openQueueReg(t, cfg, reg)
	ctx := ctxT(t)
	fallbacks := func(reason string) float64 {
		return testutil.ToFloat64(q.metrics.fallbacks.WithLabelValues(reason))
	}

	// A clean batch: one commit, contiguous sequences in order.
	out := flushNow(q, testMessage("g-1", 100), testMessage("g-2", 100), testMessage("g-3", 100))
	for i, o := range out {
		if o.err != nil || o.res.Duplicate || o.res.Seq != uint64(i+1) {
			t.Errorf("batch message %d: %+v", i, o)
		}
	}
	if n, sum := histogram(t, reg, "levee_queue_publish_batch_size"); n != 1 || sum != 3 {
		t.Fatalf("clean batch: %v commits of %v messages, want one of 3", n, sum)
	}
	if f := fallbacks("duplicate") + fallbacks("full") + fallbacks("incomplete"); f != 0 {
		t.Fatalf("clean batch fell back (%v)", f)
	}

	// The same ID twice in one batch: published once, the second answered
	// as its duplicate, neighbours unharmed, no fallback needed.
	out = flushNow(q, testMessage("g-4", 100), testMessage("g-4", 100), testMessage("g-5", 100))
	if out[0].err != nil || out[0].res.Duplicate || out[1].err != nil || !out[1].res.Duplicate ||
		out[1].res.Seq != out[0].res.Seq || out[2].err != nil || out[2].res.Duplicate {
		t.Errorf("in-batch duplicate: %+v", out)
	}

	// An ID already in the stream fails the atomic batch (10201); the
	// fallback answers each message on its own.
	out = flushNow(q, testMessage("g-6", 100), testMessage("g-1", 100), testMessage("g-7", 100))
	if out[0].err != nil || out[0].res.Duplicate || out[2].err != nil || out[2].res.Duplicate {
		t.Errorf("innocent neighbours of a duplicate: %+v", out)
	}
	if out[1].err != nil || !out[1].res.Duplicate || out[1].res.Seq != 1 {
		t.Errorf("stream duplicate in a batch: %+v", out[1])
	}
	if fallbacks("duplicate") != 1 {
		t.Errorf("duplicate fallbacks = %v, want 1", fallbacks("duplicate"))
	}

	// 7 stored, room for 2: a batch of 4 does not fit as a whole; singly
	// two fit (any two: the singles go out together) and two are full.
	batch4 := []*mail.Message{testMessage("g-8", 100), testMessage("g-9", 100), testMessage("g-10", 100), testMessage("g-11", 100)}
	out = flushNow(q, batch4...)
	want := map[string]int{"g-1": 1, "g-2": 1, "g-3": 1, "g-4": 1, "g-5": 1, "g-6": 1, "g-7": 1}
	nFull := 0
	for i, o := range out {
		switch {
		case o.err == nil && !o.res.Duplicate:
			want[batch4[i].ID] = 1
		case errors.Is(o.err, ErrQueueFull):
			nFull++
		default:
			t.Errorf("limit batch message %d: %+v", i, o)
		}
	}
	if nFull != 2 {
		t.Errorf("%d of 4 refused as full, want 2", nFull)
	}
	if fallbacks("full") != 1 {
		t.Errorf("full fallbacks = %v, want 1", fallbacks("full"))
	}
	stored := storedIDs(t, q, cfg.Stream)
	if len(stored) != 9 || len(want) != 9 {
		t.Errorf("stream holds %v, acknowledged %v", stored, want)
	}
	for id := range want {
		if stored[id] != 1 {
			t.Errorf("%s stored %d times", id, stored[id])
		}
	}
	// Below MinBatch a group goes as single publishes.
	q.minBatch = 3
	before := batchCommits(t, reg)
	out = flushNow(q, testMessage("g-1", 100), testMessage("g-2", 100))
	if out[0].err != nil || !out[0].res.Duplicate || out[1].err != nil || !out[1].res.Duplicate {
		t.Errorf("small group: %+v", out)
	}
	if got := batchCommits(t, reg) - before; got != 2 {
		t.Errorf("small group took %v commits, want 2 singles", got)
	}

	// Requests whose caller gave up are not published.
	r := newReq(q, testMessage("gone", 100))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	r.ctx = cctx
	q.flush(q.lanes[0], []*pubReq{r})
	if o := <-r.res; !errors.Is(o.err, ErrUnavailable) {
		t.Errorf("abandoned request: %+v", o)
	}
}

// batchCommits counts commits (atomic batches and single publishes).
func batchCommits(t testing.TB, reg *prometheus.Registry) float64 {
	n, _ := histogram(t, reg, "levee_queue_publish_batch_size")
	return n
}

// TestGroupCommitTooLargeNeighbour: a message over the stream's
// max_msg_size that still went into a batch (the limit was lowered live)
// fails the batch; the fallback refuses only that message.
func TestGroupCommitTooLargeNeighbour(t *testing.T) {
	q := openQueue(t, testConfig(t))
	sc := streamInfo(t, q, q.Config().Stream).Config
	sc.MaxMsgSize = 4 << 10
	if _, err := q.JetStream().UpdateStream(ctxT(t), sc); err != nil {
		t.Fatal(err)
	}
	out := flushNow(q, testMessage("t-1", 100), testMessage("t-big", 8<<10), testMessage("t-2", 100))
	if out[0].err != nil || out[2].err != nil {
		t.Errorf("neighbours of a too-large message: %+v", out)
	}
	if !errors.Is(out[1].err, ErrTooLarge) {
		t.Errorf("too-large message in a batch: %+v", out[1])
	}
	if got := storedIDs(t, q, q.Config().Stream); len(got) != 2 {
		t.Errorf("stream holds %v", got)
	}
}

// TestPublishConcurrentSharedIDsAtLimit: 50 concurrent publishers, some
// sharing IDs, some retransmitting queued mail, into a stream with room for
// only some. Each caller gets the right answer for its own message and the
// stream holds exactly the accepted ones, once each.
func TestPublishConcurrentSharedIDsAtLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 25
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	pre := ids("pre", 5)
	for _, id := range pre {
		if _, err := q.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
	}
	// Goroutines 0-4 retransmit queued mail; 5-49 publish 35 new IDs, ten
	// of them twice. Room: 20 of the 35.
	idOf := func(i int) string {
		if i < 5 {
			return pre[i]
		}
		return fmt.Sprintf("new-%d", (i-5)%35)
	}
	type answer struct {
		id  string
		res PublishResult
		err error
	}
	answers := make([]answer, 50)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := q.Publish(ctx, testMessage(idOf(i), 200))
			answers[i] = answer{idOf(i), res, err}
		}()
	}
	close(start)
	wg.Wait()

	t.Logf("commits: %d, fallbacks: duplicate %v, full %v", testutil.CollectAndCount(q.metrics.batchSize),
		testutil.ToFloat64(q.metrics.fallbacks.WithLabelValues("duplicate")), testutil.ToFloat64(q.metrics.fallbacks.WithLabelValues("full")))
	stored := storedIDs(t, q, cfg.Stream)
	if len(stored) != 25 {
		t.Errorf("stream holds %d messages, want it filled to 25", len(stored))
	}
	firsts := map[string]int{}
	okIDs := map[string]bool{}
	for i, a := range answers {
		switch {
		case a.err == nil:
			okIDs[a.id] = true
			if !a.res.Duplicate {
				firsts[a.id]++
			}
		case !errors.Is(a.err, ErrQueueFull):
			t.Errorf("publisher %d (%s): unexpected %v", i, a.id, a.err)
		}
		if i < 5 && (a.err != nil || !a.res.Duplicate) {
			t.Errorf("retransmission of queued %s = %+v %v, want duplicate", a.id, a.res, a.err)
		}
	}
	for _, a := range answers {
		// Room only shrinks: once one publisher of an ID was told full, no
		// later one can have stored it, and a stored ID answers duplicate.
		if errors.Is(a.err, ErrQueueFull) && okIDs[a.id] {
			t.Errorf("%s: one caller got full, another got it stored", a.id)
		}
	}
	for id, n := range stored {
		if n != 1 {
			t.Errorf("%s stored %d times", id, n)
		}
		if !okIDs[id] && !contains(pre, id) {
			t.Errorf("%s stored but every publisher was refused", id)
		}
	}
	for id := range okIDs {
		if stored[id] != 1 {
			t.Errorf("%s acknowledged but not stored", id)
		}
		if firsts[id] > 1 {
			t.Errorf("%s acknowledged as new %d times", id, firsts[id])
		}
		if !contains(pre, id) && firsts[id] != 1 {
			t.Errorf("%s acknowledged only as a duplicate", id)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestPublishServerDownAndBack: with the server gone, Publish answers
// ErrUnavailable within PublishTimeout instead of hanging; a server started
// on the same directory and port brings publishing back with nothing lost.
func TestPublishServerDownAndBack(t *testing.T) {
	cfg := testConfig(t)
	cfg.PublishTimeout = 2 * time.Second
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	acked := map[string]bool{}
	for _, id := range ids("before", 20) {
		if _, err := q.Publish(ctx, testMessage(id, 1000)); err != nil {
			t.Fatal(err)
		}
		acked[id] = true
	}

	// Publishers running while the server goes away: each returns, in time.
	var wg sync.WaitGroup
	var mu sync.Mutex
	stop := make(chan struct{})
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("during-%d-%d", g, i)
				t0 := time.Now()
				_, err := q.Publish(ctx, testMessage(id, 1000))
				if el := time.Since(t0); el > cfg.PublishTimeout+time.Second {
					t.Errorf("publish took %s, PublishTimeout is %s", el, cfg.PublishTimeout)
				}
				switch {
				case err == nil:
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				case !errors.Is(err, ErrUnavailable):
					t.Errorf("publish while going down: %v", err)
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // let some publishes be in flight
	port := q.Server().Port()
	q.Server().Shutdown()
	t0 := time.Now()
	_, err := q.Publish(ctx, testMessage("while-down", 1000))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("publish with the server down = %v, want ErrUnavailable", err)
	}
	if el := time.Since(t0); el > cfg.PublishTimeout+time.Second {
		t.Fatalf("publish with the server down took %s", el)
	}
	close(stop)
	wg.Wait()

	srv, err := natsserver.Start(natsserver.Config{DataDir: cfg.DataDir, Port: port, SyncAlways: true,
		MaxPayload: cfg.MaxMsgSize + headerRoom, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	waitFor(t, "publishing to work again", func() bool {
		_, err := q.Publish(ctx, testMessage("after", 1000))
		return err == nil
	})
	acked["after"] = true
	stored := storedIDs(t, q, cfg.Stream)
	for id := range acked {
		if stored[id] != 1 {
			t.Errorf("acknowledged %s stored %d times after restart", id, stored[id])
		}
	}
	// The consumer survived the restart too.
	if _, err := q.Consumer(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestPublishTimesOutWithUnresponsiveStream(t *testing.T) {
	// A stream that does not answer (deleted underneath us: no responders)
	// must give ErrUnavailable, not a hang or a wrong class.
	cfg := testConfig(t)
	cfg.PublishTimeout = time.Second
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	if err := q.JetStream().DeleteStream(ctx, cfg.Stream); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			_, err := q.Publish(ctx, testMessage(fmt.Sprintf("nostream-%d", i), 100))
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("publish without a stream = %v, want ErrUnavailable", err)
			}
			if el := time.Since(t0); el > cfg.PublishTimeout+time.Second {
				t.Errorf("took %s", el)
			}
		}()
	}
	wg.Wait()
}

// TestAtomicPublishTurnedOffUnderneath: an operator (or an older tool)
// updates the stream without AllowAtomicPublish. The batch fails (10174),
// every message still gets stored through the fallback, and the queue
// stops batching.
func TestAtomicPublishTurnedOffUnderneath(t *testing.T) {
	cfg := testConfig(t)
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	sc := cfg.streamConfig()
	sc.AllowAtomicPublish = false
	if _, err := q.JetStream().UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	out := flushNow(q, testMessage("a-1", 100), testMessage("a-2", 100), testMessage("a-3", 100))
	for i, o := range out {
		if o.err != nil || o.res.Duplicate {
			t.Errorf("message %d: %+v", i, o)
		}
	}
	if q.lanes[0].batching {
		t.Error("still batching after the stream refused atomic publish")
	}
	if got := storedIDs(t, q, cfg.Stream); len(got) != 3 {
		t.Errorf("stream holds %v", got)
	}
	if _, err := q.Publish(ctx, testMessage("a-4", 100)); err != nil {
		t.Errorf("publish after batching was turned off: %v", err)
	}
}
