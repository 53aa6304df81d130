package worker

import (
	"fmt"
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
// Readers set the pace up to a point: once the backlog is behind schedule
// the loops catch up at full speed (catchUp), and once the oldest queued
// message is older than worker.autoscale.target_drain the readers also stop
// capping the number of loops (Step), so that no reader, however sensitive,
// holds mail back longer than that.
const (
	minDuty  = 0.25
	dutyStep = 0.125
	// maxRest bounds one rest, so that a very slow batch does not park the
	// loop for long after it.
	maxRest = 2 * time.Second
	// catchUpFrom and catchUpUntil, shares of target_drain, start and end
	// a catch-up; see catchUp.
	catchUpFrom  = 0.9
	catchUpUntil = 0.25
)

// catchUp says why the loops must not rest, "" when they may. A catch-up
// starts when the oldest queued message has waited catchUpFrom of
// target_drain and lasts until it is younger than catchUpUntil of
// target_drain and the backlog of b messages would drain in less than that
// at full speed, with cur loops at their measured rate (or nothing waits).
// Without that hysteresis the loops rested again as soon as the oldest
// message was on time, so that a surge's mail was stored just in time, one
// message after another: in make surge the backlog was gone 70 s after the
// surge ended, and 5,436 messages were stored later than target_drain
// (issue 11). Caught up, mail is young again and the readers set the pace
// once more. The rate does not start a catch-up: measured during a surge,
// while the receiver has the CPU, it is the slowest the loops will be, and
// catching up then cost the readers 3x their idle p99 during the surge.
func (a *Autoscaler) catchUp(cur int, b uint64, oldest time.Duration) string {
	target := a.cfg.TargetDrain
	from, until := time.Duration(catchUpFrom*float64(target)), time.Duration(catchUpUntil*float64(target))
	switch {
	case b == 0:
		a.catchingUp = false
	case a.catchingUp:
		if oldest >= until || a.drainTime(cur, b) >= until {
			return fmt.Sprintf("catching up until the oldest message and the backlog's drain are under %s", until)
		}
		a.catchingUp = false
	case oldest >= from:
		a.catchingUp = true
		return fmt.Sprintf("catching up: the oldest message has waited %s", oldest.Round(time.Second))
	}
	return ""
}

// drainTime is how long b messages take at full speed with cur loops at
// their measured rate; 0 while unknown.
func (a *Autoscaler) drainTime(cur int, b uint64) time.Duration {
	if cur <= 0 || a.perLoop <= 0 {
		return 0
	}
	return time.Duration(float64(b) / (a.perLoop * float64(cur)) * float64(time.Second))
}

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
// While the loops catch up on a late backlog (hurry says why, as Step
// judges it) they work at full speed, whatever the readers say. It says
// why, "" when nothing changed. The caller holds a.mu; over and evidence
// are this step's verdict.
func (a *Autoscaler) pace(now time.Time, cur int, hurry string, over, evidence, readersJudged bool) string {
	dp, ok := a.pool.(dutyPool)
	if !ok || (!evidence && hurry == "") {
		return ""
	}
	old := a.duty
	switch {
	case hurry != "":
		// Resting would only make mail later.
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
	why := "duty cycle " + fmtShare(old) + " -> " + fmtShare(a.duty)
	if hurry != "" {
		why += ": " + hurry
	}
	return why
}

func fmtShare(f float64) string { return strconv.FormatFloat(f, 'g', 3, 64) }
