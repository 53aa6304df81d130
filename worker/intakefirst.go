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
	// which the loops step back, if it is also a surge: three times the
	// usual pressure (the lowest 10 s average of the last 10 minutes; none
	// in the process's first minute, see usualWarmup), so that a steady load
	// on a slow disk is drained as it comes rather than in two-minute
	// waves. They come back below half of both. Default 2; a negative value
	// never steps back.
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
		c.Above = 2
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
}

// QueueLevel is how full and how old the queue is, read without I/O
// (*queue.Queue is one).
type QueueLevel interface {
	Fill() float64
	Oldest() time.Duration
}

// The usual pressure: the lowest of the usualBuckets averages over
// usualBucket each (ten minutes), once usualWarmup of them have closed.
//
// Before that nothing is usual (0). A process that starts under load, as
// one restarted in the middle of a surge does, would otherwise learn the
// surge as its usual pressure from its first ten seconds and drain beside
// it: against smtp-source's 20 sessions (4 KiB, new connections), a fresh
// levee serve accepted about 2,500 msgs/s until its first bucket closed,
// then 600-900/s while its loops drained at full speed. A minute, so that a
// steady load on a slow disk waits at most about worker.autoscale's
// target_drain (1m) once, after a start.
const (
	usualBucket  = 10 * time.Second
	usualBuckets = 60
	usualWarmup  = 6
	// surgeFactor: pressure this many times the usual is a surge.
	surgeFactor = 3
)

// intakeFirst decides whether the loops step back now.
type intakeFirst struct {
	cfg    IntakeFirstConfig
	intake Intake
	queue  QueueLevel
	gauge  prometheus.Gauge
	now    func() time.Time

	mu       sync.Mutex
	yielding bool
	// The current bucket's pressure sum and count since bucketStart, and
	// the averages of the buckets before (newest last).
	bucketStart time.Time
	sum         float64
	n           int
	buckets     []float64
}

// usual is the lowest bucket average of the last ten minutes, 0 before
// usualWarmup buckets closed; the caller holds mu.
func (f *intakeFirst) usual(p float64) float64 {
	t := f.now()
	if f.bucketStart.IsZero() {
		f.bucketStart = t
	}
	if t.Sub(f.bucketStart) >= usualBucket && f.n > 0 {
		f.buckets = append(f.buckets, f.sum/float64(f.n))
		if len(f.buckets) > usualBuckets {
			f.buckets = f.buckets[1:]
		}
		f.sum, f.n, f.bucketStart = 0, 0, t
	}
	f.sum += p
	f.n++
	if len(f.buckets) < usualWarmup {
		return 0
	}
	return slices.Min(f.buckets)
}

// stepBack says whether a loop should fetch nothing now, with hysteresis:
// it starts above cfg.Above and ends below half of it, or at once when the
// queue reaches MaxFill or its oldest message MaxDelay.
func (f *intakeFirst) stepBack() bool {
	if f == nil || f.cfg.Above <= 0 {
		return false
	}
	p := f.intake.Pressure()
	bounded := f.queue.Fill() >= f.cfg.MaxFill || f.queue.Oldest() >= f.cfg.MaxDelay
	f.mu.Lock()
	defer f.mu.Unlock()
	surge := surgeFactor * f.usual(p)
	was := f.yielding
	switch {
	case bounded:
		f.yielding = false
	case f.yielding:
		f.yielding = p >= f.cfg.Above/2 && p >= surge/2
	default:
		f.yielding = p > f.cfg.Above && p > surge
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
