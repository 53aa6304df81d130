package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"
)

// readerProbe plays the web app while the load runs: each loop opens a
// page the way a mailbox UI does — folder counts (GET /api/v1/mailboxes),
// the newest messages of one mailbox, then the newest message itself — and
// records every request's latency. The Cyber Monday failure was exactly
// this getting slow while inbound mail surged.
type readerProbe struct {
	r       *run
	mu      sync.Mutex
	samples []readerSample
}

type readerSample struct {
	at    time.Duration // request start, from the run's start
	lat   time.Duration
	phase string
	ok    bool
}

func newReaderProbe(r *run) *readerProbe { return &readerProbe{r: r} }

func (p *readerProbe) loop(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(p.r.cfg.Seed, uint64(i)+0xbeef))
	for ctx.Err() == nil {
		p.view(ctx, rng)
		if d := p.r.cfg.ReaderThink; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

func (p *readerProbe) view(ctx context.Context, rng *rand.Rand) {
	api := p.r.cfg.API
	if !p.get(ctx, api+"/api/v1/mailboxes", nil) {
		return
	}
	addr := p.r.recipient(rng.Uint64N(uint64(p.r.cfg.Mailboxes)), "")
	var page struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
	}
	if !p.get(ctx, api+"/api/v1/mailboxes/"+url.PathEscape(addr)+"/messages?limit=25", &page) || len(page.Messages) == 0 {
		return
	}
	p.get(ctx, api+"/api/v1/messages/"+url.PathEscape(page.Messages[0].ID), nil)
}

// get runs one request and records it. 404 is an answer (a mailbox with no
// mail yet), not an error. It returns whether the view should go on.
func (p *readerProbe) get(ctx context.Context, u string, v any) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	start := time.Now()
	resp, err := p.r.http.Do(req)
	ok := err == nil
	found := false
	if err == nil {
		found = resp.StatusCode == http.StatusOK
		ok = found || resp.StatusCode == http.StatusNotFound
		if found && v != nil {
			if json.NewDecoder(resp.Body).Decode(v) != nil {
				ok, found = false, false
			}
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	lat := time.Since(start)
	if ctx.Err() != nil {
		return false // stopped, not slow: do not record
	}
	at := start.Sub(p.r.start)
	p.mu.Lock()
	p.samples = append(p.samples, readerSample{at: at, lat: lat, phase: p.r.phaseAt(at), ok: ok})
	p.mu.Unlock()
	return found
}

// recentP99 is the 99th percentile over the last window, for the progress line.
func (p *readerProbe) recentP99(now time.Time, window time.Duration) (time.Duration, bool) {
	from := now.Add(-window).Sub(p.r.start)
	h := newHistogram()
	p.mu.Lock()
	for i := len(p.samples) - 1; i >= 0 && p.samples[i].at >= from; i-- {
		h.Record(p.samples[i].lat)
	}
	p.mu.Unlock()
	return h.Quantile(0.99), h.Count() > 0
}

// ReaderResult is the reader probe's latency, overall and per phase.
type ReaderResult struct {
	Readers  int           `json:"readers"`
	Requests uint64        `json:"requests"`
	Errors   uint64        `json:"errors"`
	Latency  Quantiles     `json:"latency"`
	Phases   []ReaderPhase `json:"phases"`
}

// ReaderPhase is the reader latency within one phase of the run.
type ReaderPhase struct {
	Phase   string    `json:"phase"`
	Errors  uint64    `json:"errors"`
	Latency Quantiles `json:"latency"`
}

// result summarises the samples: overall, per phase, and as a series of
// windows `window` wide (wide enough to hold a few dozen requests, so that
// a p99 means something), returned as start times, p50 and p99 in seconds.
// Drain samples from auditFrom on (the last message was stored by then)
// belong to the audit phase.
func (p *readerProbe) result(window, auditFrom time.Duration) (res *ReaderResult, ts, p50, p99 []float64) {
	p.mu.Lock()
	samples := slices.Clone(p.samples)
	p.mu.Unlock()
	for i := range samples {
		if samples[i].phase == PhaseDrain && samples[i].at >= auditFrom {
			samples[i].phase = PhaseAudit
		}
	}
	res = &ReaderResult{Readers: p.r.cfg.Readers}
	all := newHistogram()
	byPhase := map[string]*histogram{}
	errs := map[string]uint64{}
	var order []string
	var perWindow []*histogram
	for _, s := range samples {
		all.Record(s.lat)
		h := byPhase[s.phase]
		if h == nil {
			h = newHistogram()
			byPhase[s.phase] = h
			order = append(order, s.phase)
		}
		h.Record(s.lat)
		if !s.ok {
			res.Errors++
			errs[s.phase]++
		}
		i := max(0, int(s.at/window))
		for len(perWindow) <= i {
			perWindow = append(perWindow, nil)
		}
		if perWindow[i] == nil {
			perWindow[i] = newHistogram()
		}
		perWindow[i].Record(s.lat)
	}
	res.Requests = all.Count()
	res.Latency = all.Summary()
	slices.SortStableFunc(order, func(a, b string) int { return phaseRank(a) - phaseRank(b) })
	for _, ph := range order {
		res.Phases = append(res.Phases, ReaderPhase{Phase: ph, Errors: errs[ph], Latency: byPhase[ph].Summary()})
	}
	for i, h := range perWindow {
		ts = append(ts, (time.Duration(i) * window).Seconds())
		if h == nil {
			p50, p99 = append(p50, -1), append(p99, -1)
			continue
		}
		p50, p99 = append(p50, h.Quantile(0.5).Seconds()), append(p99, h.Quantile(0.99).Seconds())
	}
	return res, ts, p50, p99
}

func phaseRank(p string) int {
	return map[string]int{PhaseBefore: 0, PhaseLoad: 1, PhaseDuring: 2, PhaseAfter: 3, PhaseDrain: 4, PhaseAudit: 5}[p]
}

// worstP99 is the highest per-phase p99: the figure --max-reader-p99
// checks, because a surge that hurts readers only while it lasts must still
// fail the gate.
func (r *ReaderResult) worstP99() (time.Duration, string) {
	var worst float64
	phase := ""
	for _, p := range r.Phases {
		if p.Latency.P99 > worst {
			worst, phase = p.Latency.P99, p.Phase
		}
	}
	return time.Duration(worst * float64(time.Second)), phase
}

func (r *ReaderResult) String() string {
	return fmt.Sprintf("%d requests, %d errors, p99 %s", r.Requests, r.Errors, fmtDur(time.Duration(r.Latency.P99*float64(time.Second))))
}
