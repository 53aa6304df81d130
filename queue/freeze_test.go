package queue

import (
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// freezeAndDie freezes intake the way a per-domain cap change does, and
// leaves it, as a process that died right after would. at backdates the
// freeze mark.
func freezeAndDie(t *testing.T, q *Queue, at time.Time) jetstream.StreamConfig {
	t.Helper()
	real := withoutFreeze(streamInfo(t, q, q.Config().Stream)).Config
	if _, err := q.Admin().freezeIntake(ctxT(t), real); err != nil {
		t.Fatal(err)
	}
	if !at.IsZero() {
		fc := streamInfo(t, q, q.Config().Stream).Config
		fc.Metadata = maps.Clone(fc.Metadata)
		fc.Metadata[metaFrozenAt] = at.UTC().Format(time.RFC3339Nano)
		if _, err := q.JetStream().UpdateStream(ctxT(t), fc); err != nil {
			t.Fatal(err)
		}
	}
	if got := streamInfo(t, q, q.Config().Stream).Config.MaxMsgs; got != 1 {
		t.Fatalf("frozen max_msgs %d, want 1", got)
	}
	return real
}

func assertUnfrozen(t *testing.T, sc jetstream.StreamConfig, wantMaxMsgs int64) {
	t.Helper()
	if _, frozen := frozenSince(sc); frozen || sc.MaxMsgs != wantMaxMsgs {
		t.Errorf("max_msgs %d (want %d), freeze marks %v", sc.MaxMsgs, wantMaxMsgs, sc.Metadata)
	}
}

// TestAFreezeIsNeverMadePermanent: a limit change or a start that reads the
// stream while it is frozen builds on the real max_msgs, so the moment's
// max_msgs 1 never outlives the change that set it, even when that
// change's process died.
func TestAFreezeIsNeverMadePermanent(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 500
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	if _, err := q.Publish(ctx, messageTo("before", "x@one.test")); err != nil {
		t.Fatal(err)
	}

	freezeAndDie(t, q, time.Time{})
	if _, err := q.Publish(ctx, messageTo("frozen", "x@one.test")); !errors.Is(err, ErrQueueFull) {
		t.Errorf("publish while frozen: %v, want ErrQueueFull", err)
	}
	other, err := NewAdmin(q.Conn(), cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	u, err := other.UpdateLimits(ctx, Limits{MaxBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if u.Limits.MaxMsgs != 500 || u.Limits.MaxBytes != 32<<20 {
		t.Errorf("a change made while frozen: %+v, want max_msgs 500 kept", u.Limits)
	}
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, 500)

	// A start with the same config keeps live limits: the real ones.
	freezeAndDie(t, q, time.Time{})
	ext := cfg
	ext.URL = q.Server().ClientURL()
	starting, err := Open(ctx, ext, nil, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer starting.Close(ctx)
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, 500)
	if _, err := q.Publish(ctx, messageTo("after", "x@one.test")); err != nil {
		t.Errorf("publish after the start: %v", err)
	}
}

// TestStaleFreezeIsLiftedByRunningProcesses: nobody starts or changes
// limits after a freeze's maker died: a running process's monitor lifts
// it once it is stale, and a fresh one it leaves alone.
func TestStaleFreezeIsLiftedByRunningProcesses(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 500
	q := openQueue(t, cfg)
	freezeAndDie(t, q, time.Now())
	time.Sleep(3 * monitorInterval)
	if got := streamInfo(t, q, cfg.Stream).Config.MaxMsgs; got != 1 {
		t.Fatalf("a fresh freeze was lifted: max_msgs %d", got)
	}
	freezeAndDie(t, q, time.Now().Add(-2*freezeStale))
	waitFor(t, "the stale freeze lifted", func() bool {
		_, frozen := frozenSince(streamInfo(t, q, cfg.Stream).Config)
		return !frozen
	})
	assertUnfrozen(t, streamInfo(t, q, cfg.Stream).Config, 500)
}
