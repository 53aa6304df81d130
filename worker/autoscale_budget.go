package worker

import "time"

// The derived store write budget (worker.autoscale.latency_budget 0):
// idle is the lowest decile of the write p95s of the intervals of the last
// idleSpan that saw at least minEvidence writes; until idleIntervals of
// them exist the budget is startBudget.
const (
	idleSpan      = 30 * time.Minute
	idleIntervals = 60
	startBudget   = 100 * time.Millisecond
)

// recordIdle adds an interval's write p95 to the store's idle baseline;
// intervals with too few writes to judge by are left out.
func (a *Autoscaler) recordIdle(end time.Time, s *sampleSet) {
	if s.writes >= minEvidence {
		a.idle.Add(end, s.lat.quantile(0.95))
	}
}

// writeBudget is the store write p95 the limiter holds concurrency under:
// the configured one, or LatencyBudgetFactor times the idle p95, at least
// LatencyFloor.
func (a *Autoscaler) writeBudget(now time.Time) time.Duration {
	if a.cfg.LatencyBudget > 0 {
		return a.cfg.LatencyBudget
	}
	idle, n := a.idle.Baseline(now)
	if n < idleIntervals {
		return startBudget
	}
	return max(time.Duration(a.cfg.LatencyBudgetFactor*float64(idle)), a.cfg.LatencyFloor)
}
