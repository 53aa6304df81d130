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
//
// The derived budget is a stand-in for the readers' latency, for
// deployments whose web app is not Levee's web role. Where Levee's readers
// are measured (readersMeasured) they speak for themselves, and the derived
// budget only guards against collapse: at least startBudget. Without that,
// the stand-in cut a drain the readers did not feel: the idle p95 comes
// from batches of one to three messages and a drain writes full ones (on
// PostgreSQL 40-60 ms against a 36-47 ms budget), so in a surge on
// PostgreSQL 17 of 25 duty cycle cuts were the store's p95 while the
// readers were within 1.5x.
func (a *Autoscaler) writeBudget(now time.Time, readersMeasured bool) time.Duration {
	if a.cfg.LatencyBudget > 0 {
		return a.cfg.LatencyBudget
	}
	idle, n := a.idle.Baseline(now)
	if n < idleIntervals {
		return startBudget
	}
	derived := max(time.Duration(a.cfg.LatencyBudgetFactor*float64(idle)), a.cfg.LatencyFloor)
	if readersMeasured {
		derived = max(derived, startBudget)
	}
	return derived
}
