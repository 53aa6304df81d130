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
	settle(t, f, l, clock, 0.1, 100) // the usual: 100 msgs/s answered in 1 ms
	l.setWithRate(1, 100, 0, 0)      // the same senders, their publishes 10 times slower
	for i := range 200 {
		if f.stepBack() {
			t.Fatalf("the usual 100 msgs/s at pressure 1: stepped back %s in", time.Duration(i)*50*time.Millisecond)
		}
		clock.Advance(50 * time.Millisecond)
	}
	l.setWithRate(1, 1000, 0, 0) // ten times the senders
	if !f.stepBack() {
		t.Error("1,000 msgs/s against the usual 100 at pressure 1: not stepped back")
	}
}

// TestTheRateHasHysteresis: a surge of senders holds the loops back until
// the rate is under half of three times the usual, not as soon as it is
// under three times.
func TestTheRateHasHysteresis(t *testing.T) {
	f, l, clock := clockedIntakeFirst(t)
	settle(t, f, l, clock, 0.1, 100)
	for _, step := range []struct {
		rate, pressure float64
		want           bool
	}{
		{280, 0.8, false}, // under three times the usual
		{1000, 0.8, true}, // ten times
		{200, 0.8, true},  // twice: still over half of three times
		{160, 0.8, true},
		{140, 0.8, false}, // under 150
		{280, 0.8, false},
	} {
		l.setWithRate(step.pressure, step.rate, 0, 0)
		if got := f.stepBack(); got != step.want {
			t.Errorf("%v msgs/s against the usual 100: stepBack %v, want %v", step.rate, got, step.want)
		}
	}
}

// TestASurgeTheReceiverCannotAnswerIsOne: when the receiver cannot answer
// three times its usual rate (the drain beside it takes the CPU), the
// senders wait instead; a pressure over four times Above and three times
// its usual is a surge too.
func TestASurgeTheReceiverCannotAnswerIsOne(t *testing.T) {
	f, l, clock := clockedIntakeFirst(t)
	settle(t, f, l, clock, 0.4, 400)
	l.setWithRate(8, 1000, 0, 0) // 2.5 times the usual rate, senders waiting
	if !f.stepBack() {
		t.Fatal("pressure 8 against the usual 0.4 at 2.5 times the usual rate: not stepped back")
	}
	l.setWithRate(1.2, 1000, 0, 0) // still over half of 2
	if !f.stepBack() {
		t.Error("pressure 1.2, over half of 2: came back")
	}
	l.setWithRate(0.9, 500, 0, 0) // both under half of what starts a surge
	if f.stepBack() {
		t.Error("pressure 0.9 and 500 msgs/s against the usual 0.4 and 400: still stepped back")
	}
}

// settle holds the pressure and the rate for 70 s, past the first minute,
// so that they are the usual, and checks that the loops drained throughout.
func settle(t *testing.T, f *intakeFirst, l *levels, clock *fakeClock, pressure, rate float64) {
	t.Helper()
	l.setWithRate(pressure, rate, 0, 0)
	for range 1400 {
		clock.Advance(50 * time.Millisecond)
		if f.stepBack() {
			t.Fatalf("stepped back at the usual intake (pressure %v, %v msgs/s)", pressure, rate)
		}
	}
	if got := testutil.ToFloat64(f.usualRate); got != rate {
		t.Fatalf("levee_worker_intake_usual_rate %v after 70 s at %v msgs/s", got, rate)
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
