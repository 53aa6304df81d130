package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// derived is an autoscaler with the derived write budget (latency_budget
// 0) over a pool it counts, batches of batch messages, on a fake clock.
type derived struct {
	a     *Autoscaler
	pool  *countingPool
	stats loopStats
	clock *fakeClock
}

func newDerived(t *testing.T, loops, batch int, backlog Backlog) *derived {
	t.Helper()
	ds := &derived{pool: &countingPool{n: loops}, clock: newFakeClock()}
	cfg := simCfg
	cfg.LatencyBudget = 0
	cfg.Min, cfg.Max = 1, 16
	a, err := newAutoscaler(cfg, scaled{ds.pool, &ds.stats, batch, 0}, AutoscalerDeps{Backlog: backlog, Clock: ds.clock, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ds.a = a
	return ds
}

// step records minEvidence writes of msgs messages that took lat (a full
// batch's also as a loop's work), and steps a second on.
func (ds *derived) step(lat time.Duration, msgs int, full bool) Decision {
	for range minEvidence {
		if full {
			ds.stats.recordBatch(msgs, lat, true)
		}
		ds.stats.recordWrite(lat, msgs, full, nil)
	}
	ds.clock.Advance(time.Second)
	return ds.a.Step(context.Background())
}

// withinABucket: a budget derived from the latency histogram errs high by
// at most one of its buckets, which are 9% wide.
func withinABucket(got, want time.Duration) bool {
	return got >= want && float64(got) <= 1.1*float64(want)
}

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
			ds := newDerived(t, 4, 16, fixedBacklog(0))
			a, clock := ds.a, ds.clock
			step := func(lat time.Duration) Decision { return ds.step(lat, 1, false) }
			for i := range idleIntervals {
				step(tc.idle)
				if i < idleIntervals-1 {
					if got := a.writeBudget(clock.Now(), smallWrites); got != startBudget {
						t.Fatalf("budget %s after %d intervals, want the starting %s", got, i+1, startBudget)
					}
				}
			}
			got := a.writeBudget(clock.Now(), smallWrites)
			if !withinABucket(got, tc.wantBudget) {
				t.Fatalf("budget %s after a minute of %s writes, want %s", got, tc.idle, tc.wantBudget)
			}
			if g := testutil.ToFloat64(a.metrics.budget); g != got.Seconds() {
				t.Fatalf("budget gauge %v, want %v", g, got.Seconds())
			}
			before := a.lim.limit
			// Let the window forget the idle writes, then write slowly.
			var d Decision
			for range int(a.cfg.LatencyWindow/time.Second) + 1 {
				d = step(60 * time.Millisecond)
			}
			if dropped := d.Limit < before; dropped != tc.wantDrop {
				t.Fatalf("limit %d -> %d with writes of 60ms against a budget of %s; want a drop: %v", before, d.Limit, a.writeBudget(clock.Now(), smallWrites), tc.wantDrop)
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
	if got := a.writeBudget(time.Time{}, fullWrites); got != 7*time.Millisecond {
		t.Fatalf("configured budget 7ms, got %s", got)
	}
}

// TestFullBatchesHaveAWriteBudgetOfTheirOwn: a store whose small writes
// take 5ms when idle (a budget of 25ms, the floor) and whose writes of full
// batches take 40ms without any contention: draining a backlog in full
// batches is judged against their own budget (100ms until a minute of them
// was measured, then four times their idle 40ms), so the limit climbs;
// full batches that slow down past it bring the limit down, and so do
// small writes past theirs.
func TestFullBatchesHaveAWriteBudgetOfTheirOwn(t *testing.T) {
	ds := newDerived(t, 1, 32, fixedBacklog(1_000_000))
	a, p, clock, cfg := ds.a, ds.pool, ds.clock, ds.a.cfg
	step := func(lat time.Duration, full bool) Decision {
		if full {
			return ds.step(lat, 32, true)
		}
		return ds.step(lat, 1, false)
	}
	// Mail trickling in: small writes only. (The backlog asks for every
	// loop, so the limit would climb; hold the loops at one meanwhile.)
	for range idleIntervals {
		step(5*time.Millisecond, false)
		p.SetConcurrency(1)
	}
	if got := a.writeBudget(clock.Now(), smallWrites); !withinABucket(got, a.cfg.LatencyFloor) {
		t.Fatalf("small writes' budget %s after a minute of 5ms writes, want the floor %s", got, a.cfg.LatencyFloor)
	}
	if got := a.writeBudget(clock.Now(), fullWrites); got != startBudget {
		t.Fatalf("full batches' budget %s before any was written, want the starting %s", got, startBudget)
	}

	// A surge drains in full batches of 40ms: within their budget.
	var d Decision
	for range idleIntervals {
		d = step(40*time.Millisecond, true)
		if a.lim.breachLevel > 0 {
			t.Fatalf("limit breached by full batches of 40ms (%s)", d.Reason)
		}
	}
	if d.Limit < 4 {
		t.Fatalf("limit %d after a minute of full batches of 40ms; want it climbing, they are the store's idle pace", d.Limit)
	}
	if got := a.writeBudget(clock.Now(), fullWrites); !withinABucket(got, 160*time.Millisecond) {
		t.Fatalf("full batches' budget %s after a minute of them at 40ms, want 4 x 40ms", got)
	}

	for _, tc := range []struct {
		name string
		lat  time.Duration
		full bool
	}{
		{"full batches slow", 400 * time.Millisecond, true},
		{"small writes slow", 60 * time.Millisecond, false},
	} {
		before := a.lim.limit
		breached := false
		for range int(cfg.LatencyWindow/time.Second) + 1 {
			d = step(tc.lat, tc.full)
			breached = breached || a.lim.lastDecrease.Equal(clock.Now())
		}
		if !breached || d.Limit > max(before/2, 1) || !strings.Contains(d.Reason, "over budget") {
			t.Fatalf("%s (%s): limit %d -> %d, want a breach and a drop (%s)", tc.name, tc.lat, before, d.Limit, d.Reason)
		}
		for range int(cfg.LatencyWindow/time.Second) + 1 {
			step(40*time.Millisecond, true) // back to normal
		}
	}
}
