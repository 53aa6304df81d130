package worker

import (
	"testing"
	"time"
)

// simReaders are a web app's readers on the simulated store: their p99 is
// 5ms idle and grows 5ms with every writer, so that a 25ms floor (over
// 1.5x the idle 5ms) allows four writers.
type simReaders struct{ s *simStore }

func (r simReaders) ReadLatency() (recent, idle time.Duration, since time.Time, ok bool) {
	return 5*time.Millisecond + time.Duration(r.s.writers())*5*time.Millisecond, 5 * time.Millisecond, r.s.clock.Now(), true
}

// TestAutoscaleHoldsReadersWithinTheirBudget: a store that takes eleven
// loops within its write budget, but whose readers slow with every writer,
// is drained by as many loops as keep the readers' p99 within budget.
func TestAutoscaleHoldsReadersWithinTheirBudget(t *testing.T) {
	s := newSim(t, 1, 1, 16)
	fastish(s)
	cfg := simCfg
	cfg.ReaderBudget, cfg.ReaderFloor = 1.5, 25*time.Millisecond
	a := s.autoscaler(cfg, nil)
	a.readers = simReaders{s}
	s.add(1_000_000)
	warm := s.run(a, time.Minute)
	if !decided(warm, "reader p99") {
		trace(t, warm, 1)
		t.Fatal("the limit never came down although the readers went over their budget")
	}
	ds := s.run(a, 5*time.Minute)
	sum, most := 0, 0
	for _, d := range ds {
		sum += d.Next
		most = max(most, d.Next)
	}
	if mean := float64(sum) / float64(len(ds)); mean < 2.5 || mean > 4.5 || most > 5 {
		trace(t, ds, 10)
		t.Fatalf("concurrency mean %.1f, max %d; the readers' budget allows 4", mean, most)
	}

	// Readers not measured (too few reads): only the store's budget binds.
	s2 := newSim(t, 1, 1, 16)
	fastish(s2)
	a2 := s2.autoscaler(cfg, nil)
	a2.readers = unmeasured{}
	s2.add(1_000_000)
	s2.run(a2, time.Minute)
	if c := s2.Concurrency(); c < 8 {
		t.Errorf("concurrency %d with the readers unmeasured, want the store's >= 8", c)
	}
}

type unmeasured struct{}

func (unmeasured) ReadLatency() (time.Duration, time.Duration, time.Time, bool) {
	return 0, 0, time.Time{}, false
}
