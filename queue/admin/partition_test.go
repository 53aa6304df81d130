package admin

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/queuetest"
)

// partitioned is a queue of three partitions with limits that divide
// unevenly, so that the shares show.
func partitioned(t *testing.T) (*queue.Queue, queue.Config) {
	cfg := testConfig(t)
	cfg.Partitions = 3
	cfg.MaxMsgs = 1000
	cfg.PerDomainMaxMsgs = 100
	cfg.DuplicateWindow = time.Second
	return openQueue(t, cfg), cfg
}

// TestAPartitionedQueueIsOneQueueToTheOperator: the status adds the
// partitions up and lists each, the top domains count a domain over all of
// them, and the limits are the configured totals, live and after a change,
// which each partition gets its share of.
func TestAPartitionedQueueIsOneQueueToTheOperator(t *testing.T) {
	q, cfg := partitioned(t)
	ctx := ctxT(t)
	for i, id := range ids("p", 40) {
		rcpt := "x@flood.test"
		if i%4 == 0 {
			rcpt = "y@calm.test"
		}
		if _, err := q.Publish(ctx, messageTo(id, rcpt)); err != nil {
			t.Fatal(err)
		}
	}
	a := adminOf(t, q)
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 40 || len(st.Partitions) != 3 || st.Limits.MaxMsgs != 1000 || st.Limits.PerDomainMaxMsgs != 100 {
		t.Fatalf("status: %d messages, %d partitions, limits %+v", st.Messages, len(st.Partitions), st.Limits)
	}
	var sum uint64
	for _, p := range st.Partitions {
		sum += p.Messages
		if p.Messages == 0 || p.Draining {
			t.Errorf("partition %+v", p)
		}
	}
	if sum != 40 || len(st.TopDomains) != 2 || st.TopDomains[0] != (DomainCount{"flood.test", 30}) || st.TopDomains[1] != (DomainCount{"calm.test", 10}) {
		t.Errorf("partitions add up to %d; top domains %+v", sum, st.TopDomains)
	}
	if st.Consumer.NumPending != 40 {
		t.Errorf("consumer pending %d, want 40", st.Consumer.NumPending)
	}
	// One sequence range for the whole queue: 40 accepted, 40 queued.
	if st.FirstSeq != 1 || st.LastSeq != 40 {
		t.Errorf("sequence range %d..%d, want 1..40", st.FirstSeq, st.LastSeq)
	}
	r, err := a.Limits(ctx)
	if err != nil || r.MaxMsgs != 1000 || r.PerDomainMaxMsgs != 100 || len(r.Drift) != 0 {
		t.Fatalf("Limits = %+v, %v; want the configured totals and no drift", r, err)
	}
	u, err := a.UpdateLimits(ctx, LimitsChange{MaxMsgs: 2000, PerDomainMaxMsgs: 200, MaxAge: time.Hour})
	if err != nil || u.Limits.MaxMsgs != 2000 || u.Limits.PerDomainMaxMsgs != 200 || u.Limits.MaxAge != time.Hour {
		t.Fatalf("UpdateLimits = %+v, %v", u, err)
	}
	var msgs, perDomain int64
	for _, p := range cfg.Layout() {
		sc := streamInfo(t, q, p.Stream).Config
		msgs += sc.MaxMsgs
		perDomain += sc.MaxMsgsPerSubject
		if sc.MaxAge != time.Hour || sc.MaxMsgs < 666 || sc.MaxMsgs > 667 {
			t.Errorf("%s: max_msgs %d max_age %s, want a third of 2000 and the whole hour", p.Stream, sc.MaxMsgs, sc.MaxAge)
		}
	}
	if msgs != 2000 || perDomain != 200 {
		t.Errorf("the partitions' limits add up to %d and %d, want 2000 and 200", msgs, perDomain)
	}
	if r, err := a.Limits(ctx); err != nil || r.MaxMsgs != 2000 || len(r.Drift) != 3 {
		t.Errorf("Limits after the change = %+v, %v; want 2000 and drift in max_msgs, max_age and per_domain_max_msgs", r, err)
	}
	// A per-domain cap a partition's share of a domain is over: refused,
	// nothing changed.
	if _, err := a.UpdateLimits(ctx, LimitsChange{PerDomainMaxMsgs: 6}); !errors.Is(err, ErrWouldDelete) {
		t.Errorf("a cap of 6 (2 a partition) under 30 flood.test messages: %v, want ErrWouldDelete", err)
	}
	if n := queued(t, q); n != 40 {
		t.Errorf("%d messages queued after the refused change, want 40", n)
	}
	// max_bytes whose share per partition is below max_msg_size: a message
	// at the size limit would never fit its partition. Refused.
	size := int64(streamInfo(t, q, cfg.Layout()[0].Stream).Config.MaxMsgSize)
	if _, err := a.UpdateLimits(ctx, LimitsChange{MaxBytes: 2 * size}); !errors.Is(err, ErrInvalidLimit) || !strings.Contains(err.Error(), "share") {
		t.Errorf("max_bytes %d over 3 partitions with max_msg_size %d: %v, want ErrInvalidLimit", 2*size, size, err)
	}
	// The CLI straight through JetStream knows no partition count: it
	// takes the mail streams there are.
	names, err := New(q.Conn(), Config{Queue: queue.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := names.Limits(ctx); err != nil || r.MaxMsgs != 2000 {
		t.Errorf("Limits through JetStream = %+v, %v; want 2000", r, err)
	}
	if st, err := names.Status(ctx); err != nil || st.Messages != 40 || len(st.Partitions) != 3 {
		t.Errorf("Status through JetStream: %+v, %v", st, err)
	}
}

// TestReplayGoesBackToTheMessagesPartition: a replayed dead letter goes to
// the partition its id belongs to, and the workers get it once.
func TestReplayGoesBackToTheMessagesPartition(t *testing.T) {
	q, cfg := partitioned(t)
	ctx := ctxT(t)
	want := map[string]bool{}
	for _, id := range ids("r", 12) {
		if _, err := q.Publish(ctx, testMessage(id, 300)); err != nil {
			t.Fatal(err)
		}
		want[id] = true
	}
	deadLetterAll(t, q, 12, func(queue.Delivery) string { return "poison" })
	waitFor(t, "the mail streams empty", func() bool { return queued(t, q) == 0 })
	a := adminOf(t, q)
	if n, err := a.ReplayAll(ctx); err != nil || n != 12 {
		t.Fatalf("ReplayAll = %d, %v", n, err)
	}
	for _, p := range cfg.Layout() {
		for msgID := range queuetest.StoredIDs(t, q, p.Stream) {
			// A replay's Nats-Msg-Id is replay:<dead stream>:<seq>:<id>.
			id := msgID[strings.LastIndex(msgID, ":")+1:]
			if got := cfg.Route(id).Stream; got != p.Stream {
				t.Errorf("%s replayed to %s, its partition is %s", id, p.Stream, got)
			}
		}
	}
	got := map[string]int{}
	for len(got) < 12 {
		ds := fetch(t, q, 12)
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			m, err := d.Message()
			if err != nil {
				t.Fatal(err)
			}
			got[m.ID]++
			_ = d.Ack()
		}
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("%s delivered %d times after the replay", id, got[id])
		}
	}
}

// TestAFreezeCoversEveryPartition: another change meets a fresh freeze on
// any partition and waits (ErrBusy); a running process lifts a stale one
// from each partition.
func TestAFreezeCoversEveryPartition(t *testing.T) {
	was := freezeStale
	t.Cleanup(func() { freezeStale = was })
	freezeStale = 5 * time.Second // beyond freezeWait: the change must meet a fresh freeze
	q, cfg := partitioned(t)
	ctx := ctxT(t)
	freezeAndDie(t, q)
	other, err := New(q.Conn(), Config{Queue: cfg, Configured: true, Log: queuetest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.UpdateLimits(ctx, LimitsChange{MaxBytes: 32 << 20}); !errors.Is(err, ErrBusy) {
		t.Errorf("a change while every partition is frozen: %v, want ErrBusy", err)
	}
	if r, err := other.Limits(ctx); err != nil || r.MaxMsgs != 1000 {
		t.Errorf("limits while frozen: %+v %v; want the real total 1000", r, err)
	}
	running, err := New(q.Conn(), Config{Queue: cfg, Configured: true, Log: queuetest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); running.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "every partition unfrozen", func() bool {
		for _, p := range cfg.Layout() {
			if _, frozen := freezeOf(streamInfo(t, q, p.Stream).Config); frozen {
				return false
			}
		}
		return true
	})
	var total int64
	for _, p := range cfg.Layout() {
		total += streamInfo(t, q, p.Stream).Config.MaxMsgs
	}
	if total != 1000 {
		t.Errorf("after the freezes were lifted max_msgs adds up to %d, want 1000", total)
	}
}

// TestAPartitionChangeKeepsTheLiveLimitsAndTheCLIFollowsIt: a live limit
// outlasts a change of queue.partitions (the new layout's streams take
// their shares of the old layout's live totals), and the CLI, which has no
// config, reports, changes and replays into the current layout only, not
// the streams still draining.
func TestAPartitionChangeKeepsTheLiveLimitsAndTheCLIFollowsIt(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 1000
	q1 := openQueue(t, cfg)
	ctx := ctxT(t)
	for _, id := range ids("one", 6) {
		if _, err := q1.Publish(ctx, testMessage(id, 300)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := adminOf(t, q1).UpdateLimits(ctx, LimitsChange{MaxMsgs: 3000}); err != nil {
		t.Fatal(err)
	}

	four := cfg
	four.Partitions = 4
	four.URL = q1.Server().ClientURL()
	q4 := openQueue(t, four)
	cli, err := New(q4.Conn(), Config{Queue: queue.Config{}, Log: queuetest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := cli.Limits(ctx); err != nil || r.MaxMsgs != 3000 {
		t.Errorf("CLI limits after 1 -> 4 partitions = %+v, %v; want the live 3000 over the four", r, err)
	}
	checkDraining(t, cli, cfg.Stream)
	if _, err := cli.UpdateLimits(ctx, LimitsChange{MaxMsgs: 2000}); err != nil {
		t.Fatal(err)
	}
	for _, p := range four.Layout() {
		if got := streamInfo(t, q4, p.Stream).Config.MaxMsgs; got != 500 {
			t.Errorf("%s: max_msgs %d after the CLI set 2000, want 500", p.Stream, got)
		}
	}
	if got := streamInfo(t, q4, cfg.Stream).Config.MaxMsgs; got != 3000 {
		t.Errorf("the draining single stream's max_msgs changed to %d", got)
	}

	// Dead letters replayed through the CLI go to their partition of four.
	deadLetterAll(t, q4, 6, func(queue.Delivery) string { return "poison" })
	if n, err := cli.ReplayAll(ctx); err != nil || n != 6 {
		t.Fatalf("CLI ReplayAll = %d, %v", n, err)
	}
	replayed := 0
	for _, p := range four.Layout() {
		for msgID := range storedIDs(t, q4, p.Stream) {
			id := msgID[strings.LastIndex(msgID, ":")+1:]
			if got := four.Route(id).Stream; got != p.Stream {
				t.Errorf("%s replayed to %s, its partition is %s", id, p.Stream, got)
			}
			replayed++
		}
	}
	if replayed != 6 {
		t.Errorf("%d replayed messages in the four partitions, want 6", replayed)
	}

	// Back to two: the live total carries over again.
	two := four
	two.Partitions = 2
	q2 := openQueue(t, two)
	for _, p := range two.Layout() {
		if got := streamInfo(t, q2, p.Stream).Config.MaxMsgs; got != 1000 {
			t.Errorf("%s: max_msgs %d after 4 -> 2 partitions, want half the live 2000", p.Stream, got)
		}
	}
	if r, err := cli.Limits(ctx); err != nil || r.MaxMsgs != 2000 || len(r.Drift) != 0 {
		t.Errorf("CLI limits after 4 -> 2 partitions = %+v, %v; want 2000", r, err)
	}
	checkDraining(t, cli, cfg.Stream, four.Layout()[2].Stream, four.Layout()[3].Stream)
}

// checkDraining: the status lists exactly these streams as draining.
func checkDraining(t *testing.T, a *Admin, want ...string) {
	t.Helper()
	st, err := a.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	var draining []string
	for _, p := range st.Partitions {
		if p.Draining {
			draining = append(draining, p.Stream)
		}
	}
	slices.Sort(draining)
	slices.Sort(want)
	if !slices.Equal(draining, want) {
		t.Errorf("draining streams %v, want %v", draining, want)
	}
}
