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
// is drained by as many loops as keep the readers' p99 within budget, while
// the mail is not late (target_drain an hour here, and a backlog that asks
// for every loop to drain within it). Once it is, the readers
// no longer cap the loops: the store's budget does.
func TestAutoscaleHoldsReadersWithinTheirBudget(t *testing.T) {
	s := newSim(t, 1, 1, 16)
	fastish(s)
	cfg := simCfg
	cfg.ReaderBudget, cfg.ReaderFloor = 1.5, 25*time.Millisecond
	cfg.TargetDrain = time.Hour
	a := s.autoscaler(cfg, nil)
	a.readers = simReaders{s}
	s.add(20_000_000) // within an hour: more loops than the store takes
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

	// The same readers once the oldest message is older than target_drain
	// (a minute): the store's budget binds, and the loop limit the
	// readers' breaches left behind does not hold the mail back.
	late := cfg
	late.TargetDrain = time.Minute
	s3 := newSim(t, 1, 1, 16)
	fastish(s3)
	a3 := s3.autoscaler(late, nil)
	a3.readers = simReaders{s3}
	s3.add(1_000_000)
	early := s3.run(a3, 50*time.Second)
	if c := s3.Concurrency(); !decided(early, "reader p99") || c > 5 {
		trace(t, early, 1)
		t.Fatalf("concurrency %d before the mail was late; the readers' budget allows 4", c)
	}
	s3.run(a3, 2*time.Minute)
	if c := s3.Concurrency(); c < 8 {
		t.Errorf("concurrency %d with mail older than target_drain, want the store's >= 8 whatever the readers", c)
	}

	// Readers not measured (too few reads): only the store's budget binds.
	s2 := newSim(t, 1, 1, 16)
	fastish(s2)
	a2 := s2.autoscaler(late, nil)
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

// TestLateMailForgetsTheReadersBreach: a breach the readers made leaves a
// level the limiter waits up to 16 cooldowns to probe again; once mail is
// late the readers no longer set the pace, so that level is forgotten and
// the limit climbs past it after the ordinary cooldown. A breach of the
// store's own budget is kept.
func TestLateMailForgetsTheReadersBreach(t *testing.T) {
	cfg := simCfg
	cfg.Min, cfg.Max, cfg.Decrease, cfg.Increase = 1, 16, 0.5, 1
	budget := cfg.LatencyBudget
	healthy := evidence{p95: time.Millisecond, budget: budget, writes: minEvidence}
	for _, c := range []struct {
		name   string
		breach evidence
		forget bool
	}{
		{"readers", evidence{p95: time.Millisecond, budget: budget, writes: minEvidence, readers: "reader p99 over budget"}, true},
		{"store", evidence{p95: time.Second, budget: budget, writes: minEvidence}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			now := time.Unix(0, 0)
			l := newLimiter(cfg, 4)
			// Breach at 4 twice: the second doubles the probe delay.
			l.update(now, 4, c.breach)
			now = now.Add(cfg.Cooldown)
			l.limit = 4
			l.update(now, 4, c.breach)
			if l.limit != 2 || l.breachLevel != 4 {
				t.Fatalf("after two breaches at 4: limit %d, breach level %d", l.limit, l.breachLevel)
			}
			l.excuseReaders()
			now = now.Add(cfg.Cooldown)
			l.update(now, 2, healthy) // 2 -> 3
			l.update(now, 3, healthy) // 3 -> 4, unless 4 is still a breach level waiting out its delay
			if got := l.limit >= 4; got != c.forget {
				t.Fatalf("limit %d one cooldown after a %s breach at 4 was excused (forgotten: want %v)", l.limit, c.name, c.forget)
			}
		})
	}
}
