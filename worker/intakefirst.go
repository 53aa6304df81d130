package worker

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// IntakeFirstConfig makes the delivery loops step back while the receiver
// on the same machine has senders waiting (YAML keys
// worker.intake_first.*): accepting comes first, and the surge waits in
// the queue, which is what its limits are for; the drain catches up when
// the surge ends. Bounds keep the queue from filling and mail from waiting
// too long for its mailbox.
type IntakeFirstConfig struct {
	// Above is the intake pressure (levee_smtp_intake_pressure: SMTP
	// transactions waiting on the queue, averaged over a quarter second) above
	// which the loops step back, if it is also a surge: an intake rate three
	// times the usual (the lowest 10 s average of the last 10 minutes; none
	// in the process's first minute, see usualWarmup), so that a steady load
	// on a slow disk is drained as it comes rather than in two-minute
	// waves, and so that the drain after a surge, which slows the publishes
	// of the usual senders, is not taken for one (see stepBack for a surge
	// told by its waiting senders instead). They come back below half of
	// either. Default 0.5: make surge (100 msgs/s, then 1,000/s) gave 0.07
	// at 100/s and 0.5-0.9 at 1,000/s with the loops standing back, on a
	// day when the 2 it was calibrated at was reached only after the drain
	// beside the surge had taken the readers' p99 to 1.67x. A negative
	// value never steps back.
	Above float64 `config:"above" help:"SMTP transactions waiting on the queue (averaged over 250ms) above which delivery loops step back; -1: never"`
	// MaxFill is the queue fill at or above which the loops drain whatever
	// the intake, under the receiver's 452 watermarks (0.8 and 0.9).
	// Default 0.7. At 0.5 the queue was used only half: make surge (a
	// 60 s surge of 14 KB mail, 1 GiB of queue) reached it after 45 s,
	// and the drain that then ran beside the surge took the readers'
	// p99 to 1.58-2.44x its idle value (median 1.78x); at 0.7 the surge
	// stayed in the queue (peak fill 0.61), readers 1.10-1.35x (median
	// 1.27x), and the backlog was gone sooner after it (40 s, not 42-50 s).
	// That was one day: the next, six runs at 0.7 gave 1.61-2.21x, with the
	// loops standing back for most of the surge (docs/loadtesting.md says
	// what is left of it on two cores).
	// Past it the loops drain within the readers' budget while 0.2 of the
	// queue is left before the receiver defers MAIL FROM.
	MaxFill float64 `config:"max_fill" help:"queue fill at which delivery loops drain even while senders wait"`
	// MaxDelay is the age of the oldest queued message at or above which
	// the loops drain whatever the intake. Default 2m.
	MaxDelay time.Duration `config:"max_delay" help:"oldest queued message age at which delivery loops drain even while senders wait"`
}

// WithDefaults fills the zero fields.
func (c IntakeFirstConfig) WithDefaults() IntakeFirstConfig {
	if c.Above == 0 {
		c.Above = 0.5
	}
	if c.MaxFill == 0 {
		c.MaxFill = 0.7
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = 2 * time.Minute
	}
	return c
}

// Validate reports the first invalid field by its config key.
func (c IntakeFirstConfig) Validate() error {
	switch {
	case c.Above != c.Above: // NaN
		return fmt.Errorf("worker.intake_first.above: must be a number (-1: never step back)")
	case !(c.MaxFill > 0 && c.MaxFill <= 1):
		return fmt.Errorf("worker.intake_first.max_fill: must be in (0, 1], got %g", c.MaxFill)
	case c.MaxDelay <= 0:
		return fmt.Errorf("worker.intake_first.max_delay: must be > 0, got %s", c.MaxDelay)
	}
	return nil
}

// Intake is the receiver sharing the machine (*ingest.Server is one).
type Intake interface {
	// Pressure is its SMTP transactions waiting on the queue, averaged.
	Pressure() float64
	// IntakeRate is its publishes answered per second, averaged.
	IntakeRate() float64
}

// QueueLevel is how full and how old the queue is, read without I/O
// (*queue.Queue is one).
type QueueLevel interface {
	Fill() float64
	Oldest() time.Duration
}

// The usual intake rate (and pressure): the lowest of the usualBuckets
// averages over usualBucket each (ten minutes), once usualWarmup of them
// have closed.
//
// Before that nothing is usual (0). A process that starts under load, as
// one restarted in the middle of a surge does, would otherwise learn the
// surge as its usual from its first ten seconds and drain beside
// it (this was measured on the pressure's usual, the same then): against
// smtp-source's 20 sessions (4 KiB, new connections), a fresh levee serve
// accepted about 2,500 msgs/s until its first bucket closed,
// then 600-900/s while its loops drained at full speed. A minute, so that a
// steady load on a slow disk waits at most about worker.autoscale's
// target_drain (1m) once, after a start.
//
// The rate, not the pressure: the pressure is the rate times the publish
// latency, and the drain after a surge raises the latency of the usual
// senders' publishes. Compared with its usual, the pressure then looked
// like a surge, and the loops stepped back and forth through the whole
// catch-up (make surge with worker.intake_first.above 0.3: pressure 0.2-0.35
// at the usual 100 msgs/s, the readers' p99 2.54x while it drained).
//
// After a quiet spell the usual is about 0 for ten minutes, and a load over
// worker.intake_first.above is a surge meanwhile; max_delay bounds what it
// holds back.
const (
	usualBucket  = 10 * time.Second
	usualBuckets = 60
	usualWarmup  = 6
	// surgeFactor: an intake rate (or a pressure) this many times the
	// usual is a surge.
	surgeFactor = 3
	// waitingFactor: a pressure this many times worker.intake_first.above
	// (2 by default, the threshold before the rate counted) is a surge if
	// it is also three times the usual pressure; see stepBack.
	waitingFactor = 4
)

// intakeFirst decides whether the loops step back now.
type intakeFirst struct {
	cfg    IntakeFirstConfig
	intake Intake
	queue  QueueLevel
	gauge  prometheus.Gauge // levee_worker_stepped_back
	// usualRate shows the usual intake rate (levee_worker_intake_usual_rate).
	usualRate prometheus.Gauge
	now       func() time.Time

	mu       sync.Mutex
	yielding bool
	// The usual intake rate and the usual pressure.
	rates, pressures usualLevel
}

// usualLevel is a signal's usual: the lowest of the usualBuckets averages
// over usualBucket each (ten minutes), 0 before usualWarmup of them closed.
type usualLevel struct {
	// The current bucket's sum and count since start, and the averages of
	// the buckets before (newest last).
	start   time.Time
	sum     float64
	n       int
	buckets []float64
	// usual is the lowest of buckets once usualWarmup closed, kept as each
	// bucket closes rather than found on every loop's fetch.
	usual float64
}

// observe adds v, seen at t, and returns the usual.
func (u *usualLevel) observe(t time.Time, v float64) float64 {
	if u.start.IsZero() {
		u.start = t
	}
	if t.Sub(u.start) >= usualBucket && u.n > 0 {
		u.buckets = append(u.buckets, u.sum/float64(u.n))
		if len(u.buckets) > usualBuckets {
			u.buckets = u.buckets[1:]
		}
		u.sum, u.n, u.start = 0, 0, t
		if len(u.buckets) >= usualWarmup {
			u.usual = slices.Min(u.buckets)
		}
	}
	u.sum += v
	u.n++
	return u.usual
}

// stepBack says whether a loop should fetch nothing now, with hysteresis:
// it starts in a surge and ends below half of what started it, or at once
// when the queue reaches MaxFill or its oldest message MaxDelay.
//
// A surge is either of two. Senders arrive at three times the usual rate,
// with the pressure above cfg.Above. Or they wait: the pressure is above
// waitingFactor times cfg.Above and three times its own usual. The second
// is for a surge the receiver cannot answer fast enough to show in its
// rate, which is capped by what the receiver answers with the drain beside
// it (1,124-1,301 msgs/s from smtp-source on 2 cores, so a usual above
// about 400 msgs/s could never triple); its senders wait instead (pressure
// 8-11). The catch-up after a surge stays far below it (0.2-0.35).
func (f *intakeFirst) stepBack() bool {
	if f == nil || f.cfg.Above <= 0 {
		return false
	}
	p, rate := f.intake.Pressure(), f.intake.IntakeRate()
	bounded := f.queue.Fill() >= f.cfg.MaxFill || f.queue.Oldest() >= f.cfg.MaxDelay
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.now()
	usual := f.rates.observe(t, rate)
	f.usualRate.Set(usual)
	rateSurge := surgeFactor * usual
	waitSurge := surgeFactor * f.pressures.observe(t, p)
	waiting := waitingFactor * f.cfg.Above
	was := f.yielding
	switch {
	case bounded:
		f.yielding = false
	case f.yielding:
		f.yielding = (p >= f.cfg.Above/2 && rate >= rateSurge/2) || (p >= waiting/2 && p >= waitSurge/2)
	default:
		f.yielding = (p > f.cfg.Above && rate > rateSurge) || (p > waiting && p > waitSurge)
	}
	if f.yielding != was {
		v := 0.0
		if f.yielding {
			v = 1
		}
		f.gauge.Set(v)
	}
	return f.yielding
}
