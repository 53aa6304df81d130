package worker

import (
	"slices"
	"time"
)

// The derived store write budget (worker.autoscale.latency_budget 0):
// idle is the 10th percentile of the write p95s of the intervals of the
// last idleSpan that saw at least minEvidence writes; until idleIntervals
// of them exist the budget is startBudget.
const (
	idleSpan      = 30 * time.Minute
	idleIntervals = 60
	startBudget   = 100 * time.Millisecond
)

// writeIdle remembers the write p95 of recent intervals, to know how fast
// the store is when nothing crowds it: its lowest decile, since the minimum
// would be one lucky interval.
type writeIdle struct {
	p95s []timedP95 // oldest first, within idleSpan
}

type timedP95 struct {
	end time.Time
	p95 time.Duration
}

// add records an interval's writes; too few to judge by are left out.
func (w *writeIdle) add(end time.Time, s *sampleSet) {
	if s.writes >= minEvidence {
		w.p95s = append(w.p95s, timedP95{end, s.lat.quantile(0.95)})
	}
	i := 0
	for i < len(w.p95s) && end.Sub(w.p95s[i].end) > idleSpan {
		i++
	}
	w.p95s = slices.Delete(w.p95s, 0, i)
}

// idle is the store's idle write p95, ok false before idleIntervals.
func (w *writeIdle) idle() (time.Duration, bool) {
	if len(w.p95s) < idleIntervals {
		return 0, false
	}
	ds := make([]time.Duration, len(w.p95s))
	for i, p := range w.p95s {
		ds[i] = p.p95
	}
	slices.Sort(ds)
	return ds[len(ds)/10], true
}

// writeBudget is the store write p95 the limiter holds concurrency under:
// the configured one, or LatencyBudgetFactor times the idle p95, at least
// LatencyFloor.
func (a *Autoscaler) writeBudget() time.Duration {
	if a.cfg.LatencyBudget > 0 {
		return a.cfg.LatencyBudget
	}
	idle, ok := a.idle.idle()
	if !ok {
		return startBudget
	}
	return max(time.Duration(a.cfg.LatencyBudgetFactor*float64(idle)), a.cfg.LatencyFloor)
}
