package admin

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/fleet"
	"github.com/levee-mail/levee/queue/queuetest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// freezeAndDie freezes intake the way a per-domain cap change does and
// leaves it, as a process that died right after would. It returns the
// freeze's token.
func freezeAndDie(t *testing.T, q *queue.Queue) string {
	t.Helper()
	olds := layoutOf(t, q)
	frozen, token, err := adminOf(t, q).freezeIntake(ctxT(t), olds)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range frozen {
		if f.Config.MaxMsgs != olds[i].info.Config.MaxMsgs {
			t.Fatalf("freezeIntake returned the frozen config (max_msgs %d), want the real one", f.Config.MaxMsgs)
		}
		// Read it back at once: a monitor could lift a stale freeze later.
		if sc := streamInfo(t, q, olds[i].p.Stream).Config; sc.MaxMsgs != 1 {
			t.Fatalf("%s: frozen max_msgs %d, want 1", olds[i].p.Stream, sc.MaxMsgs)
		}
	}
	return token
}

// layoutOf is the queue's layout as UpdateLimits reads it, without freezes.
func layoutOf(t *testing.T, q *queue.Queue) []mailStream {
	t.Helper()
	olds, _, err := adminOf(t, q).readLayoutAsIs(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return olds
}

// backdate moves the freeze marks' time back by d, as if they were that old.
func backdate(t *testing.T, q *queue.Queue, d time.Duration) {
	t.Helper()
	for _, p := range q.Config().Layout() {
		backdateStream(t, q, p.Stream, d)
	}
}

func backdateStream(t *testing.T, q *queue.Queue, stream string, d time.Duration) {
	t.Helper()
	sc := streamInfo(t, q, stream).Config
	m, ok := freezeOf(sc)
	if !ok {
		t.Fatal("not frozen")
	}
	m.At = m.At.Add(-d)
	v, _ := json.Marshal(m)
	sc.Metadata = maps.Clone(sc.Metadata)
	sc.Metadata[metaFreeze] = string(v)
	if _, err := q.JetStream().UpdateStream(ctxT(t), sc); err != nil {
		t.Fatal(err)
	}
}

func assertUnfrozen(t *testing.T, sc jetstream.StreamConfig, wantMaxMsgs int64) {
	t.Helper()
	if _, frozen := freezeOf(sc); frozen || sc.MaxMsgs != wantMaxMsgs {
		t.Errorf("max_msgs %d (want %d), metadata %v", sc.MaxMsgs, wantMaxMsgs, sc.Metadata)
	}
}

// TestAFreezeIsALock: another process's limit change waits for a fresh
// freeze and then gives up (ErrBusy) rather than lift it under its maker;
// a start leaves it alone; a stale freeze (its maker died) is read through
// and lifted by the next change, never made permanent; a maker whose
// freeze was lifted under it applies nothing.
func TestAFreezeIsALock(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 500
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	if _, err := q.Publish(ctx, messageTo("before", "x@one.test")); err != nil {
		t.Fatal(err)
	}
	other, err := New(q.Conn(), Config{Queue: cfg, Configured: true, Log: queuetest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}

	token := freezeAndDie(t, q)
	if _, err := q.Publish(ctx, messageTo("frozen", "x@one.test")); !errors.Is(err, queue.ErrQueueFull) {
		t.Errorf("publish while frozen: %v, want ErrQueueFull", err)
	}
	if lim, err := other.Limits(ctx); err != nil || lim.MaxMsgs != 500 {
		t.Errorf("limits while frozen: %+v %v; want the real max_msgs 500", lim, err)
	}
	if st, err := other.Status(ctx); err != nil || st.Limits.MaxMsgs != 500 || st.Fill.Messages != 1.0/500 {
		t.Errorf("status while frozen: limits %+v fill %+v %v; want the real max_msgs", st.Limits, st.Fill, err)
	}
	if _, err := other.UpdateLimits(ctx, LimitsChange{MaxBytes: 32 << 20}); !errors.Is(err, ErrBusy) {
		t.Errorf("a change while another's freeze is fresh: %v, want ErrBusy", err)
	}
	if sc := streamInfo(t, q, cfg.Stream).Config; sc.MaxMsgs != 1 || sc.MaxBytes == 32<<20 {
		t.Errorf("the refused change changed the stream: max_msgs %d max_bytes %d", sc.MaxMsgs, sc.MaxBytes)
	}

	// A start, with another config at that, neither waits nor touches it.
	ext := cfg
	ext.URL, ext.MaxMsgs, ext.DuplicateWindow = q.Server().ClientURL(), 900, time.Minute
	openQueue(t, ext)
	if sc := streamInfo(t, q, cfg.Stream).Config; sc.MaxMsgs != 1 || sc.Duplicates == time.Minute || sc.Metadata[metaFreeze] == "" {
		t.Errorf("a start changed a frozen stream: %+v", sc)
	}
	adminOf(t, q).unfreezeIntake(token, layoutOf(t, q)) // the maker's change did not apply
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, 500)

	// A stale freeze is read through: the next change lifts it.
	freezeAndDie(t, q)
	backdate(t, q, 2*freezeStale)
	u, err := other.UpdateLimits(ctx, LimitsChange{MaxBytes: 32 << 20})
	if err != nil || u.Limits.MaxMsgs != 500 || u.Limits.MaxBytes != 32<<20 {
		t.Fatalf("a change over a stale freeze: %+v %v; want max_msgs 500 kept", u.Limits, err)
	}
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, 500)

	// A maker whose freeze somebody lifted must not apply its change.
	token = freezeAndDie(t, q)
	backdate(t, q, 2*freezeStale)
	if _, err := other.UpdateLimits(ctx, LimitsChange{MaxMsgs: 600}); err != nil {
		t.Fatal(err)
	}
	if err := adminOf(t, q).confirmFreeze(ctx, layoutOf(t, q), token); !errors.Is(err, ErrBusy) {
		t.Errorf("confirm a freeze that was lifted: %v, want ErrBusy", err)
	}
	adminOf(t, q).unfreezeIntake(token, layoutOf(t, q))
	if sc := streamInfo(t, q, cfg.Stream).Config; sc.MaxMsgs != 600 {
		t.Errorf("the maker's unfreeze undid the later change: max_msgs %d, want 600", sc.MaxMsgs)
	}
	if _, err := q.Publish(ctx, messageTo("after", "x@one.test")); err != nil {
		t.Errorf("publish after all that: %v", err)
	}
}

// TestStaleFreezeIsLiftedByRunningProcesses: nobody changes limits after a
// freeze's maker died: a running process (Run, as every Levee runs it)
// lifts it once it has seen it for freezeStale, and not before.
func TestStaleFreezeIsLiftedByRunningProcesses(t *testing.T) {
	// Set before Run starts, restored after it stopped (cleanups run last
	// first).
	was := freezeStale
	t.Cleanup(func() { freezeStale = was })
	freezeStale = 2 * time.Second
	cfg := testConfig(t)
	cfg.MaxMsgs = 500
	q := openQueue(t, cfg)
	running, err := New(q.Conn(), Config{Queue: cfg, Log: queuetest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); running.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	frozenAt := time.Now()
	freezeAndDie(t, q)
	waitFor(t, "the stale freeze lifted", func() bool {
		_, frozen := freezeOf(streamInfo(t, q, cfg.Stream).Config)
		return !frozen
	})
	if held := time.Since(frozenAt); held < freezeStale {
		t.Errorf("the freeze was lifted after %s, before it was stale (%s)", held, freezeStale)
	}
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, 500)
}

// TestUnreadableStatsAnswerGivesNoSIZEVerdict: an answer on the stats
// subject that is not a process's stats may hide a receiver: a live lowering
// of max_msg_size is refused (unless forced).
func TestUnreadableStatsAnswerGivesNoSIZEVerdict(t *testing.T) {
	cfg := testConfig(t)
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	answerStats(t, q, []byte("not json"))
	if _, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgSize: 1 << 20}); err == nil || !strings.Contains(err.Error(), "could not tell every receiver's SIZE") {
		t.Errorf("live lowering with an unreadable answer: %v", err)
	}
	if sc := streamInfo(t, q, cfg.Stream).Config; sc.MaxMsgSize != cfg.MaxMsgSize {
		t.Errorf("a refused change changed max_msg_size to %d", sc.MaxMsgSize)
	}
	u, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgSize: 1 << 20, Force: true})
	if err != nil || u.Limits.MaxMsgSize != 1<<20 || len(u.Notes) == 0 || !strings.Contains(u.Notes[0], "FORCED") {
		t.Errorf("forced: %+v %v", u, err)
	}
}

// answerStats answers stats requests on q's stats subject with answer, as
// another process would, on its own connection, until stop (or the test's
// end).
func answerStats(t *testing.T, q *queue.Queue, answer []byte) (stop func()) {
	t.Helper()
	nc, err := nats.Connect(q.Server().ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.Subscribe(fleet.Subject(q.Config().Stream), func(m *nats.Msg) { _ = m.Respond(answer) })
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		// Flushed: the server has dropped the subscription on return.
		if err := sub.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAFreezeLeftLongAgoIsLiftedAtOnce: a process that starts after a
// limit change died half-way, long ago by the server's clock, lifts the
// freeze as soon as it runs, not freezeStale later: until then every
// sender gets 452.
func TestAFreezeLeftLongAgoIsLiftedAtOnce(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 500
	q := openQueue(t, cfg)
	freezeAndDie(t, q)
	backdate(t, q, time.Hour)
	started, err := New(q.Conn(), Config{Queue: cfg, Log: queuetest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); started.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	begin := time.Now()
	waitFor(t, "the old freeze lifted", func() bool {
		_, frozen := freezeOf(streamInfo(t, q, cfg.Stream).Config)
		return !frozen
	})
	if took := time.Since(begin); took > freezeStale/2 {
		t.Errorf("a freeze an hour old was lifted after %s; want at once", took)
	}
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, 500)
}
