package worker

import (
	"math"
	"strconv"
	"time"
)

// Pacing below one loop. The concurrency limit cannot go under one loop
// (or worker.autoscale.min), and on a small machine one loop draining at
// full speed can be what slows the readers: a SQLite writer or a database
// connection that never rests. So when the store or the readers are over
// budget at the floor, the loops also rest between batches: the duty cycle
// (the share of time a loop works) drops multiplicatively, down to
// minDuty, and climbs back by dutyStep per healthy interval after the
// cooldown. Full speed (duty 1) comes back before the limit climbs again.
// Readers set the pace up to a point: once the oldest queued message is
// older than worker.autoscale.target_drain the loops stop resting and the
// readers stop capping the number of loops (Step), so that no reader,
// however sensitive, holds mail back longer than that.
const (
	minDuty  = 0.25
	dutyStep = 0.125
	// maxRest bounds one rest, so that a very slow batch does not park the
	// loop for long after it.
	maxRest = 2 * time.Second
)

// dutyPool is a pool whose loops can rest between batches (*Worker).
type dutyPool interface {
	SetDuty(d float64)
}

// SetDuty sets the share of time each loop works, in [minDuty, 1]: after a
// batch that took t, a loop rests t*(1/d - 1).
func (w *Worker) SetDuty(d float64) {
	d = min(max(d, minDuty), 1)
	w.duty.Store(math.Float64bits(d))
}

// dutyCycle is the share of time a loop works (1 before SetDuty).
func (w *Worker) dutyCycle() float64 {
	b := w.duty.Load()
	if b == 0 {
		return 1
	}
	return math.Float64frombits(b)
}

// rest waits after a batch that kept the loop busy for busy, as the duty
// cycle asks; false if the loop was told to stop meanwhile.
func (w *Worker) rest(stop <-chan struct{}, busy time.Duration) bool {
	d := w.dutyCycle()
	if d >= 1 || busy <= 0 {
		return true
	}
	t := time.NewTimer(min(time.Duration(float64(busy)*(1/d-1)), maxRest))
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// pace moves the duty cycle: down when over budget at the floor, up after
// the cooldown when within it, as the readers' latest window shows
// (readersJudged: a window that began before the last cut says nothing
// about the new pace, and climbing on it would undo the cut every time).
// Once mail is late (the oldest queued message older than target_drain,
// as Step judges it) the loops go back to full speed at once, whatever the
// readers say. It says why, "" when nothing changed. The caller holds a.mu;
// over and evidence are this step's verdict.
func (a *Autoscaler) pace(now time.Time, cur int, late, over, evidence, readersJudged bool) string {
	dp, ok := a.pool.(dutyPool)
	if !ok || !evidence {
		return ""
	}
	old := a.duty
	switch {
	case late:
		// Mail is late: resting would only make it later (Step no longer
		// counts the readers as over budget either).
		a.duty = 1
	case over && cur <= a.lim.floor:
		a.duty = max(a.duty*a.cfg.Decrease, minDuty)
		a.dutyCut = now
	case !over && readersJudged && a.duty < 1 && now.Sub(a.dutyCut) >= a.cfg.Cooldown:
		a.duty = min(a.duty+dutyStep, 1)
	}
	if a.duty == old {
		return ""
	}
	dp.SetDuty(a.duty)
	a.metrics.duty.Set(a.duty)
	// What was measured before describes the old pace.
	a.evidenceFrom = now
	return "duty cycle " + fmtShare(old) + " -> " + fmtShare(a.duty)
}

func fmtShare(f float64) string { return strconv.FormatFloat(f, 'g', 3, 64) }
