package loadtest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The audit finds what the server lost and what it stored twice: the fake
// API "loses" message 3 and stores message 5 three times.
func TestAuditFindsLostAndDuplicated(t *testing.T) {
	sink := startSink(t, nil)
	api := startAPI(t, sink)
	api.copies = func(mid string, stored int) int {
		switch {
		case strings.HasPrefix(mid, "3."):
			return 0
		case strings.HasPrefix(mid, "5."):
			return 3 * stored
		}
		return stored
	}
	cfg := quickConfig(t, sink.addr, mustConstant(t, 100, 200*time.Millisecond))
	cfg.API = api.URL
	cfg.Audit.Timeout = 500 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := res.Audit
	if a.Accepted != 20 || a.Stored != 19 || a.Lost != 1 || a.Duplicated != 1 || a.ExtraCopies != 2 || a.Complete {
		t.Fatalf("audit = %+v", a)
	}
	if len(a.LostSample) != 1 || a.LostSample[0] != "3.test@loadtest.levee" ||
		len(a.DuplicatedSample) != 1 || a.DuplicatedSample[0] != "5.test@loadtest.levee" {
		t.Fatalf("samples: lost %v, duplicated %v", a.LostSample, a.DuplicatedSample)
	}
	th := NoThresholds
	th.MaxLost, th.MaxDuplicates = 0, 0
	if th.Check(res) || len(res.Checks) != 2 || res.Checks[0].OK || res.Checks[1].OK {
		t.Fatalf("thresholds passed: %+v", res.Checks)
	}
	th.MaxLost, th.MaxDuplicates = 1, 1
	if !th.Check(res) {
		t.Fatalf("--max-lost 1 --max-duplicates 1 failed: %+v", res.Checks)
	}
}

// Late messages: stored more than --late-after after their 250. The fake
// API reports each copy as stored when the sink took it, so a zero-ish
// bound makes every message late.
func TestAuditLateAndStoredDespiteRefusal(t *testing.T) {
	sink := startSink(t, func(s *sinkServer) {
		s.data = func(mid string, attempt int) error {
			if strings.HasPrefix(mid, "0.") {
				return replyError(554, "5.0.0 refused after all")
			}
			return nil
		}
	})
	api := startAPI(t, sink)
	// Message 0 was refused, yet the API says it is stored.
	api.copies = func(mid string, stored int) int {
		if strings.HasPrefix(mid, "0.") {
			sink.storedAt[mid] = time.Now()
			return 1
		}
		return stored
	}
	cfg := quickConfig(t, sink.addr, mustConstant(t, 100, 100*time.Millisecond))
	cfg.API = api.URL
	cfg.Audit.LateAfter = time.Nanosecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := res.Audit
	if a.Accepted != 9 || a.Lost != 0 || a.StoredDespiteRefusal != 1 {
		t.Fatalf("audit = %+v", a)
	}
	// The sink records storedAt before the client reads the 250, so
	// latencies are around zero: the bound of 1ns sees some as late,
	// never more than were stored.
	if a.Late > a.Stored {
		t.Fatalf("late %d of %d stored", a.Late, a.Stored)
	}
}

func TestThresholdsWithoutMeasurementsFail(t *testing.T) {
	res := &Result{}
	th := Thresholds{MaxLost: 0, MaxDuplicates: -1, MaxFailed: -1, MaxLate: -1, MaxReaderP99: time.Second}
	if th.Check(res) {
		t.Fatal("thresholds on an unmeasured run passed")
	}
	for _, c := range res.Checks {
		if c.OK || c.Value != "not measured" {
			t.Errorf("check %+v", c)
		}
	}
	if !NoThresholds.Check(res) || len(res.Checks) != 0 {
		t.Error("no thresholds should pass with no checks")
	}
}

func TestReportAndJSON(t *testing.T) {
	sink := startSink(t, nil)
	api := startAPI(t, sink)
	sched, err := Burst(BurstSpec{Baseline: 40, Surge: 120, SurgeFor: 400 * time.Millisecond}, ArrivalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := quickConfig(t, sink.addr, sched)
	cfg.API = api.URL
	cfg.Readers = 1
	cfg.ReaderThink = 20 * time.Millisecond
	cfg.Interval = 100 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	th := NoThresholds
	th.MaxLost, th.MaxReaderP99 = 0, time.Minute
	if !th.Check(res) {
		t.Fatalf("checks = %+v", res.Checks)
	}
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	if err := res.WriteJSON(jsonPath); err != nil {
		t.Fatal(err)
	}
	if err := res.WriteReport(htmlPath); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.Counts != res.Counts || back.Audit.Stored != res.Audit.Stored || len(back.Series.Offered) == 0 ||
		len(back.Phases) < 4 || back.Phases[len(back.Phases)-1].Name != PhaseAudit || back.Phases[1].Name != PhaseDuring || back.Phases[1].Start != 400*time.Millisecond || !back.Pass {
		t.Fatalf("JSON round trip: counts %+v, phases %+v, pass %v", back.Counts, back.Phases, back.Pass)
	}
	html, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	h := string(html)
	if n := strings.Count(h, "<svg"); n < 6 {
		t.Errorf("report has %d plots, want 6 or more (load, backlog, queue, workers, sender latency, readers, end-to-end)", n)
	}
	for _, want := range []string{"PASS", "Reader probe by phase", "End-to-end latency", "Queue depth", "Worker concurrency", res.RunID} {
		if !strings.Contains(h, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Opens offline: nothing is fetched.
	for _, bad := range []string{"<script", "<link", "src=", "@import", "url("} {
		if strings.Contains(h, bad) {
			t.Errorf("report contains %q: it must not fetch anything", bad)
		}
	}
	var sum strings.Builder
	if err := res.WriteSummary(&sum); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Did it keep up?", "What did senders see?", "Was anything lost or stored twice?", "lost", "PASS"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
}

// An API without the look-up endpoint (not Levee, or an older one) fails
// the run before any mail is sent, instead of an audit that reports every
// message lost.
func TestRunRefusesAnAPIWithoutLookup(t *testing.T) {
	sink := startSink(t, nil)
	api := startAPI(t, sink)
	cfg := quickConfig(t, sink.addr, mustConstant(t, 50, 100*time.Millisecond))
	cfg.API = api.URL + "/not-levee"
	cfg.Audit.Timeout = time.Minute
	res, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "look-up") || res != nil {
		t.Fatalf("Run = %+v, %v; want no result and an error about the look-up", res, err)
	}
	if msgs, _ := sink.storedCount(); msgs != 0 {
		t.Fatalf("%d messages sent to a run that cannot be audited", msgs)
	}
}

// An --api nobody listens on fails the run before any mail is sent (it
// used to wait out the audit's timeout, print "lost 10" and exit 0).
func TestRunFailsFastWhenAPIIsDown(t *testing.T) {
	sink := startSink(t, nil)
	api := "http://" + deadAddr(t)
	cfg := quickConfig(t, sink.addr, mustConstant(t, 50, 100*time.Millisecond))
	cfg.API = api
	res, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the API") || !strings.Contains(err.Error(), api) {
		t.Fatalf("err = %v, want one saying the API at %s cannot be reached", err, api)
	}
	if res != nil {
		t.Fatalf("a result for a run that never started: %+v", res.Audit)
	}
	if msgs, _ := sink.storedCount(); msgs != 0 {
		t.Fatalf("%d messages sent to a run that cannot be audited", msgs)
	}
}

// An API that stops answering look-ups after the load has begun: the
// audit gives up, says why, reports the messages it could not check as
// unchecked, not lost, and the run fails whatever the thresholds.
func TestAuditThatCannotReachTheAPIFailsTheRun(t *testing.T) {
	sink := startSink(t, nil)
	api := startAPI(t, sink)
	api.down = func(n int) bool { return n > 1 } // the start's check passes, then nothing
	cfg := quickConfig(t, sink.addr, mustConstant(t, 100, 100*time.Millisecond))
	cfg.API = api.URL
	cfg.Audit.Timeout = time.Minute
	cfg.Audit.Unanswered = 300 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "audit") {
		t.Fatalf("err = %v, want the audit's failure", err)
	}
	if res == nil || res.Audit == nil {
		t.Fatalf("no audit in the result: %+v", res)
	}
	a := res.Audit
	if a.Accepted != 10 || a.Lost != 0 || a.Unchecked != 10 || a.Stored != 0 || a.Complete || !strings.Contains(a.Error, "503") {
		t.Fatalf("audit = %+v, want 10 unchecked, none lost, the API's answer in the error", a)
	}
	if NoThresholds.Check(res) {
		t.Fatal("a run whose audit failed passed")
	}
	var sum strings.Builder
	if err := res.WriteSummary(&sum); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FAILED", "unchecked", "10"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum.String())
		}
	}
}

// TestAuditFollowsTheDrainLightly: while the queue drains after the load,
// the audit asks only for the oldest pending messages, not for every one
// each round (which loaded the API exactly while the readers' drain latency
// was measured); once the last message is stored, the drain phase ends and
// what the readers feel from then on is the audit's phase, apart.
func TestAuditFollowsTheDrainLightly(t *testing.T) {
	sink := startSink(t, nil)
	api := startAPI(t, sink)
	api.lag = 700 * time.Millisecond
	cfg := quickConfig(t, sink.addr, mustConstant(t, 400, time.Second))
	cfg.API = api.URL
	cfg.Readers = 2
	cfg.ReaderThink = 5 * time.Millisecond
	// A round that asks for every pending message follows only when the
	// oldest have not turned up for everythingEvery polls: half a second
	// here, so a sender that stalls for a moment on a busy machine does not
	// look like lost mail.
	cfg.Audit.Poll = 50 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Audit; a == nil || !a.Complete || a.Stored != 400 || a.Lost != 0 || a.CatchUp < 0.3 {
		t.Fatalf("audit = %+v, want 400 stored, caught up about 0.7 s after the load", a)
	}
	api.mu.Lock()
	asked := api.askedWhileDraining
	api.mu.Unlock()
	// Asking for every pending message asks for all 400 at the load's end.
	if asked == 0 || asked > 100 {
		t.Errorf("a look-up during the drain asked for %d messages, want 1 to 100", asked)
	}
	var drain, audit *Phase
	for i := range res.Phases {
		switch res.Phases[i].Name {
		case PhaseDrain:
			drain = &res.Phases[i]
		case PhaseAudit:
			audit = &res.Phases[i]
		}
	}
	if drain == nil || audit == nil || drain.End != audit.Start || drain.End <= drain.Start {
		t.Fatalf("phases %+v: want a drain phase, then the audit's from when the last message was stored", res.Phases)
	}
	loadEnd := time.Duration(res.LoadDuration * float64(time.Second))
	if got, want := drain.End-loadEnd, time.Duration(res.Audit.CatchUp*float64(time.Second)); got-want > 10*time.Millisecond || want-got > 10*time.Millisecond {
		t.Errorf("the drain phase ends %s after the load, the audit caught up %s after it", got, want)
	}
	phases := map[string]bool{}
	for _, p := range res.Readers.Phases {
		phases[p.Phase] = true
	}
	if !phases[PhaseDrain] || !phases[PhaseAudit] {
		t.Errorf("reader phases %+v: want drain and audit apart", res.Readers.Phases)
	}
}
