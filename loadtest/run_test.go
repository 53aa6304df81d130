package loadtest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestRunDeliversEveryMessageOnceAndAuditsIt(t *testing.T) {
	sink := startSink(t, nil)
	api := startAPI(t, sink)
	cfg := quickConfig(t, sink.addr, mustConstant(t, 200, time.Second))
	cfg.API = api.URL
	cfg.Readers = 2
	cfg.ReaderThink = 10 * time.Millisecond
	cfg.ScrapeEvery = 50 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Counts
	if c.Offered != 200 || c.Accepted != 200 || c.Failed+c.Expired+c.Unsent != 0 {
		t.Fatalf("counts = %+v, want 200 offered and accepted", c)
	}
	if msgs, copies := sink.storedCount(); msgs != 200 || copies != 200 {
		t.Fatalf("sink holds %d messages in %d copies, want 200 and 200", msgs, copies)
	}
	a := res.Audit
	if a == nil || !a.Complete || a.Accepted != 200 || a.Stored != 200 || a.Lost != 0 || a.Duplicated != 0 {
		t.Fatalf("audit = %+v", a)
	}
	if a.EndToEnd.Count != 200 {
		t.Fatalf("end-to-end latency has %d samples, want 200", a.EndToEnd.Count)
	}
	if res.Readers == nil || res.Readers.Requests == 0 || res.Readers.Errors != 0 {
		t.Fatalf("reader probe = %+v", res.Readers)
	}
	if len(res.Queue) == 0 || res.Queue[0].Messages != 7 || res.Queue[0].Workers == nil || *res.Queue[0].Workers != 3 ||
		res.Queue[0].Duty == nil || *res.Queue[0].Duty != 0.25 || res.Queue[0].SMTPSessions == nil || *res.Queue[0].SMTPSessions != 2 {
		t.Fatalf("queue points = %+v", res.Queue)
	}
	// The fake API's CPU time grows half a second a scrape, and every
	// point kept has its metrics.
	for i, p := range res.Queue {
		if p.CPUSeconds == nil {
			t.Fatalf("queue point %d of %d has no CPU time: %+v", i, len(res.Queue), p)
		}
	}
	wantCPU := 0.5 * float64(len(res.Queue)-1)
	if sc := res.Server; sc == nil || sc.CPUSeconds != wantCPU || sc.CPUPerMessage != wantCPU/200 || sc.PeakRSSBytes != 90e6 {
		t.Fatalf("server cost = %+v, want %g s CPU over %d scrapes, %g s a message, peak RSS 90 MB", sc, wantCPU, len(res.Queue), wantCPU/200)
	}
	if !res.Pipelining {
		t.Error("the sink offers PIPELINING but the run did not use it")
	}
	// Sessions are reused: far fewer sessions than messages.
	sink.mu.Lock()
	sessions := sink.sessions
	sink.mu.Unlock()
	if sessions > cfg.Connections+1 { // +1: the probe session before the start
		t.Errorf("%d SMTP sessions for 200 messages on %d connections: sessions are not reused", sessions, cfg.Connections)
	}
	// Every message carries its unique id twice.
	sink.mu.Lock()
	for mid, body := range sink.bodies {
		if lt := headerValue(body, "X-Levee-Loadtest-Id"); !strings.HasPrefix(mid, lt+"@") {
			t.Errorf("Message-ID %s and X-Levee-Loadtest-Id %s differ", mid, lt)
		}
	}
	sink.mu.Unlock()
}

func TestRunRetries4xxUntilAccepted(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		t.Run(map[bool]string{true: "pipelining", false: "stepwise"}[pipelining], func(t *testing.T) {
			sink := startSink(t, func(s *sinkServer) {
				// Every message is refused twice, as by a full queue.
				s.data = func(_ string, attempt int) error {
					if attempt <= 2 {
						return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Mail system full"}
					}
					return nil
				}
			})
			api := startAPI(t, sink)
			cfg := quickConfig(t, sink.addr, mustConstant(t, 100, 500*time.Millisecond))
			cfg.API = api.URL
			cfg.NoPipelining = !pipelining
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := res.Counts
			if c.Offered != 50 || c.Accepted != 50 || c.Deferred != 100 || c.Retries != 100 || c.Attempts != 150 {
				t.Fatalf("counts = %+v, want 50 offered and accepted after 100 deferrals", c)
			}
			if len(res.Replies) != 1 || res.Replies[0].Reply != "452 4.3.1" || res.Replies[0].Count != 100 {
				t.Fatalf("replies = %+v", res.Replies)
			}
			if res.Audit.Lost != 0 || res.Audit.Duplicated != 0 || res.Audit.Stored != 50 {
				t.Fatalf("audit = %+v", res.Audit)
			}
			if res.Pipelining != pipelining {
				t.Fatalf("pipelining = %v, want %v", res.Pipelining, pipelining)
			}
		})
	}
}

func TestRun5xxFailsAndDeferralsExpire(t *testing.T) {
	sink := startSink(t, func(s *sinkServer) {
		s.data = func(mid string, attempt int) error {
			switch {
			case strings.HasPrefix(mid, "0."), strings.HasPrefix(mid, "1."):
				return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "no"}
			case strings.HasPrefix(mid, "2."):
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
			}
			return nil
		}
	})
	cfg := quickConfig(t, sink.addr, mustConstant(t, 20, 500*time.Millisecond))
	cfg.Retry.GiveUpAfter = 300 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Counts
	if c.Offered != 10 || c.Failed != 2 || c.Expired != 1 || c.Accepted != 7 || c.Deferred < 2 {
		t.Fatalf("counts = %+v, want 10 offered: 2 failed, 1 expired, 7 accepted", c)
	}
	th := NoThresholds
	th.MaxFailed = 1
	if th.Check(res) {
		t.Fatalf("--max-failed 1 passed with %d failures: %+v", c.Failed, res.Checks)
	}
	th.MaxFailed = 2
	if !th.Check(res) {
		t.Fatalf("--max-failed 2 failed with %d failures: %+v", c.Failed, res.Checks)
	}
}

func TestRunPartialRecipientRefusal(t *testing.T) {
	sink := startSink(t, nil)
	cfg := quickConfig(t, sink.addr, &fixedSchedule{arrivals: []Arrival{{Rcpts: 3}, {Rcpts: 1, Domain: "refused.test"}}})
	for _, noPipe := range []bool{false, true} {
		cfg.NoPipelining = noPipe
		cfg.RunID = map[bool]string{false: "pipe", true: "step"}[noPipe]
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c := res.Counts; c.Accepted != 1 || c.Failed != 1 {
			t.Fatalf("no-pipelining=%v: counts = %+v, want the 3-recipient message accepted and the refused one failed", noPipe, c)
		}
		sink.mu.Lock()
		got := sink.rcpts["0."+cfg.RunID+"@loadtest.levee"]
		sink.mu.Unlock()
		if strings.Join(got, ",") != "rcpt0@example.test,rcpt1@example.test,rcpt2@example.test" {
			t.Fatalf("recipients = %v", got)
		}
	}
	// After the refused transaction the session was reset before reuse.
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.resets == 0 {
		t.Error("no RSET after a refused transaction")
	}
}

func TestRunFailsFastWhenTargetIsDown(t *testing.T) {
	_, err := Run(context.Background(), quickConfig(t, deadAddr(t), mustConstant(t, 10, time.Second)))
	if err == nil || !strings.Contains(err.Error(), "cannot open an SMTP session") {
		t.Fatalf("err = %v", err)
	}
}

func TestRunInterruptedStillAudits(t *testing.T) {
	sink := startSink(t, nil)
	api := startAPI(t, sink)
	cfg := quickConfig(t, sink.addr, mustConstant(t, 100, time.Minute))
	cfg.API = api.URL
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("an interrupted run took %s", time.Since(start))
	}
	if !res.Interrupted || res.Counts.Accepted == 0 || res.Counts.Offered > 60 {
		t.Fatalf("interrupted=%v counts=%+v", res.Interrupted, res.Counts)
	}
	if res.Counts.Offered != res.Counts.Accepted+res.Counts.Unsent {
		t.Fatalf("offered %d != accepted %d + unsent %d", res.Counts.Offered, res.Counts.Accepted, res.Counts.Unsent)
	}
	if res.Audit == nil || res.Audit.Lost != 0 || res.Audit.Stored != res.Counts.Accepted {
		t.Fatalf("audit after interrupt = %+v", res.Audit)
	}
}

func TestConfigValidateNamesTheFlag(t *testing.T) {
	sched := mustConstant(t, 1, time.Second)
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Target = "nohost" }, "--target"},
		{func(c *Config) { c.API = "ftp://x" }, "--api"},
		{func(c *Config) { c.To = "no-at-sign" }, "--to"},
		{func(c *Config) { c.Connections = -1 }, "--connections"},
		{func(c *Config) { c.Readers = 2 }, "--readers"},
		{func(c *Config) { c.Retry = RetryPolicy{Initial: time.Second, Max: time.Millisecond} }, "--retry-initial"},
		{func(c *Config) { c.Schedule = nil }, "schedule"},
	} {
		c := Config{Target: "127.0.0.1:25", Schedule: sched}
		tc.mut(&c)
		err := c.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
	if err := (Config{Target: "127.0.0.1:25", Schedule: sched}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// fixedSchedule offers the given arrivals at once.
type fixedSchedule struct {
	arrivals []Arrival
	i        int
}

func (f *fixedSchedule) Next() (Arrival, error) {
	if f.i >= len(f.arrivals) {
		f.i = 0 // reusable across runs in one test
		return Arrival{}, io.EOF
	}
	f.i++
	return f.arrivals[f.i-1], nil
}
func (f *fixedSchedule) Phases() []Phase              { return []Phase{{Name: PhaseLoad, End: time.Millisecond}} }
func (f *fixedSchedule) Duration() time.Duration      { return time.Millisecond }
func (f *fixedSchedule) RateAt(time.Duration) float64 { return 0 }
func (f *fixedSchedule) String() string               { return "fixed" }

// Against a Levee with http.read_token, the audit and the reader probe send
// --api-token; without it the run stops before sending, saying what is
// missing (it would otherwise count every message lost).
func TestRunSendsTheAPIToken(t *testing.T) {
	sink := startSink(t, nil)
	api := startAPI(t, sink)
	api.mu.Lock()
	api.token = "r3ad-tok"
	api.mu.Unlock()

	cfg := quickConfig(t, sink.addr, mustConstant(t, 50, 100*time.Millisecond))
	cfg.API = api.URL
	cfg.Readers = 1
	cfg.ReaderThink = 10 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err == nil || res != nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "--api-token") {
		t.Fatalf("Run without the token = %+v, %v; want no result and an error naming 401 and --api-token", res, err)
	}
	if msgs, _ := sink.storedCount(); msgs != 0 {
		t.Fatalf("%d messages sent to a run that cannot be audited", msgs)
	}
	// The readers alone, without the audit, are refused before the start too.
	cfg.Audit.Disabled = true
	if res, err := Run(context.Background(), cfg); err == nil || res != nil || !strings.Contains(err.Error(), "--api-token") {
		t.Fatalf("Run of readers without the token = %+v, %v; want an error naming --api-token", res, err)
	}

	cfg.Audit.Disabled = false
	cfg.APIToken = "r3ad-tok"
	client := &http.Client{Timeout: 10 * time.Second}
	cfg.HTTPClient = client
	res, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Audit; a == nil || !a.Complete || a.Accepted != 5 || a.Stored != 5 || a.Lost != 0 {
		t.Fatalf("audit = %+v, want all 5 stored", a)
	}
	if res.Readers == nil || res.Readers.Requests == 0 || res.Readers.Errors != 0 {
		t.Fatalf("reader probe = %+v, want requests and no errors", res.Readers)
	}
	if client.Transport != nil {
		t.Error("the caller's client was changed")
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	if api.refused != 2 || api.reads == 0 {
		t.Errorf("the API refused %d requests (want the 2 probes of the runs without the token) and served %d reads", api.refused, api.reads)
	}
}
