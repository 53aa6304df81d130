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

// paced is an autoscaler of one loop that can rest, with readers over
// budget until told otherwise, on a fake clock.
type paced struct {
	a           *Autoscaler
	pool        *dutyCountingPool
	stats       loopStats
	clock       *fakeClock
	over, stale bool
}

func newPaced(t *testing.T, maxLoops int, backlog Backlog) *paced {
	t.Helper()
	p := &paced{pool: &dutyCountingPool{countingPool: countingPool{n: 1}, duty: 1}, clock: newFakeClock(), over: true}
	cfg := simCfg // target_drain 1m
	cfg.Min, cfg.Max = 1, maxLoops
	a, err := newAutoscaler(cfg, scaled{p.pool, &p.stats, 16, 0}, AutoscalerDeps{Backlog: backlog, Clock: p.clock,
		Registerer: prometheus.NewRegistry(), Readers: switchReaders{p.clock, &p.over, &p.stale}})
	if err != nil {
		t.Fatal(err)
	}
	p.a = a
	return p
}

// step records enough full batches of 16 messages, written in a
// millisecond and handled at 1,000 messages a second, to judge by, and
// steps a second on.
func (p *paced) step() Decision {
	for range minEvidence {
		p.stats.recordWrite(time.Millisecond, 16, true, nil)
		p.stats.recordBatch(16, 16*time.Millisecond, true)
	}
	p.clock.Advance(time.Second)
	return p.a.Step(context.Background())
}

// TestLoopsRestWhileReadersSufferAtTheFloor: with one loop (the floor)
// and the readers over budget, the loops' duty cycle drops by the limit's
// factor each interval down to a quarter; with the readers back within
// budget it climbs back by an eighth per interval after the cooldown, and
// the limit stays put until it is back to 1.
func TestLoopsRestWhileReadersSufferAtTheFloor(t *testing.T) {
	ps := newPaced(t, 16, fixedBacklog(100))
	a, p, step := ps.a, ps.pool, ps.step
	cfg := a.cfg
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
	ps.over, ps.stale = false, true
	for range 3 * int(cfg.Cooldown/time.Second) {
		step()
	}
	if p.duty != minDuty {
		t.Fatalf("duty %g with no fresh reader window since the cut, want it held at %g", p.duty, minDuty)
	}
	ps.stale = false
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

// movingBacklog is a backlog of *n messages whose oldest is *age old.
type movingBacklog struct {
	n   *uint64
	age *time.Duration
}

func (b movingBacklog) Backlog(context.Context) (uint64, time.Duration, error) {
	return *b.n, *b.age, nil
}

// TestLoopsCatchUpOnALateBacklog: with the readers over budget at the
// floor the loop rests while the oldest message is younger than nine
// tenths of target_drain, however large the backlog. From then on it works
// at full speed until the oldest message is younger than a quarter of
// target_drain and the backlog would drain in less than that at the
// measured full speed; then it rests again.
func TestLoopsCatchUpOnALateBacklog(t *testing.T) {
	n, age := uint64(10_000), time.Second
	ps := newPaced(t, 1, movingBacklog{&n, &age}) // 1,000 messages a second; catch up from 54s until 15s
	p, step := ps.pool, ps.step
	phase := func(what string, msgs uint64, oldest time.Duration, steps int, wantFull bool) {
		t.Helper()
		n, age = msgs, oldest
		for range steps {
			d := step()
			if full := p.duty == 1; full != wantFull {
				t.Fatalf("%s (%d messages, the oldest %s old): duty %g, want full speed: %v (%s)", what, n, age, p.duty, wantFull, d.Reason)
			}
		}
	}
	for range 6 {
		step()
	}
	if p.duty != minDuty {
		t.Fatalf("duty %g with the readers over budget and mail on time, want %g", p.duty, minDuty)
	}
	phase("a large backlog of young mail: the readers set the pace", 60_000, 10*time.Second, 10, false)
	phase("the oldest message has waited 55s", 1_000, 55*time.Second, 1, true)
	phase("catching up, the oldest not young yet", 500, 20*time.Second, 10, true)
	phase("catching up, the backlog takes a minute", 60_000, 10*time.Second, 10, true)
	phase("caught up", 500, 10*time.Second, 1, false)
}
