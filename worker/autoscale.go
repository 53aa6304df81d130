package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Backlog reports the mail waiting for the workers: messages not yet
// acknowledged (pending plus delivered-but-unacked) and the age of the
// oldest. *queue.Queue is one; an error makes the autoscaler hold.
type Backlog interface {
	Backlog(ctx context.Context) (messages uint64, oldest time.Duration, err error)
}

// Clock is the autoscaler's time; tests pass a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// pool is what the autoscaler scales; *Worker is one.
type pool interface {
	Concurrency() int
	SetConcurrency(n int)
}

// Decision is one autoscaler step, for logs and tests.
type Decision struct {
	At      time.Time
	Current int // loops running before the step
	// Wanted is what the backlog asks for, within [Min, Max], after the
	// scale-down delay.
	Wanted int
	// Limit is what the store's latency allows.
	Limit int
	// Next is min(Wanted, Limit) within [Min, Max]: the loops after the step.
	Next    int
	Backlog uint64
	Oldest  time.Duration
	// Arrival is messages per second joining the backlog (median of the
	// last intervals); PerLoop is messages per second one loop handles
	// while it has mail (smoothed; 0 until measured).
	Arrival, PerLoop float64
	// P95 is the store write p95 of the evidence the limit was judged on:
	// writes since the last concurrency change, within the latency window.
	// Samples is how many writes that is.
	P95     time.Duration
	Samples int
	Reason  string
}

const (
	// tolerance ignores a wanted level within 10% of the current one.
	tolerance = 0.1
	// perLoopAlpha smooths the per-loop throughput across intervals.
	perLoopAlpha = 0.3
	// arrivalSamples intervals give the arrival rate by their median, so
	// that a burst landing in one interval counts once (as backlog), not
	// again as a lasting rate.
	arrivalSamples = 5
)

// Autoscaler sets a worker's concurrency each Interval. The backlog asks for
// enough loops to take the arriving mail plus drain what waits within
// TargetDrain, at the throughput one loop was measured to reach; the store's
// write latency caps that (see limiter), so that draining a backlog never
// pushes the database past its latency budget. An optional ceiling on
// writes per second (worker.max_writes_per_second) is enforced by the
// worker itself; the autoscaler only avoids starting loops that would wait
// on it.
//
// The drain target is judged afresh each interval (as the backlog shrinks,
// fewer loops are asked for), and loops stop only after ScaleDownDelay, so
// a backlog drains in about TargetDrain rather than exactly in it.
//
// While it runs it owns the worker's concurrency.
type Autoscaler struct {
	cfg     AutoscaleConfig
	pool    pool
	stats   *loopStats
	batch   int
	ceiling float64
	backlog Backlog
	readers ReaderLatency
	clock   Clock
	metrics *autoscaleMetrics
	log     *slog.Logger

	mu           sync.Mutex
	started      bool
	lastStep     time.Time
	prevBacklog  uint64
	havePrev     bool
	window       []interval // oldest first, within LatencyWindow
	evidenceFrom time.Time  // intervals starting before this predate the current concurrency
	perLoop      float64
	arrivals     []float64
	recent       []wantedAt // within ScaleDownDelay, wanted decreasing
	lim          limiter
	idle         idleBaselines // the store's write p95s (autoscale_budget.go)
	duty         float64       // the loops' duty cycle (pace.go)
	catchingUp   bool          // on a late backlog (pace.go)
	dutyCut      time.Time     // when it last dropped
	backlogDown  bool          // the last Backlog call failed
	last         Decision
}

type interval struct {
	start, end time.Time
	samples    sampleSet
}

type wantedAt struct {
	at     time.Time
	wanted int
}

// AutoscalerDeps is what an Autoscaler reads and reports to.
type AutoscalerDeps struct {
	// Backlog is required: the queue (*queue.Queue).
	Backlog Backlog
	// Clock nil means the real one (tests pass a fake).
	Clock Clock
	// Registerer nil keeps the metrics in a registry of their own.
	Registerer prometheus.Registerer
	// Log nil means slog.Default().
	Log *slog.Logger
	// Readers, when set, is the web app's read latency (the web role in
	// the same process, *web.Server): the limit then also keeps it within
	// ReaderBudget times its idle p99.
	Readers ReaderLatency
}

// ReaderLatency is the read p99 the web app's readers feel now (over a
// window that started at since), and their idle baseline; ok false while
// there is too little reading to judge.
type ReaderLatency interface {
	ReadLatency() (recent, idle time.Duration, since time.Time, ok bool)
}

// NewAutoscaler returns an autoscaler for w; call Run.
func NewAutoscaler(cfg AutoscaleConfig, w *Worker, deps AutoscalerDeps) (*Autoscaler, error) {
	return newAutoscaler(cfg, w.scaled(), deps)
}

// scaled is what the autoscaler scales and measures: a pool of loops, the
// stats they record, their batch size and the write ceiling they obey.
type scaled struct {
	pool    pool
	stats   *loopStats
	batch   int
	ceiling float64
}

func (w *Worker) scaled() scaled {
	return scaled{pool: w, stats: &w.stats, batch: w.cfg.BatchSize, ceiling: w.cfg.MaxWritesPerSecond}
}

func newAutoscaler(cfg AutoscaleConfig, s scaled, deps AutoscalerDeps) (*Autoscaler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Backlog == nil {
		return nil, errors.New("worker: NewAutoscaler: nil Backlog")
	}
	if deps.Clock == nil {
		deps.Clock = realClock{}
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	m, err := newAutoscaleMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	m.duty.Set(1)
	return &Autoscaler{cfg: cfg, pool: s.pool, stats: s.stats, batch: max(s.batch, 1), ceiling: s.ceiling, duty: 1,
		backlog: deps.Backlog, readers: deps.Readers, clock: deps.Clock, metrics: m, log: deps.Log, idle: newIdleBaselines()}, nil
}

// Run steps every Interval until ctx ends.
func (a *Autoscaler) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.clock.After(a.cfg.Interval):
		}
		if ctx.Err() != nil {
			return
		}
		a.Step(ctx)
	}
}

// Last is the latest decision (zero before the first step), for status pages.
func (a *Autoscaler) Last() Decision {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// Step takes the loops' samples since the last step, reads the backlog,
// decides, and applies the decision.
func (a *Autoscaler) Step(ctx context.Context) Decision {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock.Now()
	cur := a.pool.Concurrency()
	if !a.started {
		a.started = true
		a.lastStep, a.evidenceFrom = now, now
		a.lim = newLimiter(a.cfg, cur)
		// Loops already running count as recently wanted, so that they are
		// not stopped before ScaleDownDelay.
		a.recent = append(a.recent, wantedAt{now, cur})
	}
	s := a.stats.take()
	dt := now.Sub(a.lastStep).Seconds()
	a.remember(now, s)
	a.recordIdle(now, &s)
	if v := a.perLoopSample(s); v > 0 {
		if a.perLoop == 0 {
			a.perLoop = v
		} else {
			a.perLoop += perLoopAlpha * (v - a.perLoop)
		}
	}

	bctx, cancel := context.WithTimeout(ctx, max(a.cfg.Interval, time.Second))
	b, oldest, berr := a.backlog.Backlog(bctx)
	cancel()
	if berr == nil && a.havePrev && dt > 0 {
		// What left the backlog was stored; the rest of the change arrived.
		rate := (float64(b) - float64(a.prevBacklog) + float64(s.stored)) / dt
		a.arrivals = append(a.arrivals, max(rate, 0))
		if len(a.arrivals) > arrivalSamples {
			a.arrivals = a.arrivals[1:]
		}
	}

	d := Decision{At: now, Current: cur, Backlog: b, Oldest: oldest, Arrival: median(a.arrivals), PerLoop: a.perLoop}
	var why []string
	d.Wanted = a.want(now, cur, b, oldest, berr, d.Arrival, &why)

	ev := a.evidence(now)
	var readersJudged bool
	ev.readers, readersJudged = a.readersOver()
	late := berr == nil && b > 0 && oldest >= a.cfg.TargetDrain
	// hurry says why the loops must not rest (pace.go); an unknown
	// backlog keeps the pace as it was.
	hurry := ""
	if berr == nil {
		hurry = a.catchUp(cur, b, oldest)
	} else if a.catchingUp {
		hurry = "catching up"
	}
	if late {
		// Mail is late: the readers no longer set the pace (the store's
		// write budget still does), so that no reader holds mail back
		// longer than target_drain, neither by resting the loops nor by
		// keeping them few.
		if ev.readers != "" {
			why = append(why, "messages older than target_drain: "+ev.readers+", ignored")
		}
		ev.readers, readersJudged = "", true
		a.lim.excuseReaders()
	}
	d.P95, d.Samples = ev.p95, ev.writes
	oldLimit, oldDuty := a.lim.limit, a.duty
	over := a.lim.over(ev)
	slowed := a.duty < 1
	if r := a.pace(now, cur, hurry, over, ev.writes >= minEvidence, readersJudged); r != "" {
		why = append(why, r)
	}
	if !slowed || over {
		// Full speed comes back before more loops do.
		if r := a.lim.update(now, cur, ev); r != "" {
			why = append(why, r)
		}
	}
	d.Limit = a.lim.limit
	d.Next = min(max(min(d.Wanted, d.Limit), a.cfg.Min), a.cfg.Max)
	d.Reason = strings.Join(why, "; ")

	if d.Next != cur {
		a.pool.SetConcurrency(d.Next)
		if got := a.pool.Concurrency(); got != cur {
			d.Next = got
			a.changed(now, cur, got)
		} else {
			d.Next = cur // the worker is shutting down
		}
	}
	// A breach at the floor changes nothing but is worth a line too, and
	// so is a change of pace.
	if d.Next != cur || d.Limit != oldLimit || a.duty != oldDuty || a.lim.lastDecrease.Equal(now) {
		a.log.Debug("worker: autoscale",
			"current", cur, "next", d.Next, "wanted", d.Wanted, "limit", d.Limit,
			"backlog", b, "oldest", oldest, "arrival_per_s", round1(d.Arrival), "per_loop_per_s", round1(d.PerLoop),
			"p95", d.P95, "samples", d.Samples, "budget", ev.budget, "writes", ev.kind.String(), "reason", d.Reason)
	}

	a.metrics.wanted.Set(float64(d.Wanted))
	a.metrics.limit.Set(float64(d.Limit))
	p95, budget := a.windowP95(now)
	a.metrics.p95.Set(p95.Seconds())
	a.metrics.budget.Set(budget.Seconds())
	a.lastStep, a.last = now, d
	// The arrival rate needs two readings one interval apart.
	a.prevBacklog, a.havePrev = b, berr == nil
	return d
}

// perLoopSample is the messages per second one loop handled while it had
// mail, in this interval; 0 if unknown. Full batches measure it. Partial
// batches alone would understate it (a loop that finds 3 messages does 3,
// not a batch), and more loops mean smaller batches: measured that way,
// adding loops would ask for still more. So partial batches count as if
// full, which overstates what a loop can do; too few loops then fill their
// batches, and full batches correct the figure.
func (a *Autoscaler) perLoopSample(s sampleSet) float64 {
	switch {
	case s.fullMsgs > 0 && s.fullBusy > 0:
		return float64(s.fullMsgs) / s.fullBusy.Seconds()
	case s.partBatches > 0 && s.partBusy > 0:
		return float64(s.partBatches*a.batch) / s.partBusy.Seconds()
	}
	return 0
}

// want is what the backlog asks for, within [Min, Max].
func (a *Autoscaler) want(now time.Time, cur int, b uint64, oldest time.Duration, berr error, arrival float64, why *[]string) int {
	lo, hi := a.cfg.Min, a.cfg.Max
	clamp := func(n int) int { return min(max(n, lo), hi) }
	if berr != nil {
		// Fail closed: an unknown backlog is no reason to start loops (a
		// missing consumer must not look like an infinite backlog).
		if !a.backlogDown {
			a.log.Warn("worker: autoscale: backlog unknown, holding concurrency until it can be read", "err", berr)
		}
		a.backlogDown = true
		*why = append(*why, "backlog unknown: holding")
		return clamp(cur)
	}
	if a.backlogDown {
		a.log.Info("worker: autoscale: backlog readable again")
		a.backlogDown = false
	}
	if b > 0 {
		lo = max(lo, 1)
	}
	var wanted int
	switch {
	case b == 0 && (arrival == 0 || a.perLoop == 0):
		wanted = lo
	case a.perLoop == 0:
		// Nothing measured yet: one more loop per interval until it is.
		*why = append(*why, "no throughput measured yet: one more loop")
		wanted = cur + 1
	default:
		raw := (arrival + float64(b)/a.cfg.TargetDrain.Seconds()) / a.perLoop
		wanted = ceilTo(raw, hi)
		if cur > 0 && math.Abs(raw-float64(cur)) <= tolerance*float64(cur) {
			wanted = cur
		}
		if oldest > a.cfg.TargetDrain && b > uint64(cur*a.batch) {
			// Mail is late: add loops until it is not (the store's budget
			// caps them). The formula above is no help here, shrinking or
			// not: judged afresh each interval, it aims to drain what waits
			// within another target_drain from now, a deadline that slides
			// with the clock, so a backlog left by a surge drained in 1.4x
			// target_drain after it on a slow machine (issue 11), all of it
			// late. With one more loop per interval it drains as fast as the
			// store allows once late.
			*why = append(*why, "messages older than target_drain: one more loop")
			wanted = max(wanted, cur+1)
		}
		if a.ceiling > 0 {
			// Loops beyond what the write ceiling feeds would only wait on it.
			wanted = min(wanted, ceilTo(a.ceiling/a.perLoop, hi))
		}
	}
	wanted = clamp(wanted)

	// Scale down only to the most any step asked for within ScaleDownDelay.
	// recent keeps only the steps that can still be that most (each asked
	// for more than every later one), so it holds at most Max+1 entries.
	for len(a.recent) > 0 && a.recent[len(a.recent)-1].wanted <= wanted {
		a.recent = a.recent[:len(a.recent)-1]
	}
	a.recent = append(a.recent, wantedAt{now, wanted})
	for now.Sub(a.recent[0].at) > a.cfg.ScaleDownDelay {
		a.recent = a.recent[1:]
	}
	if wanted < cur {
		most := a.recent[0].wanted
		if most > wanted {
			*why = append(*why, "scale-down delayed")
		}
		wanted = clamp(min(most, cur))
	}
	return wanted
}

// remember adds the interval that ends now and forgets those older than the window.
func (a *Autoscaler) remember(now time.Time, s sampleSet) {
	a.window = append(a.window, interval{start: a.lastStep, end: now, samples: s})
	from := now.Add(-a.cfg.LatencyWindow)
	i := 0
	for i < len(a.window)-1 && (a.window[i].end.Before(from) || len(a.window)-i > maxWindowIntervals) {
		i++
	}
	a.window = slices.Delete(a.window, 0, i)
}

// evidence merges the writes made since concurrency last changed and
// judges them (judgeWrites).
func (a *Autoscaler) evidence(now time.Time) evidence {
	all, full, ev := a.writesSince(a.evidenceFrom)
	ev.p95, ev.budget, ev.kind = a.judgeWrites(now, &all, &full)
	return ev
}

// windowP95 is the write p95 of the whole latency window and its budget,
// as judgeWrites judges them, for the gauges.
func (a *Autoscaler) windowP95(now time.Time) (p95, budget time.Duration) {
	all, full, _ := a.writesSince(time.Time{})
	p95, budget, _ = a.judgeWrites(now, &all, &full)
	return p95, budget
}

// writesSince merges the writes of the intervals that started at or after
// from: their latencies (full: those of full batches) and counts.
func (a *Autoscaler) writesSince(from time.Time) (all, full latencyHist, ev evidence) {
	for i := range a.window {
		iv := &a.window[i]
		if iv.start.Before(from) {
			continue
		}
		all.add(&iv.samples.lat)
		full.add(&iv.samples.full)
		ev.writes += iv.samples.writes
		ev.failed += iv.samples.failed
	}
	return all, full, ev
}

// changed records a concurrency change. Writes made before it no longer
// describe the store at the new level; after a decrease the next interval
// is left out as well, because the stopped loops finish their batches in it.
func (a *Autoscaler) changed(now time.Time, from, to int) {
	a.evidenceFrom = now
	dir := "up"
	if to < from {
		dir = "down"
		a.evidenceFrom = now.Add(time.Nanosecond)
	}
	a.metrics.changes.WithLabelValues(dir).Inc()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ceilTo is ceil(x) as an int, at most hi (x may be huge when a loop
// measured very slow).
func ceilTo(x float64, hi int) int {
	x = math.Ceil(x - 1e-9)
	if !(x < float64(hi)) {
		return hi
	}
	return int(x)
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// readersOver says why the readers are over their budget, "" when they are
// within it or not measured; judged is false while the readers are
// measured but their latest window began before the last change (of
// concurrency or duty cycle), so that it does not yet say how the readers
// fare at the new level.
func (a *Autoscaler) readersOver() (why string, judged bool) {
	if a.readers == nil || a.cfg.ReaderBudget < 1 {
		return "", true
	}
	recent, idle, since, ok := a.readers.ReadLatency()
	if !ok {
		return "", true // too few reads to judge by: no reader to protect
	}
	if since.Before(a.evidenceFrom) {
		// A window that began before concurrency last changed judges the
		// old level, which the limiter already acted on.
		return "", false
	}
	limit := max(time.Duration(a.cfg.ReaderBudget*float64(idle)), a.cfg.ReaderFloor)
	if recent <= limit {
		return "", true
	}
	return fmt.Sprintf("reader p99 %s over %gx its idle %s (and over %s)", recent, a.cfg.ReaderBudget, idle, a.cfg.ReaderFloor), true
}
