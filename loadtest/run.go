package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// caughtUp is when the last accepted message was stored (UnixNano),
	// set by an audit that found every one; 0 otherwise.
	caughtUp atomic.Int64
}

// Run offers the schedule's load to cfg.Target, then audits delivery through
// cfg.API, and returns the result. Cancelling ctx stops the load (arrivals
// not yet accepted count as unsent); the audit of what was accepted still
// runs, bounded by cfg.Audit.Timeout, so an interrupted run still answers
// whether anything was lost. An error means the run could not start (bad
// config, target or API unreachable), the schedule failed part way or the
// audit could not reach the API (then the result says what it checked).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r, err := newRun(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.HTTPClient == nil { // ours: free its connections; a caller's stays as it was
		defer r.http.CloseIdleConnections()
	}
	if err := r.probeAPI(ctx); err != nil {
		return nil, err
	}
	pipelining, err := r.probeTarget(ctx)
	if err != nil {
		return nil, err
	}

	r.start = time.Now()
	r.stats = newStats(r.start, cfg.Interval)
	r.arrivals = make(chan *job, 4096)
	r.jobs = make(chan *job)
	r.back = make(chan *job, cfg.Connections)

	// Observers run from the start until the audit is over.
	obsCtx, stopObservers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopObservers()
	observers := r.startObservers(obsCtx)
	sendEnd := r.offerLoad(ctx)
	audit := r.auditDelivery(ctx)
	stopObservers()
	observers.Wait()
	r.progressDone()

	res := r.result(sendEnd, audit, pipelining, ctx.Err() != nil)
	if r.genErr != nil {
		return res, r.genErr
	}
	if audit != nil && audit.Error != "" {
		return res, fmt.Errorf("loadtest: the audit failed: %s", audit.Error)
	}
	return res, nil
}

// newRun fills in what cfg leaves to the run: its id, the default message
// source and an HTTP client sized for the readers and the audit.
func newRun(cfg Config) (*run, error) {
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
	}
	if cfg.APIToken != "" {
		r.http = withBearer(r.http, cfg.API, cfg.APIToken)
	}
	r.splitTo()
	return r, nil
}

// withBearer is a copy of c (the caller's client is left as it was) that
// sends token to the API's host, and only there: not along a redirect to
// another host.
func withBearer(c *http.Client, api, token string) *http.Client {
	host := ""
	if u, err := url.Parse(api); err == nil {
		host = u.Host
	}
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cc := *c
	cc.Transport = &bearerTransport{base: base, host: host, token: token}
	return &cc
}

type bearerTransport struct {
	base        http.RoundTripper
	host, token string
}

func (t *bearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host || req.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(req)
	}
	req = req.Clone(req.Context()) // a RoundTripper must not change the request
	req.Header.Set("Authorization", "Bearer "+t.token)
	return t.base.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport underneath.
func (t *bearerTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// probeTarget opens a first session before the clock starts: a wrong
// address, a server without STARTTLS or a bad certificate fail the run at
// once instead of turning every arrival into a retry. It reports whether
// the sessions will pipeline, for the result.
func (r *run) probeTarget(ctx context.Context) (pipelining bool, err error) {
	probe, err := dialSession(ctx, r.sessionConfig())
	if err != nil {
		return false, fmt.Errorf("loadtest: cannot open an SMTP session with %s: %w", r.cfg.Target, err)
	}
	pipelining = probe.pipelining
	probe.close(true)
	return pipelining, nil
}

// probeAPI asks the API once before the clock starts, as the audit will (or
// as the readers will, or for /healthz when there is neither): a wrong
// --api or --api-token fails the run at once, not after the load and the
// audit's timeout with every message counted lost.
func (r *run) probeAPI(ctx context.Context) error {
	if r.cfg.API == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	switch {
	case !r.cfg.Audit.Disabled:
		_, err = r.lookup(ctx, []string{"probe." + r.runID + "@loadtest.levee"})
	case r.cfg.Readers > 0:
		var uerr *url.Error
		if err = r.getOK(ctx, "/api/v1/mailboxes"); err != nil && !errors.As(err, &uerr) {
			err = fmt.Errorf("%w (with http.read_token set on the server, give it in --api-token or $LEVEE_HTTP_READ_TOKEN)", err)
		}
	default:
		err = r.getOK(ctx, "/healthz")
	}
	var uerr *url.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errLookupUnsupported):
		return fmt.Errorf("loadtest: the API at %s cannot answer the audit: %w", r.cfg.API, err)
	case errors.As(err, &uerr):
		return fmt.Errorf("loadtest: cannot reach the API at %s: %w", r.cfg.API, err)
	}
	return fmt.Errorf("loadtest: the API at %s is not answering: %w", r.cfg.API, err)
}

// getOK GETs path from the API and wants a 200.
func (r *run) getOK(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.cfg.API+path, nil)
	if err != nil {
		return err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// startObservers starts what watches the run without taking part in it:
// the queue scraper and the reader probe (which need the API), the gauge
// sampler and the progress line. They run until ctx ends; wait for them
// on the returned group.
func (r *run) startObservers(ctx context.Context) *sync.WaitGroup {
	var observers sync.WaitGroup
	if r.cfg.API != "" {
		r.scraper = newScraper(r)
		observers.Go(func() { r.scraper.loop(ctx) })
		if r.cfg.Readers > 0 {
			r.readers = newReaderProbe(r)
			for i := range r.cfg.Readers {
				observers.Go(func() { r.readers.loop(ctx, i) })
			}
		}
	}
	observers.Go(func() { r.sampleLoop(ctx) })
	if r.cfg.Progress != nil {
		observers.Go(func() { r.progressLoop(ctx) })
	}
	return &observers
}

// offerLoad runs the generator, the dispatcher and the workers until every
// arrival is accepted, failed, expired or unsent, and returns when that was.
func (r *run) offerLoad(ctx context.Context) time.Time {
	var senders sync.WaitGroup
	senders.Go(func() { r.generate(ctx) })
	senders.Go(func() { r.dispatch(ctx) })
	for i := range r.cfg.Connections {
		senders.Go(func() { r.work(ctx, i) })
	}
	senders.Wait()
	return time.Now()
}

// auditDelivery audits delivery when there is an API to ask and the
// audit is wanted; nil otherwise. It runs even when ctx was cancelled,
// within its own timeout, because an interrupted run must still tell
// whether what it had accepted was lost.
func (r *run) auditDelivery(ctx context.Context) *AuditResult {
	if r.cfg.API == "" || r.cfg.Audit.Disabled {
		return nil
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Audit.Timeout)
	defer cancel()
	return r.audit(actx)
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
