package loadtest

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"time"
)

// Result is everything a run found out; it is the JSON result file. All
// latencies and times are in seconds; T values are offsets from the start.
type Result struct {
	RunID       string    `json:"run_id"`
	Started     time.Time `json:"started"`
	Target      string    `json:"target"`
	API         string    `json:"api,omitempty"`
	Schedule    string    `json:"schedule"`
	Source      string    `json:"source"`
	Connections int       `json:"connections"`
	Pipelining  bool      `json:"pipelining"`
	StartTLS    bool      `json:"starttls"`
	Interrupted bool      `json:"interrupted,omitempty"`

	// LoadDuration is from the start to the last arrival; SendDuration
	// until the last message was accepted or given up.
	LoadDuration float64 `json:"load_duration"`
	SendDuration float64 `json:"send_duration"`

	Counts Counts `json:"counts"`
	// OfferedRate and AcceptedRate are per second over LoadDuration and
	// SendDuration.
	OfferedRate  float64 `json:"offered_rate"`
	AcceptedRate float64 `json:"accepted_rate"`
	// Replies counts every reply that was not 250, by code.
	Replies []ReplyCount `json:"replies"`
	// SMTPLatency is intended arrival -> 250: waiting for a session,
	// retries and the transaction itself, what a sending MTA experiences.
	SMTPLatency Quantiles `json:"smtp_latency"`
	// TransactionLatency is MAIL -> 250 of the accepted attempt alone.
	TransactionLatency Quantiles `json:"transaction_latency"`

	Audit   *AuditResult  `json:"audit,omitempty"`
	Readers *ReaderResult `json:"readers,omitempty"`
	Phases  []Phase       `json:"phases"`
	Series  Series        `json:"series"`
	Queue   []QueuePoint  `json:"queue,omitempty"`
	// QueueScrapeErrors counts failed reads of /api/v1/queue.
	QueueScrapeErrors int `json:"queue_scrape_errors,omitempty"`
	// Server is what the run cost the API process, from its own metrics;
	// nil when they were not there.
	Server *ServerCost `json:"server,omitempty"`

	// Checks are the thresholds given, evaluated by Check.
	Checks []CheckResult `json:"checks,omitempty"`
	// Diagnosis names what bound the run (see Diagnosis).
	Diagnosis *Diagnosis `json:"diagnosis,omitempty"`
	Pass      bool       `json:"pass"`
}

// Counts are message and reply counts. Every offered message ends as
// exactly one of accepted, failed, expired or unsent.
type Counts struct {
	Offered  int64 `json:"offered"`
	Attempts int64 `json:"attempts"`
	Accepted int64 `json:"accepted"`
	// Deferred counts 4xx replies (a message deferred twice counts twice).
	Deferred int64 `json:"deferred"`
	Retries  int64 `json:"retries"`
	// Failed messages got a 5xx.
	Failed int64 `json:"failed"`
	// Expired messages were still refused when their retry time ran out.
	Expired int64 `json:"expired"`
	// Unsent messages were still waiting when the run ended.
	Unsent int64 `json:"unsent"`
	// ConnErrors are failed connection attempts (refused, greeting 4xx).
	ConnErrors int64 `json:"conn_errors"`
	// NetErrors are sessions that broke mid-transaction.
	NetErrors int64 `json:"net_errors"`
	// RcptRejected counts recipients refused with 5xx in messages that
	// were still delivered to their other recipients.
	RcptRejected int64 `json:"rcpt_rejected"`
}

// ReplyCount is how often one reply code was seen.
type ReplyCount struct {
	Reply string `json:"reply"`
	Count int64  `json:"count"`
}

// Series is the run over time, one value per Interval; T is each
// interval's start. Rates are per second. Reader values are -1 where no
// request finished in the interval.
type Series struct {
	Interval  float64   `json:"interval"`
	T         []float64 `json:"t"`
	Scheduled []float64 `json:"scheduled,omitempty"`
	Offered   []float64 `json:"offered"`
	Attempted []float64 `json:"attempted"`
	Accepted  []float64 `json:"accepted"`
	Deferred  []float64 `json:"deferred"`
	Failed    []float64 `json:"failed"`
	// Backlog is arrivals waiting for a session plus deferred messages
	// waiting for their retry; Sessions the open SMTP sessions.
	Backlog  []int64   `json:"backlog"`
	Sessions []int64   `json:"sessions"`
	SMTPP99  []float64 `json:"smtp_p99"`
	// The reader probe's latency has its own, coarser steps of
	// ReaderWindow seconds (starting at ReaderT), so that each p99 is
	// over a few dozen requests; -1 where none finished.
	ReaderWindow float64   `json:"reader_window,omitempty"`
	ReaderT      []float64 `json:"reader_t,omitempty"`
	ReaderP50    []float64 `json:"reader_p50,omitempty"`
	ReaderP99    []float64 `json:"reader_p99,omitempty"`
}

func (r *run) result(sendEnd time.Time, audit *AuditResult, pipelining, interrupted bool) *Result {
	st := r.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	loadEnd := sendEnd
	if ns := r.loadEnd.Load(); ns != 0 {
		loadEnd = time.Unix(0, ns)
	}
	res := &Result{
		RunID: r.runID, Started: r.start, Target: r.cfg.Target, API: r.cfg.API,
		Schedule: r.cfg.Schedule.String(), Source: r.source.String(),
		Connections: r.cfg.Connections, Pipelining: pipelining, StartTLS: r.cfg.StartTLS,
		Interrupted:  interrupted,
		LoadDuration: loadEnd.Sub(r.start).Seconds(),
		SendDuration: sendEnd.Sub(r.start).Seconds(),
		Counts: Counts{
			Offered: st.offered, Attempts: st.attempts, Accepted: st.accepted, Deferred: st.deferred,
			Retries: st.retries, Failed: st.failed, Expired: st.expired, Unsent: st.unsent,
			ConnErrors: st.connErrors, NetErrors: st.netErrors, RcptRejected: st.rcptRejected,
		},
		Replies:            sortedReplies(st.replies),
		SMTPLatency:        st.smtpLat.Summary(),
		TransactionLatency: st.txLat.Summary(),
		Audit:              audit,
	}
	drainEnd := r.drainEnd(loadEnd)
	res.Phases = r.cfg.Schedule.Phases()
	if from := loadEnd.Sub(r.start); drainEnd > from {
		res.Phases = append(res.Phases, Phase{Name: PhaseDrain, Start: from, End: drainEnd})
	}
	if end := time.Since(r.start); end > drainEnd {
		res.Phases = append(res.Phases, Phase{Name: PhaseAudit, Start: drainEnd, End: end})
	}
	if res.LoadDuration > 0 {
		res.OfferedRate = float64(st.offered) / res.LoadDuration
	}
	if res.SendDuration > 0 {
		res.AcceptedRate = float64(st.accepted) / res.SendDuration
	}
	iv := r.cfg.Interval
	n := len(st.buckets)
	s := Series{Interval: iv.Seconds()}
	perSec := 1 / iv.Seconds()
	sched := false
	var last bucket
	for i := range n {
		b := st.buckets[i]
		if !b.sampled { // a tick that came late: the gauges held still
			b.backlog, b.retrying, b.sessions = last.backlog, last.retrying, last.sessions
		}
		last = b
		t := time.Duration(i) * iv
		s.T = append(s.T, t.Seconds())
		if exp := expectedArrivals(r.cfg.Schedule, t, t+iv); !math.IsNaN(exp) {
			s.Scheduled = append(s.Scheduled, exp*perSec)
			sched = true
		}
		s.Offered = append(s.Offered, float64(b.offered)*perSec)
		s.Attempted = append(s.Attempted, float64(b.attempts)*perSec)
		s.Accepted = append(s.Accepted, float64(b.accepted)*perSec)
		s.Deferred = append(s.Deferred, float64(b.deferred)*perSec)
		s.Failed = append(s.Failed, float64(b.failed)*perSec)
		s.Backlog = append(s.Backlog, b.backlog+b.retrying)
		s.Sessions = append(s.Sessions, b.sessions)
		p99 := -1.0
		if b.smtp != nil {
			p99 = b.smtp.Quantile(0.99).Seconds()
		}
		s.SMTPP99 = append(s.SMTPP99, p99)
	}
	if !sched {
		s.Scheduled = nil
	}
	if r.readers != nil {
		w := readerWindow(iv, time.Duration(n)*iv)
		s.ReaderWindow = w.Seconds()
		res.Readers, s.ReaderT, s.ReaderP50, s.ReaderP99 = r.readers.result(w, drainEnd)
	}
	res.Series = s
	if r.scraper != nil {
		res.Queue, res.QueueScrapeErrors = r.scraper.all()
		res.Server = serverCost(res.Queue, st.accepted)
	}
	res.diagnose()
	res.Pass = true
	return res
}

// drainEnd is when the drain phase ended, from the run's start: when the
// last accepted message was stored, if the audit found every one of them
// (the server's clock: on another machine, as right as the clocks agree),
// or else now. The time after it is the audit's.
func (r *run) drainEnd(loadEnd time.Time) time.Duration {
	now := time.Since(r.start)
	c := r.caughtUp.Load()
	if c == 0 {
		return now
	}
	return min(now, max(loadEnd.Sub(r.start), time.Unix(0, c).Sub(r.start)))
}

// ServerCost is the CPU and memory the API process (Levee) spent on the
// run, read from its process_cpu_seconds_total and
// process_resident_memory_bytes: with every role in one process, the whole
// pipeline from SMTP to mailbox.
type ServerCost struct {
	// CPUSeconds is the process's CPU time from the first scrape to the
	// last (after the audit, so it includes the drain and the audit's
	// few look-ups); CPUPerMessage is that divided by the accepted
	// messages, in seconds.
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUPerMessage float64 `json:"cpu_per_message"`
	PeakRSSBytes  float64 `json:"peak_rss_bytes"`
}

func serverCost(points []QueuePoint, accepted int64) *ServerCost {
	var first, last *float64
	var c ServerCost
	for _, p := range points {
		if p.CPUSeconds != nil {
			if first == nil {
				first = p.CPUSeconds
			}
			last = p.CPUSeconds
		}
		if p.RSSBytes != nil {
			c.PeakRSSBytes = max(c.PeakRSSBytes, *p.RSSBytes)
		}
	}
	if first == nil || accepted == 0 {
		return nil
	}
	c.CPUSeconds = *last - *first
	c.CPUPerMessage = c.CPUSeconds / float64(accepted)
	return &c
}

// WriteJSON writes the result file.
func (res *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("loadtest: encode result: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("loadtest: write result: %w", err)
	}
	return nil
}

// readerWindow is the width each reader-latency point is computed over:
// about a sixtieth of the run, at least a second, a whole number of
// intervals.
func readerWindow(iv, run time.Duration) time.Duration {
	w := max(run/60, time.Second, iv)
	return (w + iv - 1) / iv * iv
}
