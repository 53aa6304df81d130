package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// dutyCountingPool is a countingPool whose loops can rest.
type dutyCountingPool struct {
	countingPool
	duty float64
}

func (p *dutyCountingPool) SetDuty(d float64) { p.duty = d }

// switchReaders report a p99 of 20ms against an idle 5ms while over is
// set, 5ms otherwise, from a fresh window unless stale is set.
type switchReaders struct {
	clock       *fakeClock
	over, stale *bool
}

func (r switchReaders) ReadLatency() (recent, idle time.Duration, since time.Time, ok bool) {
	recent = 5 * time.Millisecond
	if *r.over {
		recent = 20 * time.Millisecond
	}
	since = r.clock.Now()
	if *r.stale {
		since = since.Add(-time.Hour)
	}
	return recent, 5 * time.Millisecond, since, true
}

// TestLoopsRestWhileReadersSufferAtTheFloor: with one loop (the floor)
// and the readers over budget, the loops' duty cycle drops by the limit's
// factor each interval down to a quarter; with the readers back within
// budget it climbs back by an eighth per interval after the cooldown, and
// the limit stays put until it is back to 1.
func TestLoopsRestWhileReadersSufferAtTheFloor(t *testing.T) {
	clock := newFakeClock()
	p := &dutyCountingPool{countingPool: countingPool{n: 1}, duty: 1}
	var stats loopStats
	over, stale := true, false
	cfg := simCfg
	cfg.Min, cfg.Max = 1, 16
	a, err := newAutoscaler(cfg, scaled{p, &stats, 16, 0}, AutoscalerDeps{Backlog: fixedBacklog(100), Clock: clock,
		Registerer: prometheus.NewRegistry(), Readers: switchReaders{clock, &over, &stale}})
	if err != nil {
		t.Fatal(err)
	}
	step := func() Decision {
		for range minEvidence {
			stats.recordWrite(time.Millisecond, 1, nil)
		}
		clock.Advance(time.Second)
		return a.Step(context.Background())
	}
	want := 1.0
	for range 6 {
		d := step()
		want = max(want*0.7, minDuty)
		if p.duty < want-1e-9 || p.duty > want+1e-9 {
			t.Fatalf("duty %g after a step over budget (%s), want %g", p.duty, d.Reason, want)
		}
		if d.Next != 1 {
			t.Fatalf("%d loops, want the floor 1", d.Next)
		}
	}
	if g := testutil.ToFloat64(a.metrics.duty); g != minDuty {
		t.Fatalf("duty gauge %g, want %g", g, minDuty)
	}
	// A readers' window that began before the last cut says nothing about
	// the new pace: no climb on it, however long it lasts.
	over, stale = false, true
	for range 3 * int(cfg.Cooldown/time.Second) {
		step()
	}
	if p.duty != minDuty {
		t.Fatalf("duty %g with no fresh reader window since the cut, want it held at %g", p.duty, minDuty)
	}
	stale = false
	var d Decision
	for range int(cfg.Cooldown / time.Second) {
		d = step()
	}
	if p.duty > minDuty+float64(cfg.Cooldown/time.Second)*dutyStep+1e-9 {
		t.Fatalf("duty %g, want at most one step up a second from %g", p.duty, minDuty)
	}
	for p.duty < 1 {
		before := p.duty
		d = step()
		if p.duty <= before {
			t.Fatalf("duty stuck at %g with the readers within budget (%s)", p.duty, d.Reason)
		}
		if d.Limit != a.lim.floor && p.duty < 1 {
			t.Fatalf("limit %d while the loops still rest (duty %g): full speed comes first", d.Limit, p.duty)
		}
	}
	if !strings.Contains(d.Reason, "duty cycle") {
		t.Errorf("reason %q does not say the duty cycle changed", d.Reason)
	}
}

// oldBacklog is a backlog whose oldest message is age old.
type oldBacklog struct{ age *time.Duration }

func (b oldBacklog) Backlog(context.Context) (uint64, time.Duration, error) { return 1000, *b.age, nil }

// TestReadersHoldMailBackNoLongerThanTargetDrain: the loops rest for the
// readers only while the oldest queued message is younger than
// target_drain; past it they work at full speed again, readers or not.
func TestReadersHoldMailBackNoLongerThanTargetDrain(t *testing.T) {
	clock := newFakeClock()
	p := &dutyCountingPool{countingPool: countingPool{n: 1}, duty: 1}
	var stats loopStats
	over, stale := true, false
	age := time.Second
	cfg := simCfg
	cfg.Min, cfg.Max = 1, 1
	a, err := newAutoscaler(cfg, scaled{p, &stats, 16, 0}, AutoscalerDeps{Backlog: oldBacklog{&age}, Clock: clock,
		Registerer: prometheus.NewRegistry(), Readers: switchReaders{clock, &over, &stale}})
	if err != nil {
		t.Fatal(err)
	}
	step := func() {
		for range minEvidence {
			stats.recordWrite(time.Millisecond, 1, nil)
		}
		clock.Advance(time.Second)
		a.Step(context.Background())
	}
	for range 6 {
		step()
	}
	if p.duty != minDuty {
		t.Fatalf("duty %g with the readers over budget, want %g", p.duty, minDuty)
	}
	age = cfg.TargetDrain
	step()
	if p.duty != 1 {
		t.Fatalf("duty %g one step after mail has waited %s (target_drain), want full speed at once whatever the readers", p.duty, age)
	}
}

// movingBacklog is a backlog of *n messages whose oldest is *age old.
type movingBacklog struct {
	n   *uint64
	age *time.Duration
}

func (b movingBacklog) Backlog(context.Context) (uint64, time.Duration, error) { return *b.n, *b.age, nil }

// TestLoopsDoNotRestWhenThatWouldMakeMailLate: with the readers over
// budget at the floor the loop rests while the backlog, drained at the
// measured full speed, is gone well within target_drain of its oldest
// message's arrival; once it would not be (three quarters of target_drain),
// the loop works at full speed at once, long before any message is late,
// and rests again once the backlog is back on schedule.
func TestLoopsDoNotRestWhenThatWouldMakeMailLate(t *testing.T) {
	clock := newFakeClock()
	p := &dutyCountingPool{countingPool: countingPool{n: 1}, duty: 1}
	var stats loopStats
	over, stale := true, false
	n, age := uint64(10_000), time.Second
	cfg := simCfg // target_drain 1m: the schedule is 45s
	cfg.Min, cfg.Max = 1, 1
	a, err := newAutoscaler(cfg, scaled{p, &stats, 16, 0}, AutoscalerDeps{Backlog: movingBacklog{&n, &age}, Clock: clock,
		Registerer: prometheus.NewRegistry(), Readers: switchReaders{clock, &over, &stale}})
	if err != nil {
		t.Fatal(err)
	}
	step := func() Decision {
		for range minEvidence {
			stats.recordWrite(time.Millisecond, 16, nil)
			stats.recordBatch(16, 16*time.Millisecond, true) // 1,000 messages a second
		}
		clock.Advance(time.Second)
		return a.Step(context.Background())
	}
	for range 6 {
		step() // 10,000 messages: 10s at full speed, on schedule
	}
	if p.duty != minDuty {
		t.Fatalf("duty %g with the readers over budget and the backlog on schedule, want %g", p.duty, minDuty)
	}
	n, age = 40_000, 10*time.Second // 40s at full speed: 5s too many
	d := step()
	if p.duty != 1 {
		t.Fatalf("duty %g with %d messages (%s at full speed) and the oldest %s old, want full speed (%s)",
			p.duty, n, time.Duration(n)*time.Millisecond, age, d.Reason)
	}
	if !strings.Contains(d.Reason, "behind schedule") {
		t.Errorf("reason %q does not say the backlog is behind schedule", d.Reason)
	}
	n, age = 30_000, 10*time.Second // 30s: on schedule again
	step()
	if p.duty >= 1 {
		t.Fatalf("duty %g once the backlog is back on schedule with the readers over budget, want the loop resting again", p.duty)
	}
}
