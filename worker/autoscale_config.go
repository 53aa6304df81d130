package worker

import (
	"fmt"
	"time"
)

// AutoscaleConfig tunes the autoscaler (YAML keys worker.autoscale.*). Zero
// fields take the defaults listed; Min's zero value is a real setting.
type AutoscaleConfig struct {
	// Enabled hands concurrency to the autoscaler; worker.concurrency is
	// then only where it starts.
	Enabled bool `config:"enabled" help:"move concurrency with the backlog, capped by the store's write latency (worker.concurrency is the start)"`
	// Min and Max bound concurrency. Min 0 stops every loop while there is
	// no backlog (the first mail then waits up to one Interval). Min is kept
	// even when the store is over its latency budget at Min. Max: default 16.
	Min int `config:"min" help:"fewest delivery loops the autoscaler keeps"`
	Max int `config:"max" help:"most delivery loops the autoscaler runs"`
	// Interval is the decision period. Default 1s.
	Interval time.Duration `config:"interval" help:"how often the autoscaler decides"`
	// TargetDrain is the time to drain a backlog in; messages older than
	// this push concurrency up. Default 1m.
	TargetDrain time.Duration `config:"target_drain" help:"drain a backlog within this time (if the store's budget allows)"`
	// LatencyBudget is the store write p95 that concurrency must keep under.
	// Zero (the default) derives it from the store's own idle latency:
	// LatencyBudgetFactor times the idle write p95 (the 10th percentile of
	// the per-interval p95s of the last half hour), at least LatencyFloor;
	// 100ms until a minute of writes has been measured.
	LatencyBudget time.Duration `config:"latency_budget" help:"store write p95 above which the concurrency limit drops multiplicatively; 0: latency_budget_factor times the store's measured idle write p95, at least latency_floor"`
	// LatencyBudgetFactor and LatencyFloor shape the derived budget.
	// Defaults 4 and 25ms: a store whose idle writes take 2ms is held to
	// 25ms, one whose idle writes take 40ms (a distant database) to 160ms.
	LatencyBudgetFactor float64       `config:"latency_budget_factor" help:"the derived store write budget is this many times the store's idle write p95"`
	LatencyFloor        time.Duration `config:"latency_floor" help:"the derived store write budget is at least this"`
	// ReaderBudget and ReaderFloor: when the web app's readers are
	// measured (the web role in this process), the limit also drops while
	// their p99 is above ReaderBudget times their idle p99 and above
	// ReaderFloor, so that the drain goes at the pace the readers can
	// afford. Defaults 1.5 and 2ms (under it, 1.5x of a sub-millisecond
	// idle p99 would be noise); ReaderBudget -1 ignores the readers.
	ReaderBudget float64       `config:"reader_budget" help:"reader p99 (mailbox API, this process) above this many times its idle p99 lowers the concurrency limit; -1: ignore readers"`
	ReaderFloor  time.Duration `config:"reader_floor" help:"reader p99 below this is never over budget"`
	// LatencyWindow is how far back the p95 looks. Default 10s.
	LatencyWindow time.Duration `config:"latency_window" help:"window of the store write p95"`
	// Decrease multiplies the limit when the p95 is over budget, in (0, 1).
	// Default 0.7.
	Decrease float64
	// Increase is added to the limit per healthy interval while it is the
	// binding constraint (after the first breach; before it, the limit
	// doubles). Default 1.
	Increase int
	// Cooldown is the least time after a decrease before the limit climbs
	// again. A climb back to the level that breached waits longer, doubling
	// with each repeated breach there (up to 16 Cooldowns), so that a store
	// at its budget sees rare probes instead of a sawtooth. Default 5s.
	Cooldown time.Duration
	// ScaleDownDelay is how long the backlog must ask for fewer loops before
	// they are stopped (the most asked for in that time wins), so that a
	// lull in a stream of mail does not flap loops. Default 30s.
	ScaleDownDelay time.Duration
}

// WithDefaults fills the zero fields other than Enabled and Min.
func (c AutoscaleConfig) WithDefaults() AutoscaleConfig {
	if c.Max == 0 {
		c.Max = 16
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.TargetDrain == 0 {
		c.TargetDrain = time.Minute
	}
	if c.LatencyBudgetFactor == 0 {
		c.LatencyBudgetFactor = 4
	}
	if c.LatencyFloor == 0 {
		c.LatencyFloor = 25 * time.Millisecond
	}
	if c.LatencyWindow == 0 {
		c.LatencyWindow = 10 * time.Second
	}
	if c.ReaderBudget == 0 {
		c.ReaderBudget = 1.5
	}
	if c.ReaderFloor == 0 {
		c.ReaderFloor = 2 * time.Millisecond
	}
	if c.Decrease == 0 {
		c.Decrease = 0.7
	}
	if c.Increase == 0 {
		c.Increase = 1
	}
	if c.Cooldown == 0 {
		c.Cooldown = 5 * time.Second
	}
	if c.ScaleDownDelay == 0 {
		c.ScaleDownDelay = 30 * time.Second
	}
	return c
}

// maxWindowIntervals bounds the per-interval summaries kept for the window
// (each is about 800 bytes).
const maxWindowIntervals = 1000

// Validate reports the first invalid field by its config key.
func (c AutoscaleConfig) Validate() error {
	switch {
	case c.Min < 0:
		return fmt.Errorf("worker.autoscale.min: must be >= 0, got %d", c.Min)
	case c.Max < 1 || c.Max < c.Min:
		return fmt.Errorf("worker.autoscale.max: must be >= 1 and >= worker.autoscale.min (%d), got %d", c.Min, c.Max)
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("worker.autoscale.interval: must be >= 10ms, got %s", c.Interval)
	case c.TargetDrain < c.Interval:
		return fmt.Errorf("worker.autoscale.target_drain: must be >= worker.autoscale.interval (%s), got %s", c.Interval, c.TargetDrain)
	case c.LatencyBudget < 0:
		return fmt.Errorf("worker.autoscale.latency_budget: must be >= 0 (0: derived from the store's idle latency), got %s", c.LatencyBudget)
	case !(c.LatencyBudgetFactor >= 1):
		return fmt.Errorf("worker.autoscale.latency_budget_factor: must be >= 1, got %g", c.LatencyBudgetFactor)
	case c.LatencyFloor <= 0:
		return fmt.Errorf("worker.autoscale.latency_floor: must be > 0, got %s", c.LatencyFloor)
	case c.LatencyWindow < c.Interval || c.LatencyWindow > maxWindowIntervals*c.Interval:
		return fmt.Errorf("worker.autoscale.latency_window: must be between worker.autoscale.interval and %d intervals (%s .. %s), got %s",
			maxWindowIntervals, c.Interval, maxWindowIntervals*c.Interval, c.LatencyWindow)
	case c.ReaderBudget != -1 && !(c.ReaderBudget >= 1):
		return fmt.Errorf("worker.autoscale.reader_budget: must be >= 1 (times the idle p99) or -1 (ignore readers), got %g", c.ReaderBudget)
	case c.ReaderFloor < 0:
		return fmt.Errorf("worker.autoscale.reader_floor: must be >= 0, got %s", c.ReaderFloor)
	case !(c.Decrease > 0 && c.Decrease < 1):
		return fmt.Errorf("worker.autoscale.decrease: must be between 0 and 1 (exclusive), got %g", c.Decrease)
	case c.Increase < 1:
		return fmt.Errorf("worker.autoscale.increase: must be >= 1, got %d", c.Increase)
	case c.Cooldown < 0:
		return fmt.Errorf("worker.autoscale.cooldown: must be >= 0, got %s", c.Cooldown)
	case c.ScaleDownDelay < 0:
		return fmt.Errorf("worker.autoscale.scale_down_delay: must be >= 0, got %s", c.ScaleDownDelay)
	}
	return nil
}
