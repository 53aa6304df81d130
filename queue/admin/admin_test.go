package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/levee-mail/levee/mail"
)

func messageTo(id, rcpt string) *mail.Message {
	m := testMessage(id, 200)
	m.Envelope.To = []string{rcpt}
	return m
}

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
	if err := q.ServeStats(func() ProcessStats {
		return ProcessStats{Instance: "a", Roles: "smtp,worker", Worker: &WorkerStats{Concurrency: 3}, SMTP: &SMTPStats{Accepted: 7, Deferred: 2}}
	}); err != nil {
		t.Fatal(err)
	}
	if err := q.ServeStats(func() ProcessStats {
		return ProcessStats{Instance: "b", Roles: "worker", Worker: &WorkerStats{Concurrency: 5}}
	}); err != nil {
		t.Fatal(err)
	}
	st, err := q.Admin().Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	si := streamInfo(t, q, q.Config().Stream)
	// The queue's own Status, which the autoscaler polls, skips the costly
	// parts: per-domain counts and the wait for process stats.
	if cheap, err := q.Status(ctx); err != nil || cheap.Messages != 7 || len(cheap.TopDomains) != 0 || len(cheap.Processes) != 0 {
		t.Errorf("Queue.Status = %+v, %v", cheap, err)
	}
	if st.Messages != si.State.Msgs || st.Bytes != si.State.Bytes || st.LastSeq != si.State.LastSeq || st.Messages != 7 {
		t.Errorf("status %d msgs %d bytes seq %d; stream %+v", st.Messages, st.Bytes, st.LastSeq, si.State)
	}
	want := []DomainCount{{"big.test", 5}, {"small.test", 2}}
	if len(st.TopDomains) != 2 || st.TopDomains[0] != want[0] || st.TopDomains[1] != want[1] {
		t.Errorf("top domains %+v, want %+v", st.TopDomains, want)
	}
	if len(st.Processes) != 2 || st.Workers != (WorkerTotals{Processes: 2, Concurrency: 8}) ||
		st.SMTP.Processes != 1 || st.SMTP.Deferred != 2 || st.SMTP.Accepted != 7 {
		t.Errorf("processes %+v workers %+v smtp %+v", st.Processes, st.Workers, st.SMTP)
	}
}

func TestRatesBetween(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 11, 40, 0, 0, time.UTC)
	rx := func(instance string, started time.Time, deferred uint64) ProcessStats {
		return ProcessStats{Instance: instance, StartedAt: started, SMTP: &SMTPStats{Deferred: deferred}}
	}
	a, b, c := rx("a", t0, 10), rx("b", t0, 100), rx("c", t0, 1000)
	prev := Status{At: t0, LastSeq: 100, Messages: 40, Processes: []ProcessStats{a, b}}
	a.SMTP = &SMTPStats{Deferred: 13}
	bRestarted := rx("b", t0.Add(time.Second), 2) // a new process: its count starts again
	cur := Status{At: t0.Add(10 * time.Second), LastSeq: 300, Messages: 90,
		Processes: []ProcessStats{a, bRestarted, c}} // c missed the first sample
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

	_, err := q.UpdateLimits(ctx, Limits{MaxAge: 30 * time.Second})
	if !errors.Is(err, ErrWouldDelete) || !strings.Contains(err.Error(), "max_age") {
		t.Errorf("max_age below the oldest message (+margin): %v", err)
	}
	_, err = q.UpdateLimits(ctx, Limits{PerDomainMaxMsgs: 3})
	if !errors.Is(err, ErrWouldDelete) || !strings.Contains(err.Error(), "flood.test (5)") {
		t.Errorf("per-domain cap below flood.test's 5: %v", err)
	}
	if after := streamInfo(t, q, cfg.Stream); after.Config.MaxAge != before.MaxAge || after.Config.MaxMsgs != before.MaxMsgs ||
		after.Config.MaxMsgsPerSubject != before.MaxMsgsPerSubject || after.State.Msgs != 6 {
		t.Fatalf("a refused change changed the stream: %+v %+v", after.Config, after.State)
	}

	// A cap every domain is within applies, and defers only the full one.
	u, err := q.UpdateLimits(ctx, Limits{PerDomainMaxMsgs: 5})
	if err != nil || u.Limits.PerDomainMaxMsgs != 5 {
		t.Fatalf("per-domain cap 5: %+v %v", u, err)
	}
	if _, err := q.Publish(ctx, messageTo("f-over", "x@flood.test")); !errors.Is(err, ErrQueueFull) {
		t.Errorf("flood.test over its cap: %v", err)
	}
	if _, err := q.Publish(ctx, messageTo("c-2", "y@calm.test")); err != nil {
		t.Errorf("calm.test under its cap: %v", err)
	}
	if _, err := q.UpdateLimits(ctx, Limits{PerDomainMaxMsgs: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Publish(ctx, messageTo("f-after", "x@flood.test")); err != nil {
		t.Errorf("flood.test with the cap removed: %v", err)
	}

	// Forced, it applies and JetStream trims flood.test to the cap: the
	// reason the change is refused unforced.
	u, err = q.UpdateLimits(ctx, Limits{PerDomainMaxMsgs: 2, Force: true})
	if err != nil || len(u.Notes) == 0 || !strings.Contains(u.Notes[0], "FORCED") {
		t.Fatalf("forced: %+v %v", u, err)
	}
	if n := streamInfo(t, q, cfg.Stream).State.Msgs; n != 2+2 {
		t.Errorf("after the forced cap of 2 the stream holds %d, want 4 (2 per domain)", n)
	}
	if _, err := q.UpdateLimits(ctx, Limits{PerDomainMaxMsgs: 1 << 40}); !errors.Is(err, ErrInvalidLimit) {
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
	a := q.Admin()
	for _, id := range ids("d", 3) {
		if _, err := q.Publish(ctx, testMessage(id, 300)); err != nil {
			t.Fatal(err)
		}
	}
	deadLetterAll(t, q, 3, func(m jetstream.Msg) string { return "store rejected it: " + m.Headers().Get(HeaderMsgID) })
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
	m, err := a.replayMsg(&jetstream.RawStreamMsg{Sequence: d.Seq, Subject: "levee.dead.example.com", Header: nats.Header{HeaderMsgID: {"d-0"}}, Data: raw})
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := q.JetStream().PublishMsg(ctx, m); err != nil || !ack.Duplicate {
		t.Errorf("republished replay: %+v %v, want a duplicate", ack, err)
	}
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		dm, err := Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, dm.ID+" "+m.Subject())
		_ = m.Ack()
	}
	if len(got) != 1 || got[0] != "d-0 levee.mail.example.com" {
		t.Errorf("after replay the workers got %v, want d-0 once on its original subject", got)
	}

	n, err := a.ReplayAll(ctx)
	if err != nil || n != 2 {
		t.Errorf("replay all: %d %v", n, err)
	}
	if err := a.Purge(ctx, 999); !errors.Is(err, ErrNotFound) {
		t.Errorf("purge unknown: %v", err)
	}
	// Dead-letter the two again and purge them.
	deadLetterAll(t, q, 2, func(jetstream.Msg) string { return "again" })
	if n, err := a.PurgeAll(ctx); err != nil || n != 2 {
		t.Errorf("purge all: %d %v", n, err)
	}
	if _, total, _ := a.DeadLetters(ctx, 0, 10); total != 0 {
		t.Errorf("after purge %d dead letters", total)
	}
}

// TestStartKeepsLiveLimitsAndNeverDeletesMail: a process starting with the
// same config keeps limits an operator changed live; a changed config
// applies, except a limit that would make JetStream delete queued mail.
func TestStartKeepsLiveLimitsAndNeverDeletesMail(t *testing.T) {
	cfg := testConfig(t)
	cfg.DuplicateWindow = time.Second
	ctx := ctxT(t)
	q1 := openQueue(t, cfg)
	ext := cfg
	ext.URL = q1.Server().ClientURL()
	for _, id := range ids("k", 5) {
		if _, err := q1.Publish(ctx, messageTo(id, "x@one.test")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q1.UpdateLimits(ctx, Limits{MaxMsgs: 50}); err != nil {
		t.Fatal(err)
	}
	reopen := func(c Config) jetstream.StreamConfig {
		t.Helper()
		q, err := Open(ctx, c, nil, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close(ctx)
		return streamInfo(t, q, c.Stream).Config
	}
	if got := reopen(ext); got.MaxMsgs != 50 {
		t.Errorf("a start with the same config undid the live change: max_msgs %d, want 50", got.MaxMsgs)
	}
	changed := ext
	changed.MaxMsgs = 200
	changed.PerDomainMaxMsgs = 2      // one.test has 5 queued: would trim it
	changed.MaxAge = 30 * time.Second // the queued mail is younger, but within the margin
	got := reopen(changed)
	if got.MaxMsgs != 200 {
		t.Errorf("a changed config did not apply: max_msgs %d, want 200", got.MaxMsgs)
	}
	if got.MaxMsgsPerSubject == 2 || got.MaxAge == 30*time.Second {
		t.Errorf("a start applied limits that delete queued mail: %+v", got)
	}
	if n := streamInfo(t, q1, cfg.Stream).State.Msgs; n != 5 {
		t.Errorf("the stream holds %d messages after the starts, want 5", n)
	}
	// Once the mail is gone, the same config applies in full.
	cons, err := q1.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A live change made meanwhile survives the next start with the same
	// config, which applies only what it had to withhold, now that it is safe.
	if _, err := q1.UpdateLimits(ctx, Limits{MaxMsgs: 77}); err != nil {
		t.Fatal(err)
	}
	if got := reopen(changed); got.MaxMsgsPerSubject != 2 || got.MaxAge != 30*time.Second || got.MaxMsgs != 77 {
		t.Errorf("on an empty stream the withheld limits did not apply, or the live max_msgs 77 was undone: %+v", got)
	}
	if got := reopen(changed); got.Metadata[metaWithheldLimits] != "" || got.MaxMsgs != 77 {
		t.Errorf("after the withheld limits applied: %+v", got)
	}
}

// TestUpGaugeFollowsJetStream: levee_queue_up says whether the status
// refresh reaches JetStream, so that an outage shows even with no mail.
func TestUpGaugeFollowsJetStream(t *testing.T) {
	q := openQueue(t, testConfig(t))
	waitFor(t, "levee_queue_up 1", func() bool { return testutil.ToFloat64(q.metrics.up) == 1 })
	q.Server().Shutdown()
	waitFor(t, "levee_queue_up 0", func() bool { return testutil.ToFloat64(q.metrics.up) == 0 })
}

// deadLetterAll moves n queued messages to the dead stream with the reason
// given for each, as a worker giving up on them would.
func deadLetterAll(t *testing.T, q *Queue, n int, reason func(jetstream.Msg) string) {
	t.Helper()
	ctx := ctxT(t)
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for got := 0; got < n; {
		batch, err := cons.Fetch(n-got, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := q.DeadLetter(ctx, m, reason(m)); err != nil {
				t.Fatal(err)
			}
			if err := m.Term(); err != nil {
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
	a := q.Admin()
	for _, id := range ids("r", 3) {
		if _, err := q.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
	}
	deadLetterAll(t, q, 3, func(jetstream.Msg) string { return "poison" })
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
			batch, err := cons.FetchNoWait(10)
			if err != nil {
				continue
			}
			for m := range batch.Messages() {
				_ = q.DeadLetter(ctx, m, "poison again")
				_ = m.Term()
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
	cons, err := q.Consumer(ctx)
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
// while the per-domain cap is lowered, live or by a starting process with a
// changed config; every acknowledged message is still queued afterwards
// (both freeze intake while they check and apply the cap).
func TestLoweringPerDomainCapUnderLoadDeletesNothing(t *testing.T) {
	for _, how := range []string{"live", "start"} {
		t.Run(how, func(t *testing.T) {
			cfg := testConfig(t)
			q := openQueue(t, cfg)
			ctx := ctxT(t)
			// setCap sets the per-domain cap (-1: none) the way under test
			// and says whether it applied (a refused or withheld lower cap,
			// a domain being above it at the check, is fine).
			setCap := func(cap int64) (applied bool) {
				if how == "live" {
					_, err := q.UpdateLimits(ctx, Limits{PerDomainMaxMsgs: cap})
					if err != nil && !errors.Is(err, ErrWouldDelete) {
						t.Fatal(err)
					}
					return err == nil
				}
				c := cfg
				c.URL, c.PerDomainMaxMsgs = q.Server().ClientURL(), max(cap, 0)
				starting, err := Open(ctx, c, nil, testLog(t))
				if err != nil {
					t.Fatal(err)
				}
				defer starting.Close(ctx)
				return streamInfo(t, starting, c.Stream).Config.MaxMsgsPerSubject == cap
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
						case errors.Is(err, ErrQueueFull):
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
			// trimmed.
			applied := 0
			for range 20 {
				setCap(-1)
				n := streamInfo(t, q, cfg.Stream).State.Msgs
				waitFor(t, "more mail queued", func() bool { return streamInfo(t, q, cfg.Stream).State.Msgs > n })
				if setCap(int64(streamInfo(t, q, cfg.Stream).State.Msgs) + 3) {
					applied++
				}
			}
			close(stop)
			wg.Wait()
			if n := streamInfo(t, q, q.Config().Stream).State.Msgs; int64(n) != acked.Load() {
				t.Fatalf("%d messages acknowledged, %d queued: a cap change deleted accepted mail", acked.Load(), n)
			}
			if applied == 0 {
				t.Fatal("no cap change applied: the test exercised nothing")
			}
			t.Logf("%d of 20 cap changes applied, %d messages acknowledged and all still queued", applied, acked.Load())
		})
	}
}

// TestOpsSamplesOnlyOnceAsked: a process whose ops API nobody asks (most
// smtpd and worker processes) takes no samples.
func TestOpsSamplesOnlyOnceAsked(t *testing.T) {
	q := openQueue(t, testConfig(t))
	o := &Ops{Admin: q.Admin(), sampler: NewSampler(q.Admin(), 10*time.Millisecond, 0, 0), used: make(chan struct{})}
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
	u, err := q.UpdateLimits(ctx, Limits{MaxMsgSize: before - 1024})
	if err != nil || len(u.Notes) != 1 || !strings.Contains(u.Notes[0], "no receiver answered") {
		t.Fatalf("without receivers: %+v %v", u, err)
	}

	const size = 1 << 20
	for _, p := range []ProcessStats{
		{Instance: "smtpd-1", SMTP: &SMTPStats{MaxMessageBytes: size}},
		{Instance: "smtpd-2", SMTP: &SMTPStats{MaxMessageBytes: size / 2}},
		{Instance: "worker-1", Worker: &WorkerStats{Concurrency: 1}},
	} {
		if err := q.ServeStats(func() ProcessStats { return p }); err != nil {
			t.Fatal(err)
		}
	}
	// Raising is never refused; lowering to exactly SIZE plus the header
	// room of the largest receiver is fine.
	if _, err := q.UpdateLimits(ctx, Limits{MaxMsgSize: before}); err != nil {
		t.Fatalf("raising max_msg_size: %v", err)
	}
	if u, err := q.UpdateLimits(ctx, Limits{MaxMsgSize: size + SizeMargin}); err != nil || len(u.Notes) != 0 {
		t.Fatalf("max_msg_size at the largest SIZE plus header room: %+v %v", u, err)
	}
	_, err = q.UpdateLimits(ctx, Limits{MaxMsgSize: size + SizeMargin - 1})
	if !errors.Is(err, ErrWouldBounce) || !strings.Contains(err.Error(), "smtpd-1 (SIZE 1048576)") || strings.Contains(err.Error(), "smtpd-2") {
		t.Errorf("max_msg_size one byte below smtpd-1's SIZE plus header room: %v", err)
	}
	if got := streamInfo(t, q, q.Config().Stream).Config.MaxMsgSize; got != size+SizeMargin {
		t.Errorf("a refused change changed max_msg_size to %d", got)
	}
	u, err = q.UpdateLimits(ctx, Limits{MaxMsgSize: size, Force: true})
	if err != nil || len(u.Notes) != 1 || !strings.Contains(u.Notes[0], "FORCED") || u.Limits.MaxMsgSize != size {
		t.Errorf("forced: %+v %v", u, err)
	}
}
