package worker

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDerivedWriteBudgetFollowsTheIdleStore: with latency_budget 0 the
// budget starts at 100ms, then, after a minute of measured writes, is
// latency_budget_factor times the idle write p95 (at least latency_floor):
// a write p95 of 60ms is over the budget of a store that writes in 5ms when
// idle (the limit drops), and within that of one that writes in 20ms.
func TestDerivedWriteBudgetFollowsTheIdleStore(t *testing.T) {
	for _, tc := range []struct {
		idle       time.Duration
		wantBudget time.Duration
		wantDrop   bool
	}{
		{5 * time.Millisecond, 25 * time.Millisecond, true},   // 4 x 5ms is under the floor
		{20 * time.Millisecond, 80 * time.Millisecond, false}, // 4 x 20ms
	} {
		t.Run(tc.idle.String(), func(t *testing.T) {
			clock := newFakeClock()
			p := &countingPool{n: 4}
			var stats loopStats
			cfg := simCfg
			cfg.LatencyBudget = 0
			cfg.Min, cfg.Max = 1, 16
			a, err := newAutoscaler(cfg, scaled{p, &stats, 16, 0}, AutoscalerDeps{Backlog: fixedBacklog(0), Clock: clock, Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			step := func(lat time.Duration) Decision {
				for range minEvidence {
					stats.recordWrite(lat, 1, nil)
				}
				clock.Advance(time.Second)
				return a.Step(context.Background())
			}
			for i := range idleIntervals {
				step(tc.idle)
				if i < idleIntervals-1 {
					if got := a.lim.budget; got != startBudget {
						t.Fatalf("budget %s after %d intervals, want the starting %s", got, i+1, startBudget)
					}
				}
			}
			// The latency histogram's buckets are 9% wide.
			got := a.lim.budget
			if got < tc.wantBudget || float64(got) > 1.1*float64(tc.wantBudget) {
				t.Fatalf("budget %s after a minute of %s writes, want %s", got, tc.idle, tc.wantBudget)
			}
			if g := testutil.ToFloat64(a.metrics.budget); g != got.Seconds() {
				t.Fatalf("budget gauge %v, want %v", g, got.Seconds())
			}
			before := a.lim.limit
			// Let the window forget the idle writes, then write slowly.
			var d Decision
			for range int(cfg.LatencyWindow/time.Second) + 1 {
				d = step(60 * time.Millisecond)
			}
			if dropped := d.Limit < before; dropped != tc.wantDrop {
				t.Fatalf("limit %d -> %d with writes of 60ms against a budget of %s; want a drop: %v", before, d.Limit, a.lim.budget, tc.wantDrop)
			}
		})
	}
	// A configured budget is kept whatever the store does.
	cfg := simCfg
	cfg.LatencyBudget = 7 * time.Millisecond
	a, err := newAutoscaler(cfg, scaled{&countingPool{n: 1}, &loopStats{}, 16, 0}, AutoscalerDeps{Backlog: fixedBacklog(0), Clock: newFakeClock(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.writeBudget(time.Time{}); got != 7*time.Millisecond {
		t.Fatalf("configured budget 7ms, got %s", got)
	}
}
