package queue

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// freezeAndDie freezes intake the way a per-domain cap change does and
// leaves it, as a process that died right after would. It returns the
// freeze's token.
func freezeAndDie(t *testing.T, q *Queue) string {
	t.Helper()
	info := withoutFreezeOf(t, q)
	frozen, token, err := q.Admin().freezeIntake(ctxT(t), info)
	if err != nil {
		t.Fatal(err)
	}
	if frozen.Config.MaxMsgs != info.Config.MaxMsgs {
		t.Fatalf("freezeIntake returned the frozen config (max_msgs %d), want the real one", frozen.Config.MaxMsgs)
	}
	// Read it back at once: a monitor could lift a stale freeze later.
	if sc := streamInfo(t, q, q.Config().Stream).Config; sc.MaxMsgs != 1 {
		t.Fatalf("frozen max_msgs %d, want 1", sc.MaxMsgs)
	}
	return token
}

// backdate moves the freeze mark's time back by d, as if it were that old.
func backdate(t *testing.T, q *Queue, d time.Duration) {
	t.Helper()
	sc := streamInfo(t, q, q.Config().Stream).Config
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
// a start waits until the maker is done; a stale freeze (its maker died) is
// read through and lifted by the next change, never made permanent; a
// maker whose freeze was lifted under it applies nothing.
func TestAFreezeIsALock(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 500
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	if _, err := q.Publish(ctx, messageTo("before", "x@one.test")); err != nil {
		t.Fatal(err)
	}
	other, err := NewAdmin(q.Conn(), cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}

	token := freezeAndDie(t, q)
	if _, err := q.Publish(ctx, messageTo("frozen", "x@one.test")); !errors.Is(err, ErrQueueFull) {
		t.Errorf("publish while frozen: %v, want ErrQueueFull", err)
	}
	if lim, err := other.Limits(ctx); err != nil || lim.MaxMsgs != 500 {
		t.Errorf("limits while frozen: %+v %v; want the real max_msgs 500", lim, err)
	}
	if st, err := q.Status(ctx); err != nil || st.Limits.MaxMsgs != 500 || st.Fill.Messages != 1.0/500 {
		t.Errorf("status while frozen: limits %+v fill %+v %v; want the real max_msgs", st.Limits, st.Fill, err)
	}
	if _, err := other.UpdateLimits(ctx, Limits{MaxBytes: 32 << 20}); !errors.Is(err, ErrBusy) {
		t.Errorf("a change while another's freeze is fresh: %v, want ErrBusy", err)
	}
	if sc := streamInfo(t, q, cfg.Stream).Config; sc.MaxMsgs != 1 || sc.MaxBytes == 32<<20 {
		t.Errorf("the refused change changed the stream: max_msgs %d max_bytes %d", sc.MaxMsgs, sc.MaxBytes)
	}

	// A start waits for the maker to finish.
	ext := cfg
	ext.URL = q.Server().ClientURL()
	started := make(chan error, 1)
	go func() {
		s, err := Open(ctx, ext, nil, testLog(t))
		if err == nil {
			s.Close(context.Background())
		}
		started <- err
	}()
	select {
	case err := <-started:
		t.Fatalf("a start went through another's fresh freeze: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	q.Admin().unfreezeIntake(token, withoutFreezeOf(t, q).Config) // the maker's change did not apply
	if err := <-started; err != nil {
		t.Fatalf("start after the freeze was lifted: %v", err)
	}
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, 500)

	// A stale freeze is read through: the next change lifts it.
	freezeAndDie(t, q)
	backdate(t, q, 2*freezeStale)
	u, err := other.UpdateLimits(ctx, Limits{MaxBytes: 32 << 20})
	if err != nil || u.Limits.MaxMsgs != 500 || u.Limits.MaxBytes != 32<<20 {
		t.Fatalf("a change over a stale freeze: %+v %v; want max_msgs 500 kept", u.Limits, err)
	}
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, 500)

	// A maker whose freeze somebody lifted must not apply its change.
	token = freezeAndDie(t, q)
	backdate(t, q, 2*freezeStale)
	if _, err := other.UpdateLimits(ctx, Limits{MaxMsgs: 600}); err != nil {
		t.Fatal(err)
	}
	if err := q.Admin().confirmFreeze(ctx, token); !errors.Is(err, ErrBusy) {
		t.Errorf("confirm a freeze that was lifted: %v, want ErrBusy", err)
	}
	q.Admin().unfreezeIntake(token, withoutFreezeOf(t, q).Config)
	if sc := streamInfo(t, q, cfg.Stream).Config; sc.MaxMsgs != 600 {
		t.Errorf("the maker's unfreeze undid the later change: max_msgs %d, want 600", sc.MaxMsgs)
	}
	if _, err := q.Publish(ctx, messageTo("after", "x@one.test")); err != nil {
		t.Errorf("publish after all that: %v", err)
	}
}

func withoutFreezeOf(t *testing.T, q *Queue) *jetstream.StreamInfo {
	return q.Admin().withoutFreeze(streamInfo(t, q, q.Config().Stream))
}

// TestStaleFreezeIsLiftedByRunningProcesses: nobody starts or changes
// limits after a freeze's maker died: a running process's monitor lifts
// it once it has seen it for freezeStale, and not before.
func TestStaleFreezeIsLiftedByRunningProcesses(t *testing.T) {
	// Set before the queue's monitor starts, restored after it stopped
	// (cleanups run last first).
	was := freezeStale
	t.Cleanup(func() { freezeStale = was })
	freezeStale = 2 * time.Second
	cfg := testConfig(t)
	cfg.MaxMsgs = 500
	q := openQueue(t, cfg)
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

// TestStartWithholdsAMaxMsgSizeThatWouldBounce: a start's config may lower
// max_msg_size below what other, running receivers accept; it keeps the
// stream's until they are gone, unless an operator set one live meanwhile.
func TestStartWithholdsAMaxMsgSizeThatWouldBounce(t *testing.T) {
	cfg := testConfig(t)
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	// A receiver elsewhere with SIZE 1MiB.
	var stop func()
	receiverUp := func(up bool) {
		t.Helper()
		if !up {
			stop()
			return
		}
		b, _ := json.Marshal(ProcessStats{Instance: "old-smtpd", SMTP: &SMTPStats{MaxMessageBytes: 1 << 20}})
		stop = answerStats(t, q, b)
	}
	startWith := func(maxMsgSize int32) jetstream.StreamConfig {
		t.Helper()
		c := cfg
		c.URL, c.MaxMsgSize = q.Server().ClientURL(), maxMsgSize
		s, err := Open(ctx, c, nil, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close(ctx)
		return streamInfo(t, s, cfg.Stream).Config
	}
	withheld := func(sc jetstream.StreamConfig) bool {
		return slices.Contains(strings.Split(sc.Metadata[metaWithheldLimits], ","), limitMaxMsgSize)
	}

	receiverUp(true)
	if sc := startWith(512 << 10); sc.MaxMsgSize != cfg.MaxMsgSize || !withheld(sc) {
		t.Fatalf("with a receiver of SIZE 1MiB running: max_msg_size %d, withheld %q", sc.MaxMsgSize, sc.Metadata[metaWithheldLimits])
	}
	receiverUp(false)
	if sc := startWith(512 << 10); sc.MaxMsgSize != 512<<10 || withheld(sc) {
		t.Errorf("with that receiver gone: max_msg_size %d, withheld %q; want 512KiB applied", sc.MaxMsgSize, sc.Metadata[metaWithheldLimits])
	}

	// Withheld again, then set live: a later start keeps the live value.
	receiverUp(true)
	if sc := startWith(384 << 10); !withheld(sc) {
		t.Fatalf("a second lowering with the receiver running was not withheld: %+v", sc.Metadata)
	}
	if _, err := q.UpdateLimits(ctx, Limits{MaxMsgSize: 256 << 10, Force: true}); err != nil {
		t.Fatal(err)
	}
	receiverUp(false)
	if sc := startWith(384 << 10); sc.MaxMsgSize != 256<<10 || withheld(sc) {
		t.Errorf("a start after a live change: max_msg_size %d, withheld %q; want the live 256KiB kept", sc.MaxMsgSize, sc.Metadata[metaWithheldLimits])
	}
}

// TestAFailedStartLeavesNoFreeze: a start that froze intake to lower the
// per-domain cap and then had its update refused lifts its freeze, so the
// next start (and the mail) can go on.
func TestAFailedStartLeavesNoFreeze(t *testing.T) {
	cfg := testConfig(t)
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	if _, err := q.Publish(ctx, messageTo("m", "x@one.test")); err != nil {
		t.Fatal(err)
	}
	bad := cfg
	bad.URL, bad.PerDomainMaxMsgs, bad.MaxBytes = q.Server().ClientURL(), 10, 1<<50 // more than the server has
	if s, err := Open(ctx, bad, nil, testLog(t)); err == nil {
		s.Close(ctx)
		t.Fatal("a start with max_bytes of 1PiB succeeded")
	}
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, cfg.MaxMsgs)
	good := bad
	good.MaxBytes = cfg.MaxBytes
	s, err := Open(ctx, good, nil, testLog(t))
	if err != nil {
		t.Fatalf("the start after: %v", err)
	}
	defer s.Close(ctx)
	if sc := streamInfo(t, q, cfg.Stream).Config; sc.MaxMsgsPerSubject != 10 {
		t.Errorf("per-domain cap %d, want 10", sc.MaxMsgsPerSubject)
	}
	if _, err := q.Publish(ctx, messageTo("after", "x@one.test")); err != nil {
		t.Errorf("publish after: %v", err)
	}
}

// TestUnreadableStatsAnswerGivesNoSIZEVerdict: an answer on the stats
// subject that is not a process's stats may hide a receiver: a live lowering
// of max_msg_size is refused (unless forced) and a start keeps the stream's.
func TestUnreadableStatsAnswerGivesNoSIZEVerdict(t *testing.T) {
	cfg := testConfig(t)
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	answerStats(t, q, []byte("not json"))
	if _, err := q.UpdateLimits(ctx, Limits{MaxMsgSize: 1 << 20}); err == nil || !strings.Contains(err.Error(), "could not tell every receiver's SIZE") {
		t.Errorf("live lowering with an unreadable answer: %v", err)
	}
	c := cfg
	c.URL, c.MaxMsgSize = q.Server().ClientURL(), 512<<10
	s, err := Open(ctx, c, nil, testLog(t))
	if err != nil {
		t.Fatalf("a start with an unreadable answer about: %v", err)
	}
	defer s.Close(ctx)
	if sc := streamInfo(t, q, cfg.Stream).Config; sc.MaxMsgSize != cfg.MaxMsgSize || !strings.Contains(sc.Metadata[metaWithheldLimits], limitMaxMsgSize) {
		t.Errorf("start: max_msg_size %d, withheld %q; want the stream's kept", sc.MaxMsgSize, sc.Metadata[metaWithheldLimits])
	}
	u, err := q.UpdateLimits(ctx, Limits{MaxMsgSize: 1 << 20, Force: true})
	if err != nil || u.Limits.MaxMsgSize != 1<<20 || len(u.Notes) == 0 || !strings.Contains(u.Notes[0], "FORCED") {
		t.Errorf("forced: %+v %v", u, err)
	}
}

// answerStats answers stats requests on q's stats subject with answer, as
// another process would, on its own connection, until stop (or the test's
// end).
func answerStats(t *testing.T, q *Queue, answer []byte) (stop func()) {
	t.Helper()
	nc, err := nats.Connect(q.Server().ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.Subscribe(StatsSubject(q.Config().Stream), func(m *nats.Msg) { _ = m.Respond(answer) })
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
