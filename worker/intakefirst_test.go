package worker

import (
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// levels is an Intake and a QueueLevel the test sets.
type levels struct{ pressure, rate, fill, oldest atomic.Uint64 }

func (l *levels) Pressure() float64     { return math.Float64frombits(l.pressure.Load()) }
func (l *levels) IntakeRate() float64   { return math.Float64frombits(l.rate.Load()) }
func (l *levels) Fill() float64         { return math.Float64frombits(l.fill.Load()) }
func (l *levels) Oldest() time.Duration { return time.Duration(l.oldest.Load()) }

// set sets the pressure with an intake rate to match (publishes answered
// in 1 ms: a thousand a second per transaction waiting).
func (l *levels) set(pressure, fill float64, oldest time.Duration) {
	l.setWithRate(pressure, pressure*1000, fill, oldest)
}

func (l *levels) setWithRate(pressure, rate, fill float64, oldest time.Duration) {
	l.pressure.Store(math.Float64bits(pressure))
	l.rate.Store(math.Float64bits(rate))
	l.fill.Store(math.Float64bits(fill))
	l.oldest.Store(uint64(oldest))
}

// TestLoopsStepBackWhileSendersWait: with senders waiting on the receiver,
// the loops leave the mail queued; they drain when the wait ends, and
// whatever the wait when the queue is 70% full or its oldest message too
// old. A queue 60% full still holds the surge.
func TestLoopsStepBackWhileSendersWait(t *testing.T) {
	for _, tc := range []struct {
		name         string
		releaseAfter func(*levels)
	}{
		{"the senders stop waiting", func(l *levels) { l.set(0.1, 0.01, time.Second) }},
		{"the queue is 70% full", func(l *levels) { l.set(8, 0.7, time.Second) }},
		{"the oldest message waited 2m", func(l *levels) { l.set(8, 0.01, 2*time.Minute) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			r.publish(20)
			w, _ := r.worker(Config{Concurrency: 2, BatchSize: 8}, r.st)
			l := &levels{}
			l.set(8, 0.01, time.Second) // 8 transactions waiting: a surge
			w.PutIntakeFirst(l, l)
			w.Start()
			waitFor(t, 5*time.Second, "the loops stepped back", func() bool { return testutil.ToFloat64(w.metrics.steppedBack) == 1 })
			l.set(8, 0.6, time.Second)
			time.Sleep(300 * time.Millisecond)
			if n := r.stored(); n != 0 {
				t.Fatalf("stored %d while senders waited with the queue 60%% full, want 0", n)
			}
			tc.releaseAfter(l)
			waitFor(t, 20*time.Second, "drained", func() bool { return r.stored() == 20 })
			if got := testutil.ToFloat64(w.metrics.steppedBack); got != 0 {
				t.Errorf("levee_worker_stepped_back %v while draining", got)
			}
		})
	}
}

// TestStepBackHasHysteresis: the loops step back above Above (0.5) and
// come back only below half of it, so that a pressure hovering at the
// threshold does not flap them.
func TestStepBackHasHysteresis(t *testing.T) {
	r := newRig(t, nil)
	w, _ := r.worker(Config{}, r.st)
	l := &levels{}
	w.PutIntakeFirst(l, l)
	f := w.first
	for _, step := range []struct {
		pressure float64
		want     bool
	}{{0.45, false}, {0.55, true}, {0.4, true}, {0.26, true}, {0.24, false}, {0.45, false}, {0.6, true}} {
		l.set(step.pressure, 0, 0)
		if got := f.stepBack(); got != step.want {
			t.Errorf("pressure %v: stepBack %v, want %v", step.pressure, got, step.want)
		}
	}
	w2, _ := r.worker(Config{IntakeFirst: IntakeFirstConfig{Above: -1}}, r.st)
	w2.PutIntakeFirst(l, l)
	l.set(100, 0, 0)
	if w2.first.stepBack() {
		t.Error("worker.intake_first.above -1 stepped back")
	}
}

// TestASteadyLoadIsNotASurge: an intake that stays at one level (a steady
// load on a slow disk) stops counting as a surge once it is the usual, so
// the loops drain as mail comes; three times the usual is a surge again.
func TestASteadyLoadIsNotASurge(t *testing.T) {
	f, l, clock := clockedIntakeFirst(t)
	l.set(3, 0, 0)
	if !f.stepBack() {
		t.Fatal("pressure 3 over the threshold 0.5 with nothing usual known yet: not stepped back")
	}
	for range 1400 { // 70 s at 3: past the first minute, which learns nothing
		clock.Advance(50 * time.Millisecond)
		f.stepBack()
	}
	if f.stepBack() {
		t.Error("a steady pressure of 3 for 70 s still steps back")
	}
	l.set(10, 0, 0)
	if !f.stepBack() {
		t.Error("intake 10,000/s, over three times the usual 3,000/s: not stepped back")
	}
}

// TestTheDrainAfterASurgeIsNotOne: when the drain after a surge slows the
// usual senders' publishes, their pressure rises but their rate does not;
// the loops keep draining. A surge of senders is still one.
func TestTheDrainAfterASurgeIsNotOne(t *testing.T) {
	f, l, clock := clockedIntakeFirst(t)
	l.setWithRate(0.1, 100, 0, 0) // the usual: 100 msgs/s answered in 1 ms
	for range 1400 {              // 70 s, past the first minute
		clock.Advance(50 * time.Millisecond)
		if f.stepBack() {
			t.Fatal("stepped back at the usual intake")
		}
	}
	l.setWithRate(3, 100, 0, 0) // the same senders, their publishes 30 times slower
	for i := range 200 {
		if f.stepBack() {
			t.Fatalf("the usual 100 msgs/s at pressure 3: stepped back %s in", time.Duration(i)*50*time.Millisecond)
		}
		clock.Advance(50 * time.Millisecond)
	}
	l.setWithRate(1, 1000, 0, 0) // ten times the senders
	if !f.stepBack() {
		t.Error("1,000 msgs/s against the usual 100 at pressure 1: not stepped back")
	}
}

// TestAProcessStartedIntoASurgeHoldsIt: a process that starts under load
// (restarted in the middle of a surge) does not take the load for its usual
// pressure from its first seconds: for its first minute nothing counts as
// usual, and the loops leave the surge queued.
func TestAProcessStartedIntoASurgeHoldsIt(t *testing.T) {
	f, l, clock := clockedIntakeFirst(t)
	l.set(8, 0, 0)
	for i := range 1150 { // 57.5 s at 8
		if !f.stepBack() {
			t.Fatalf("pressure 8 from the start: the loops drained %s after it", time.Duration(i)*50*time.Millisecond)
		}
		clock.Advance(50 * time.Millisecond)
	}
}

// clockedIntakeFirst is a worker's intake first with levels the test sets
// and a clock it advances.
func clockedIntakeFirst(t *testing.T) (*intakeFirst, *levels, *fakeClock) {
	r := newRig(t, nil)
	w, _ := r.worker(Config{}, r.st)
	l := &levels{}
	w.PutIntakeFirst(l, l)
	c := newFakeClock()
	w.first.now = c.Now
	return w.first, l, c
}
