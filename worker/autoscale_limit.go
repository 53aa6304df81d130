package worker

import (
	"fmt"
	"math"
	"time"
)

// minEvidence is how many store writes a latency verdict needs: fewer is no
// evidence, and no evidence leaves the limit where it is.
const minEvidence = 10

// maxProbeBackoff bounds how far repeated breaches at one level push the
// next probe of that level out, in Cooldowns.
const maxProbeBackoff = 16

// evidence is what the store's writes since the last concurrency change say.
type evidence struct {
	// p95 is the write p95 of the kind of writes judged, budget theirs
	// (Autoscaler.judgeWrites).
	p95, budget time.Duration
	kind        writeKind
	writes      int
	failed      int
	// readers is why the readers are over their budget ("" when they are
	// not, or are not measured).
	readers string
}

// limiter is the adaptive cap on concurrency: additive increase while the
// store's write p95 stays within the budget and the cap is what holds
// concurrency back, multiplicative decrease when the p95 goes over. It
// starts at the concurrency the worker runs at and doubles per healthy
// interval until the first breach (slow start), so that a surge reaches a
// fast store's capacity in a few intervals but never jumps to Max blind.
//
// It remembers the level that last breached: climbing back to it waits
// Cooldown at first and twice as long after each breach there, so that a
// store whose capacity lies just under that level is probed rarely instead
// of being pushed over its budget every few intervals. It forgets that level
// when the store shows it got faster: a healthy interval at that level, or a
// p95 at the level just below it half of what it was when first measured
// there.
type limiter struct {
	decrease   float64
	increase   int
	cooldown   time.Duration
	floor, max int

	limit        int
	slowStart    bool
	lastDecrease time.Time // zero: never
	breachLevel  int       // 0: none known
	// breachByReaders: the readers' latency, not the store's, made the
	// last breach (see excuseReaders).
	breachByReaders bool
	probeDelay      time.Duration
	// refLevel and refP95: the p95 first measured at the highest level
	// below breachLevel since the breach, to notice the store getting faster.
	refLevel int
	refP95   time.Duration
}

func newLimiter(cfg AutoscaleConfig, start int) limiter {
	floor := max(cfg.Min, 1)
	return limiter{
		decrease: cfg.Decrease, increase: cfg.Increase, cooldown: cfg.Cooldown,
		floor: floor, max: cfg.Max,
		limit: min(max(start, floor), cfg.Max), slowStart: true, probeDelay: cfg.Cooldown,
	}
}

// update applies the evidence gathered at concurrency cur and returns why
// the limit changed or stayed ("" when there is nothing worth saying).
func (l *limiter) update(now time.Time, cur int, ev evidence) string {
	if ev.writes < minEvidence {
		return ""
	}
	if l.over(ev) {
		return l.breach(now, cur, ev)
	}
	if l.breachLevel > 0 {
		switch {
		case cur >= l.breachLevel, cur == l.refLevel && ev.p95 < l.refP95/2:
			// The store got faster.
			l.breachLevel, l.probeDelay, l.refLevel, l.refP95 = 0, l.cooldown, 0, 0
		case cur > l.refLevel:
			l.refLevel, l.refP95 = cur, ev.p95
		}
	}
	switch {
	case ev.failed > 0:
		return "store writes failing: limit held"
	case cur < l.limit:
		return "" // the limit is not what holds concurrency back: no evidence that more would be fine
	case l.limit >= l.max:
		return ""
	case !l.lastDecrease.IsZero() && now.Sub(l.lastDecrease) < l.cooldown:
		return "cooling down after a decrease"
	}
	step := l.increase
	if l.slowStart {
		step = max(step, l.limit)
	}
	next := min(l.limit+step, l.max)
	if l.breachLevel > 0 && next >= l.breachLevel {
		if now.Sub(l.lastDecrease) < l.probeDelay {
			next = l.breachLevel - 1
			if next <= l.limit {
				return fmt.Sprintf("waiting %s before probing %d again", l.probeDelay, l.breachLevel)
			}
		} else {
			next = l.breachLevel // probe exactly the level that breached
		}
	}
	old := l.limit
	l.limit = next
	return fmt.Sprintf("p95 %s within budget %s (%s): limit %d -> %d", ev.p95, ev.budget, ev.kind, old, next)
}

// over says whether the evidence is over budget: the store's write p95 or
// the readers'.
func (l *limiter) over(ev evidence) bool { return ev.p95 > ev.budget || ev.readers != "" }

// excuseReaders forgets a breach the readers made, once mail is late and
// they no longer set the pace: the level they breached says nothing about
// the store, and waiting out its probe delay (up to 16 cooldowns) would
// keep the loops few while the mail waits. A breach of the store's own
// budget is kept.
func (l *limiter) excuseReaders() {
	if l.breachLevel > 0 && l.breachByReaders {
		l.breachLevel, l.refLevel, l.refP95, l.probeDelay = 0, 0, 0, l.cooldown
		l.breachByReaders = false
	}
}

func (l *limiter) breach(now time.Time, cur int, ev evidence) string {
	level := max(min(cur, l.limit), 1)
	if l.breachLevel > 0 && level >= l.breachLevel {
		l.probeDelay = min(2*l.probeDelay, maxProbeBackoff*l.cooldown)
	} else {
		l.probeDelay = l.cooldown
	}
	l.breachLevel, l.refLevel, l.refP95 = level, 0, 0
	l.breachByReaders = ev.p95 <= ev.budget
	l.slowStart = false
	l.lastDecrease = now
	old := l.limit
	l.limit = max(int(math.Floor(float64(level)*l.decrease)), l.floor)
	what := fmt.Sprintf("p95 %s over budget %s (%s)", ev.p95, ev.budget, ev.kind)
	if ev.readers != "" {
		what = ev.readers
	}
	if l.limit == old {
		return fmt.Sprintf("%s: limit stays at its floor %d", what, old)
	}
	return fmt.Sprintf("%s: limit %d -> %d", what, old, l.limit)
}
