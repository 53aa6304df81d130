package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStatusMatchesStreamAndShowsDomainsAndProcesses: the figures are the
// server's own; per-domain counts name the flooding domain first; processes
// answering on the stats subject are summed.
func TestStatusMatchesStreamAndShowsDomainsAndProcesses(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	for i, id := range ids("s", 7) {
		rcpt := "x@big.test"
		if i >= 5 {
			rcpt = "y@small.test"
		}
		if _, err := q.Publish(ctx, messageTo(id, rcpt)); err != nil {
			t.Fatal(err)
		}
	}
	serveStats(t, q, func() fleet.Stats {
		return fleet.Stats{Instance: "a", Roles: "smtp,worker", Worker: &fleet.WorkerStats{Concurrency: 3}, SMTP: &fleet.SMTPStats{Accepted: 7, Deferred: 2}}
	})
	serveStats(t, q, func() fleet.Stats {
		return fleet.Stats{Instance: "b", Roles: "worker", Worker: &fleet.WorkerStats{Concurrency: 5}}
	})
	st, err := adminOf(t, q).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	si := streamInfo(t, q, q.Config().Stream)
	if st.Messages != si.State.Msgs || st.Bytes != si.State.Bytes || st.LastSeq != si.State.LastSeq || st.Messages != 7 {
		t.Errorf("status %d msgs %d bytes seq %d; stream %+v", st.Messages, st.Bytes, st.LastSeq, si.State)
	}
	want := []DomainCount{{"big.test", 5}, {"small.test", 2}}
	if len(st.TopDomains) != 2 || st.TopDomains[0] != want[0] || st.TopDomains[1] != want[1] {
		t.Errorf("top domains %+v, want %+v", st.TopDomains, want)
	}
	if len(st.Processes) != 2 || st.Workers != (fleet.WorkerTotals{Processes: 2, Concurrency: 8}) ||
		st.SMTP.Processes != 1 || st.SMTP.Deferred != 2 || st.SMTP.Accepted != 7 {
		t.Errorf("processes %+v workers %+v smtp %+v", st.Processes, st.Workers, st.SMTP)
	}
}

func TestRatesBetween(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 11, 40, 0, 0, time.UTC)
	rx := func(instance string, started time.Time, deferred uint64) fleet.Stats {
		return fleet.Stats{Instance: instance, StartedAt: started, SMTP: &fleet.SMTPStats{Deferred: deferred}}
	}
	a, b, c := rx("a", t0, 10), rx("b", t0, 100), rx("c", t0, 1000)
	prev := Status{At: t0, LastSeq: 100, Messages: 40, Processes: []fleet.Stats{a, b}}
	a.SMTP = &fleet.SMTPStats{Deferred: 13}
	bRestarted := rx("b", t0.Add(time.Second), 2) // a new process: its count starts again
	cur := Status{At: t0.Add(10 * time.Second), LastSeq: 300, Messages: 90,
		Processes: []fleet.Stats{a, bRestarted, c}} // c missed the first sample
	r := RatesBetween(prev, cur)
	// 200 accepted; removed went from 60 to 210: 150 drained; only a's 3
	// deferrals count (b restarted, c was not in the first sample).
	if r.WindowSeconds != 10 || r.Ingest != 20 || r.Drain != 15 || r.Deferrals != 0.3 {
		t.Errorf("rates %+v", r)
	}
	if r := RatesBetween(Status{}, cur); r != (Rates{}) {
		t.Errorf("rates without a previous status = %+v", r)
	}
}

type fakeSource struct{ st []Status }

func (f *fakeSource) Status(context.Context) (Status, error) {
	s := f.st[0]
	if len(f.st) > 1 {
		f.st = f.st[1:]
	}
	return s, nil
}

func TestSamplerKeepsHistoryAndRatesOverWindow(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 11, 40, 0, 0, time.UTC)
	var sts []Status
	for i := range 8 { // every 2s, 10 accepted and 5 drained per second
		sts = append(sts, Status{At: t0.Add(time.Duration(2*i) * time.Second), LastSeq: uint64(20 * i), Messages: uint64(10 * i)})
	}
	src := &fakeSource{st: sts}
	s := NewSampler(src, 2*time.Second, 5, 10*time.Second)
	for range 7 {
		s.sampleOnce(context.Background())
	}
	h := s.History(time.Time{})
	if len(h) != 5 || !h[0].At.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("history kept %d samples from %v, want the last 5", len(h), h[0].At)
	}
	if h[4].Ingest != 10 || h[4].Drain != 5 {
		t.Errorf("sample rates %+v", h[4])
	}
	if got := s.History(t0.Add(8 * time.Second)); len(got) != 2 {
		t.Errorf("history since 8s: %d samples, want 2 (10s, 12s)", len(got))
	}
	st, err := s.Status(context.Background()) // at 14s: rates from the sample at 4s
	if err != nil {
		t.Fatal(err)
	}
	if st.Rates.WindowSeconds != 10 || st.Rates.Ingest != 10 || st.Rates.Drain != 5 {
		t.Errorf("status rates %+v", st.Rates)
	}
}

// TestLimitChangesThatWouldDeleteMailAreRefused: lowering max_age below the
// oldest message, or the per-domain cap below a domain's queued count, makes
// JetStream delete accepted mail; UpdateLimits refuses both and changes
// nothing, unless forced. Lowering max_msgs deletes nothing and says so.
func TestLimitChangesThatWouldDeleteMailAreRefused(t *testing.T) {
	cfg := testConfig(t)
	cfg.DuplicateWindow = time.Second
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	for i, id := range ids("f", 6) {
		rcpt := "x@flood.test"
		if i == 5 {
			rcpt = "y@calm.test"
		}
		if _, err := q.Publish(ctx, messageTo(id, rcpt)); err != nil {
			t.Fatal(err)
		}
	}
	before := streamInfo(t, q, cfg.Stream).Config

	_, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxAge: 30 * time.Second})
	if !errors.Is(err, ErrWouldDelete) || !strings.Contains(err.Error(), "max_age") {
		t.Errorf("max_age below the oldest message (+margin): %v", err)
	}
	_, err = adminOf(t, q).UpdateLimits(ctx, LimitsChange{PerDomainMaxMsgs: 3})
	if !errors.Is(err, ErrWouldDelete) || !strings.Contains(err.Error(), "flood.test (5)") {
		t.Errorf("per-domain cap below flood.test's 5: %v", err)
	}
	if after := streamInfo(t, q, cfg.Stream); after.Config.MaxAge != before.MaxAge || after.Config.MaxMsgs != before.MaxMsgs ||
		after.Config.MaxMsgsPerSubject != before.MaxMsgsPerSubject || after.State.Msgs != 6 {
		t.Fatalf("a refused change changed the stream: %+v %+v", after.Config, after.State)
	}

	// A cap every domain is within applies, and defers only the full one.
	u, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{PerDomainMaxMsgs: 5})
	if err != nil || u.Limits.PerDomainMaxMsgs != 5 {
		t.Fatalf("per-domain cap 5: %+v %v", u, err)
	}
	if _, err := q.Publish(ctx, messageTo("f-over", "x@flood.test")); !errors.Is(err, queue.ErrQueueFull) {
		t.Errorf("flood.test over its cap: %v", err)
	}
	if _, err := q.Publish(ctx, messageTo("c-2", "y@calm.test")); err != nil {
		t.Errorf("calm.test under its cap: %v", err)
	}
	if _, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{PerDomainMaxMsgs: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Publish(ctx, messageTo("f-after", "x@flood.test")); err != nil {
		t.Errorf("flood.test with the cap removed: %v", err)
	}

	// Forced, it applies and JetStream trims flood.test to the cap: the
	// reason the change is refused unforced.
	u, err = adminOf(t, q).UpdateLimits(ctx, LimitsChange{PerDomainMaxMsgs: 2, Force: true})
	if err != nil || len(u.Notes) == 0 || !strings.Contains(u.Notes[0], "FORCED") {
		t.Fatalf("forced: %+v %v", u, err)
	}
	if n := streamInfo(t, q, cfg.Stream).State.Msgs; n != 2+2 {
		t.Errorf("after the forced cap of 2 the stream holds %d, want 4 (2 per domain)", n)
	}
	if _, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{PerDomainMaxMsgs: 1 << 40}); !errors.Is(err, ErrInvalidLimit) {
		t.Errorf("per-domain cap above max_msgs: %v", err)
	}
}

// TestDeadLetterToolsReplayExactlyOnce: list and show give the reason;
// replay puts the message back once, with its own ID, even when repeated or
// when the original's Nats-Msg-Id is still inside the duplicate window;
// purge removes.
func TestDeadLetterToolsReplayExactlyOnce(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	a := adminOf(t, q)
	for _, id := range ids("d", 3) {
		if _, err := q.Publish(ctx, testMessage(id, 300)); err != nil {
			t.Fatal(err)
		}
	}
	deadLetterAll(t, q, 3, func(d queue.Delivery) string {
		m, _ := d.Message()
		return "store rejected it: " + m.ID
	})
	waitFor(t, "mail stream empty", func() bool { return streamInfo(t, q, q.Config().Stream).State.Msgs == 0 })

	list, total, err := a.DeadLetters(ctx, 0, 2)
	if err != nil || total != 3 || len(list) != 2 {
		t.Fatalf("list: %d of %d, %v", len(list), total, err)
	}
	rest, _, err := a.DeadLetters(ctx, list[1].Seq, 10)
	if err != nil || len(rest) != 1 {
		t.Fatalf("second page: %+v %v", rest, err)
	}
	d := list[0]
	if d.ID != "d-0" || d.Reason != "store rejected it: d-0" || d.Deliveries != 1 || d.OriginalSeq == 0 ||
		d.From != "a@example.org" || len(d.To) != 2 || d.DeadAt.IsZero() {
		t.Errorf("dead letter %+v", d)
	}
	info, raw, err := a.DeadLetter(ctx, d.Seq)
	if err != nil || info.ID != "d-0" || !strings.Contains(string(raw), "Subject: d-0") {
		t.Fatalf("show: %+v %q %v", info, raw, err)
	}

	if err := a.Replay(ctx, d.Seq); err != nil {
		t.Fatal(err)
	}
	if err := a.Replay(ctx, d.Seq); !errors.Is(err, ErrNotFound) {
		t.Errorf("second replay of the same dead letter: %v, want ErrNotFound", err)
	}
	// A replay retried after the removal failed is a JetStream duplicate.
	m, err := a.replayMsg(q.Config(), &jetstream.RawStreamMsg{Sequence: d.Seq, Subject: "levee.dead.example.com", Header: nats.Header{queue.HeaderMsgID: {"d-0"}}, Data: raw})
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := q.JetStream().PublishMsg(ctx, m); err != nil || !ack.Duplicate {
		t.Errorf("republished replay: %+v %v, want a duplicate", ack, err)
	}
	s, err := q.JetStream().Stream(ctx, q.Config().Stream)
	if err != nil {
		t.Fatal(err)
	}
	if si, err := s.Info(ctx, jetstream.WithSubjectFilter("levee.mail.>")); err != nil || si.State.Subjects["levee.mail.example.com"] != 1 {
		t.Errorf("after replay the mail stream holds %v, %v; want one message on the original subject", si.State.Subjects, err)
	}
	var got []string
	for _, d := range fetch(t, q, 2) {
		dm, err := d.Message()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, dm.ID)
		_ = d.Ack()
	}
	if len(got) != 1 || got[0] != "d-0" {
		t.Errorf("after replay the workers got %v, want d-0 once", got)
	}

	n, err := a.ReplayAll(ctx)
	if err != nil || n != 2 {
		t.Errorf("replay all: %d %v", n, err)
	}
	if err := a.Purge(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("purge unknown: %v", err)
	}
	// Dead-letter the two again and purge them.
	deadLetterAll(t, q, 2, func(queue.Delivery) string { return "again" })
	if n, err := a.PurgeAll(ctx); err != nil || n != 2 {
		t.Errorf("purge all: %d %v", n, err)
	}
	if _, total, _ := a.DeadLetters(ctx, 0, 10); total != 0 {
		t.Errorf("after purge %d dead letters", total)
	}
}

// TestLiveChangeOutlastsStartsAndShowsAsDrift: a limit changed live stays
// through starts with the same config or another (a start never writes an
// existing stream's limits, so it cannot delete queued mail either), and
// Limits says how the live limits differ from the config.
func TestLiveChangeOutlastsStartsAndShowsAsDrift(t *testing.T) {
	cfg := testConfig(t)
	cfg.DuplicateWindow = time.Second
	ctx := ctxT(t)
	q1 := openQueue(t, cfg)
	for _, id := range ids("k", 5) {
		if _, err := q1.Publish(ctx, messageTo(id, "x@one.test")); err != nil {
			t.Fatal(err)
		}
	}
	a := adminOf(t, q1)
	if r, err := a.Limits(ctx); err != nil || !r.ComparedWithConfig || len(r.Drift) != 0 {
		t.Fatalf("Limits before any change = %+v, %v; want no drift", r, err)
	}
	if _, err := a.UpdateLimits(ctx, LimitsChange{MaxMsgs: 50}); err != nil {
		t.Fatal(err)
	}
	ext := cfg
	ext.URL = q1.Server().ClientURL()
	changed := ext
	changed.MaxMsgs = 200
	changed.PerDomainMaxMsgs = 2      // one.test has 5 queued: would trim it
	changed.MaxAge = 30 * time.Second // the queued mail is younger, but within the margin
	for _, c := range []queue.Config{ext, changed} {
		q := openQueue(t, c)
		got := streamInfo(t, q, c.Stream).Config
		if got.MaxMsgs != 50 || got.MaxMsgsPerSubject != -1 || got.MaxAge != cfg.MaxAge {
			t.Errorf("a start changed the live limits: %+v", got)
		}
		if err := q.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := streamInfo(t, q1, cfg.Stream).State.Msgs; n != 5 {
		t.Errorf("the stream holds %d messages after the starts, want 5", n)
	}
	r, err := a.Limits(ctx)
	want := queue.LimitDrift{Key: "max_msgs", Live: "50", Config: "1000000"}
	if err != nil || r.MaxMsgs != 50 || len(r.Drift) != 1 || r.Drift[0] != want {
		t.Errorf("Limits = %+v, %v; want live max_msgs 50 and the drift %v", r, err, want)
	}
	// An Admin that knows only the names (the CLI straight through
	// JetStream) does not claim a drift.
	names, err := New(q1.Conn(), Config{Queue: queue.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := names.Limits(ctx); err != nil || r.ComparedWithConfig || r.Drift != nil || r.MaxMsgs != 50 {
		t.Errorf("Limits without a config = %+v, %v", r, err)
	}
}

// deadLetterAll moves n queued messages to the dead stream with the reason
// given for each, as a worker giving up on them would.
func deadLetterAll(t *testing.T, q *queue.Queue, n int, reason func(queue.Delivery) string) {
	t.Helper()
	ctx := ctxT(t)
	for got := 0; got < n; {
		for _, d := range fetch(t, q, n-got) {
			if err := d.GiveUp(ctx, reason(d)); err != nil {
				t.Fatal(err)
			}
			got++
		}
	}
}

// TestReplayAllStopsAtWhatWasThereAndRacesAreHarmless: letters that die
// again during ReplayAll wait for the next call; concurrent replays of one
// letter queue it once and none of them fails.
func TestReplayAllStopsAtWhatWasThereAndRacesAreHarmless(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	a := adminOf(t, q)
	for _, id := range ids("r", 3) {
		if _, err := q.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
	}
	deadLetterAll(t, q, 3, func(queue.Delivery) string { return "poison" })
	// A poison loop: every replayed message is dead-lettered again at once.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		cons, _ := q.Consumer(ctx)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ds, _, err := cons.Fetch(10, 10*time.Millisecond)
			if err != nil {
				continue
			}
			for _, d := range ds {
				_ = d.GiveUp(ctx, "poison again")
			}
		}
	}()
	n, err := a.ReplayAll(ctx)
	close(stop)
	<-done
	if err != nil || n != 3 {
		t.Fatalf("ReplayAll = %d, %v; want the 3 letters there were", n, err)
	}

	// Term is fire-and-forget: until the server has processed the loop's
	// last terms, those messages still count in the stream and would vanish
	// under the count taken below.
	cons, err := q.JetStream().Consumer(ctx, q.Config().Stream, q.Config().Durable)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the poison loop's terms to settle", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0
	})

	list, _, err := a.DeadLetters(ctx, 0, 100)
	if err != nil || len(list) == 0 {
		t.Fatalf("dead letters after the poison loop: %v %v", list, err)
	}
	seq := list[0].Seq
	before := streamInfo(t, q, q.Config().Stream).State.Msgs
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- a.Replay(ctx, seq) }()
	}
	ok := 0
	for range 4 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrNotFound):
		default:
			t.Errorf("concurrent replay: %v", err)
		}
	}
	if after := streamInfo(t, q, q.Config().Stream).State.Msgs; ok == 0 || after != before+1 {
		t.Errorf("%d replays succeeded; the mail stream went from %d to %d messages, want one more", ok, before, after)
	}
	if page, _, err := a.DeadLetters(ctx, ^uint64(0), 10); err != nil || len(page) != 0 {
		t.Errorf("list after the largest sequence: %d letters, %v; want none", len(page), err)
	}
}

// TestLoweringPerDomainCapUnderLoadDeletesNothing: publishes keep arriving
// while the per-domain cap is lowered live; every acknowledged message is
// still queued afterwards (the change freezes intake while it checks and
// applies the cap). Without the freeze, 3 of 3 runs lost 7 to 18 messages.
func TestLoweringPerDomainCapUnderLoadDeletesNothing(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("partitions=%d", n), func(t *testing.T) { lowerPerDomainCapUnderLoad(t, n) })
	}
}

func lowerPerDomainCapUnderLoad(t *testing.T, partitions int) {
	// A few above the domain's count; over partitions, enough for each
	// partition's share of the flood to fit its share of the cap at the
	// check, most of the time.
	margin := int64(3)
	if partitions > 1 {
		margin = int64(10 * partitions)
	}
	cfg := testConfig(t)
	cfg.Partitions = partitions
	q := openQueue(t, cfg)
	ctx := ctxT(t)
	// setCap sets the per-domain cap (-1: none) and says whether it
	// applied (a lower cap refused because a domain was above it at
	// the check is fine).
	setCap := func(cap int64) (applied bool) {
		_, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{PerDomainMaxMsgs: cap})
		if err != nil && !errors.Is(err, ErrWouldDelete) {
			t.Fatal(err)
		}
		return err == nil
	}
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := q.Publish(ctx, messageTo(fmt.Sprintf("p-%d-%d", g, i), "x@flood.test"))
				switch {
				case err == nil:
					acked.Add(1)
				case errors.Is(err, queue.ErrQueueFull):
					time.Sleep(time.Millisecond)
				default:
					t.Error(err)
					return
				}
			}
		}()
	}
	// Each round lifts the cap and lowers it to a few above the
	// domain's count: the senders outrun that margin at once, so
	// any mail let in between the check and the update would be
	// trimmed. A refused round doubles the margin for the next: on a
	// loaded machine (go test -race beside other packages) the senders
	// can outrun it before the check in every round, and the test would
	// exercise nothing.
	applied := 0
	for range 20 {
		setCap(-1)
		n := queued(t, q)
		waitFor(t, "more mail queued", func() bool { return queued(t, q) > n })
		if setCap(int64(queued(t, q)) + margin) {
			applied++
		} else {
			margin *= 2
		}
	}
	close(stop)
	wg.Wait()
	if n := queued(t, q); int64(n) != acked.Load() {
		t.Fatalf("%d messages acknowledged, %d queued: a cap change deleted accepted mail", acked.Load(), n)
	}
	if applied == 0 {
		t.Fatal("no cap change applied: the test exercised nothing")
	}
	t.Logf("%d of 20 cap changes applied, %d messages acknowledged and all still queued", applied, acked.Load())
}

// TestOpsSamplesOnlyOnceAsked: a process whose ops API nobody asks (most
// smtpd and worker processes) takes no samples.
func TestOpsSamplesOnlyOnceAsked(t *testing.T) {
	q := openQueue(t, testConfig(t))
	o := &Ops{Admin: adminOf(t, q), sampler: NewSampler(adminOf(t, q), 10*time.Millisecond, 0, 0), used: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); o.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond) // ten intervals in which nothing may happen
	if n := len(o.sampler.History(time.Time{})); n != 0 {
		t.Fatalf("%d samples before anyone asked", n)
	}
	if _, err := o.Status(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "samples once asked", func() bool { return len(o.sampler.History(time.Time{})) >= 2 })
}

// TestLoweringMaxMsgSizeBelowAReceiversSIZEIsRefused: a receiver reads mail
// up to its own SIZE before publishing, so a max_msg_size below it (plus the
// header room) would turn accepted-by-SIZE mail into 552 bounces.
func TestLoweringMaxMsgSizeBelowAReceiversSIZEIsRefused(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	before := streamInfo(t, q, q.Config().Stream).Config.MaxMsgSize

	// No receiver answers: the change applies, with the rule in its notes.
	u, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgSize: before - 1024})
	if err != nil || len(u.Notes) != 1 || !strings.Contains(u.Notes[0], "no receiver answered") {
		t.Fatalf("without receivers: %+v %v", u, err)
	}

	const size = 1 << 20
	for _, p := range []fleet.Stats{
		{Instance: "smtpd-1", SMTP: &fleet.SMTPStats{MaxMessageBytes: size}},
		{Instance: "smtpd-2", SMTP: &fleet.SMTPStats{MaxMessageBytes: size / 2}},
		{Instance: "worker-1", Worker: &fleet.WorkerStats{Concurrency: 1}},
	} {
		serveStats(t, q, func() fleet.Stats { return p })
	}
	// Raising is never refused; lowering to exactly SIZE plus the header
	// room of the largest receiver is fine.
	if _, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgSize: before}); err != nil {
		t.Fatalf("raising max_msg_size: %v", err)
	}
	if u, err := adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgSize: size + queue.SizeMargin}); err != nil || len(u.Notes) != 0 {
		t.Fatalf("max_msg_size at the largest SIZE plus header room: %+v %v", u, err)
	}
	_, err = adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgSize: size + queue.SizeMargin - 1})
	if !errors.Is(err, ErrWouldBounce) || !strings.Contains(err.Error(), "smtpd-1 (SIZE 1048576)") || strings.Contains(err.Error(), "smtpd-2") {
		t.Errorf("max_msg_size one byte below smtpd-1's SIZE plus header room: %v", err)
	}
	if got := streamInfo(t, q, q.Config().Stream).Config.MaxMsgSize; got != size+queue.SizeMargin {
		t.Errorf("a refused change changed max_msg_size to %d", got)
	}
	u, err = adminOf(t, q).UpdateLimits(ctx, LimitsChange{MaxMsgSize: size, Force: true})
	if err != nil || len(u.Notes) != 1 || !strings.Contains(u.Notes[0], "FORCED") || u.Limits.MaxMsgSize != size {
		t.Errorf("forced: %+v %v", u, err)
	}
}

// TestReplaySyncsBeforeItRemovesTheDeadLetter: under the embedded server's
// group sync, a replay waits for the copy it put back to be on disk before
// it removes the dead letter; if that sync fails the dead letter stays.
func TestReplaySyncsBeforeItRemovesTheDeadLetter(t *testing.T) {
	q := openQueue(t, testConfig(t))
	ctx := ctxT(t)
	for _, id := range ids("s", 2) {
		if _, err := q.Publish(ctx, testMessage(id, 300)); err != nil {
			t.Fatal(err)
		}
	}
	deadLetterAll(t, q, 2, func(queue.Delivery) string { return "test" })
	var syncs atomic.Int64
	failing := errors.New("EIO")
	var fail atomic.Bool
	a, err := New(q.Conn(), Config{Queue: q.Config(), Configured: true, Durable: func(ctx context.Context) error {
		syncs.Add(1)
		if fail.Load() {
			return failing
		}
		return q.WaitDurable(ctx)
	}})
	if err != nil {
		t.Fatal(err)
	}
	list, _, err := a.DeadLetters(ctx, 0, 10)
	if err != nil || len(list) != 2 {
		t.Fatalf("dead letters: %d, %v", len(list), err)
	}
	if err := a.Replay(ctx, list[0].Seq); err != nil || syncs.Load() != 1 {
		t.Fatalf("replay: %v after %d syncs, want success after 1", err, syncs.Load())
	}
	fail.Store(true)
	if err := a.Replay(ctx, list[1].Seq); !errors.Is(err, failing) {
		t.Fatalf("replay with a failing sync: %v, want its error", err)
	}
	if _, _, err := a.DeadLetter(ctx, list[1].Seq); err != nil {
		t.Fatalf("the dead letter whose copy was not synced is gone: %v", err)
	}
}
