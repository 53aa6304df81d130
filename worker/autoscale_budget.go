package worker

import (
	"time"

	"github.com/levee-mail/levee/internal/baseline"
)

// The derived store write budget (worker.autoscale.latency_budget 0):
// idle is the lowest decile of the write p95s of the intervals of the last
// idleSpan that saw at least minEvidence writes; until idleIntervals of
// them exist the budget is startBudget.
//
// Writes of full batches and the smaller ones have an idle baseline and a
// budget each. A write takes longer the more it holds, however idle the
// store: judged against the idle p95 of the small writes that mail
// trickling in makes, one loop draining a surge in full batches was over
// budget on its own (30-45 ms against 25 ms in make surge, issue 11), so
// the limit never rose above one loop, and the loop rested.
const (
	idleSpan      = 30 * time.Minute
	idleIntervals = 60
	startBudget   = 100 * time.Millisecond
)

// writeKind tells the writes of full batches from the others.
type writeKind int

const (
	smallWrites writeKind = iota
	fullWrites
	writeKinds
)

func (k writeKind) String() string {
	if k == fullWrites {
		return "full batches"
	}
	return "small batches"
}

// idleBaselines are the store's idle write p95s, by kind of write.
type idleBaselines [writeKinds]*baseline.Windows

func newIdleBaselines() idleBaselines {
	var b idleBaselines
	for k := range b {
		b[k] = baseline.New(idleSpan)
	}
	return b
}

// split returns an interval's (or a window's) write latencies by kind.
func split(all, full *latencyHist) [writeKinds]latencyHist {
	return [writeKinds]latencyHist{smallWrites: all.without(full), fullWrites: *full}
}

// recordIdle adds an interval's write p95s to the store's idle baselines;
// a kind with too few writes to judge by is left out.
func (a *Autoscaler) recordIdle(end time.Time, s *sampleSet) {
	for k, h := range split(&s.lat, &s.full) {
		if h.n >= minEvidence {
			a.idle[k].Add(end, h.quantile(0.95))
		}
	}
}

// writeBudget is the p95 the limiter holds the writes of kind k under: the
// configured one, or LatencyBudgetFactor times their idle p95, at least
// LatencyFloor.
func (a *Autoscaler) writeBudget(now time.Time, k writeKind) time.Duration {
	if a.cfg.LatencyBudget > 0 {
		return a.cfg.LatencyBudget
	}
	idle, n := a.idle[k].Baseline(now)
	if n < idleIntervals {
		return startBudget
	}
	return max(time.Duration(a.cfg.LatencyBudgetFactor*float64(idle)), a.cfg.LatencyFloor)
}

// judgeWrites is what the writes in all (full: those of full batches)
// say: each kind with minEvidence writes is judged against its own budget
// and the one furthest over it (or nearest) speaks; with too few of either
// kind alone, or with a configured budget (one for every write), all of
// them are judged together, against the budget of the more numerous kind.
func (a *Autoscaler) judgeWrites(now time.Time, all, full *latencyHist) (p95, budget time.Duration, kind writeKind) {
	byKind := split(all, full)
	worst := -1.0
	for k, h := range byKind {
		if h.n < minEvidence || a.cfg.LatencyBudget > 0 {
			continue
		}
		p, b := h.quantile(0.95), a.writeBudget(now, writeKind(k))
		if r := float64(p) / float64(b); r > worst {
			worst, p95, budget, kind = r, p, b, writeKind(k)
		}
	}
	if worst >= 0 {
		return p95, budget, kind
	}
	kind = smallWrites
	if byKind[fullWrites].n > byKind[smallWrites].n {
		kind = fullWrites
	}
	return all.quantile(0.95), a.writeBudget(now, kind), kind
}
