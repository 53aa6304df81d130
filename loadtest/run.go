package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// run is one load test in progress.
type run struct {
	cfg    Config
	runID  string
	source Source
	start  time.Time
	stats  *stats
	gauges
	arrivals chan *job
	jobs     chan *job
	back     chan *job
	genErr   error

	toPrefix, toSuffix, toLocalSuffix string // --to split around {n} and @
	hasN                              bool

	http     *http.Client
	readers  *readerProbe
	scraper  *scraper
	auditing auditProgress
}

// Run offers the schedule's load to cfg.Target, then audits delivery through
// cfg.API, and returns the result. Cancelling ctx stops the load (arrivals
// not yet accepted count as unsent); the audit of what was accepted still
// runs, bounded by cfg.Audit.Timeout, so an interrupted run still answers
// whether anything was lost. An error means the run could not start (bad
// config, target unreachable) or the schedule failed part way.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, runID: cfg.RunID, source: cfg.Source, http: cfg.HTTPClient}
	if r.runID == "" {
		r.runID = NewRunID()
	}
	if r.source == nil {
		g, err := NewGenerator(SizeDist{}, 0, cfg.Seed, r.runID)
		if err != nil {
			return nil, err
		}
		r.source = g
	}
	if r.http == nil {
		r.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: cfg.Readers + cfg.Audit.Concurrency + 4,
			IdleConnTimeout:     30 * time.Second,
		}}
		defer r.http.CloseIdleConnections()
	}
	r.splitTo()

	// A first session before the clock starts: a wrong address, a server
	// without STARTTLS or a bad certificate fail the run at once instead of
	// turning every arrival into a retry.
	probe, err := dialSession(ctx, r.sessionConfig())
	if err != nil {
		return nil, fmt.Errorf("loadtest: cannot open an SMTP session with %s: %w", cfg.Target, err)
	}
	pipelining := probe.pipelining
	probe.close(true)

	r.start = time.Now()
	r.stats = newStats(r.start, cfg.Interval)
	r.arrivals = make(chan *job, 4096)
	r.jobs = make(chan *job)
	r.back = make(chan *job, cfg.Connections)

	// Observers run from the start until the audit is over.
	obsCtx, stopObservers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopObservers()
	var observers sync.WaitGroup
	if cfg.API != "" {
		r.scraper = newScraper(r)
		observers.Go(func() { r.scraper.loop(obsCtx) })
		if cfg.Readers > 0 {
			r.readers = newReaderProbe(r)
			for i := range cfg.Readers {
				observers.Go(func() { r.readers.loop(obsCtx, i) })
			}
		}
	}
	observers.Go(func() { r.sampleLoop(obsCtx) })
	if cfg.Progress != nil {
		observers.Go(func() { r.progressLoop(obsCtx) })
	}

	var senders sync.WaitGroup
	senders.Go(func() { r.generate(ctx) })
	senders.Go(func() { r.dispatch(ctx) })
	for i := range cfg.Connections {
		senders.Go(func() { r.work(ctx, i) })
	}
	senders.Wait()
	sendEnd := time.Now()

	var audit *AuditResult
	if cfg.API != "" && !cfg.Audit.Disabled {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Audit.Timeout)
		audit = r.audit(actx)
		cancel()
	}
	stopObservers()
	observers.Wait()
	r.progressDone()

	res := r.result(sendEnd, audit, pipelining, ctx.Err() != nil)
	if r.genErr != nil {
		return res, r.genErr
	}
	return res, nil
}

// NewRunID returns a run id from the clock and randomness: it sorts by
// time and never repeats, so that runs against the same Levee do not mix.
func NewRunID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

func (r *run) sessionConfig() sessionConfig {
	return sessionConfig{
		addr: r.cfg.Target, helo: r.cfg.Helo, startTLS: r.cfg.StartTLS, tls: r.cfg.TLS,
		pipelining: !r.cfg.NoPipelining, dialTimeout: r.cfg.DialTimeout, cmdTimeout: r.cfg.CommandTimeout,
	}
}

// splitTo prepares --to for cheap per-message recipients.
func (r *run) splitTo() {
	to := r.cfg.To
	at := strings.LastIndexByte(to, '@')
	local, domain := to[:at], to[at+1:]
	r.toSuffix = domain
	r.toPrefix, r.toLocalSuffix, r.hasN = strings.Cut(local, "{n}")
	if !r.hasN {
		r.toPrefix = local
	}
}

// recipient is address number n (mod Mailboxes), at domain ("" = --to's).
func (r *run) recipient(n uint64, domain string) string {
	if domain == "" {
		domain = r.toSuffix
	}
	if !r.hasN {
		return r.toPrefix + "@" + domain
	}
	return r.toPrefix + strconv.FormatUint(n%uint64(r.cfg.Mailboxes), 10) + r.toLocalSuffix + "@" + domain
}

// recipients spreads consecutive messages over the mailboxes; a message
// for k recipients goes to k consecutive (distinct, when there are enough)
// mailboxes.
func (r *run) recipients(seq uint64, a Arrival) []string {
	k := max(1, a.Rcpts)
	if !r.hasN {
		k = 1 // the same address k times would be one mailbox anyway
	}
	out := make([]string, k)
	for i := range out {
		out[i] = r.recipient(seq+uint64(i), a.Domain)
	}
	return out
}

// phaseAt names the part of the run at offset t.
func (r *run) phaseAt(t time.Duration) string {
	if end := r.loadEnd.Load(); end != 0 && t >= time.Duration(end-r.start.UnixNano()) {
		return PhaseDrain
	}
	for _, p := range r.cfg.Schedule.Phases() {
		if t >= p.Start && t < p.End {
			return p.Name
		}
	}
	if ph := r.cfg.Schedule.Phases(); len(ph) > 0 && t >= ph[len(ph)-1].End {
		return ph[len(ph)-1].Name // the generator is a little behind the clock
	}
	return PhaseLoad
}

// sampleLoop records the gauges once per interval.
func (r *run) sampleLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.stats.sample(now.Add(-r.cfg.Interval/2), r.backlog.Load(), r.retrying.Load(), r.sessions.Load())
		}
	}
}
