package worker

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeClock moves only when told to.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2018, 11, 26, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	return ch
}

// Advance moves the clock and fires the timers that came due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.waiters = slices.DeleteFunc(c.waiters, func(w fakeWaiter) bool {
		if w.at.After(c.now) {
			return false
		}
		w.ch <- c.now
		return true
	})
}

// Waiters is how many timers are pending.
func (c *fakeClock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// simStore is a model of a worker draining a queue into a database whose
// write latency rises with the writes in flight: latency = (base + perMsg *
// messages + perInFlight * writers) * (1 + jitter*U[0,1)). It stands in for the
// worker's loops (it is the autoscaler's pool and fills its loopStats) and
// for the queue (it is the Backlog), on a fake clock: minutes of traffic
// simulate in milliseconds, deterministically.
type simStore struct {
	t        *testing.T
	clock    *fakeClock
	tick     time.Duration
	batch    int
	overhead time.Duration // fetch and acks per batch
	min, max int

	// The store's behaviour and the traffic; tests change them between runs.
	base, perMsg, perInFlight time.Duration
	jitter                    float64
	arrival                   float64 // messages per second
	// noise varies the arrival rate each second, uniformly within ±noise.
	noise  float64
	bucket *tokenBucket

	rng              *rand.Rand
	stats            loopStats
	loops            []*simLoop
	queue            []simChunk // not yet taken by a loop, oldest first
	queued, inflight int
	carry            float64
	rateNow          float64
	rateUntil        time.Time

	writes  []simWrite
	maxConc int
}

type simLoop struct {
	stopping  bool
	waiting   bool // for write tokens
	busy      bool
	until     time.Time
	n         int
	lat       time.Duration
	oldest    time.Time
	tokensOut int
}

type simChunk struct {
	at time.Time
	n  int
}

type simWrite struct {
	at  time.Time
	lat time.Duration
	n   int
}

func newSim(t *testing.T, start int, min, max int) *simStore {
	s := &simStore{
		t: t, clock: newFakeClock(), tick: 5 * time.Millisecond, batch: 16, overhead: 2 * time.Millisecond,
		min: min, max: max, rng: rand.New(rand.NewPCG(1, 2)),
	}
	s.SetConcurrency(start)
	return s
}

func (s *simStore) Concurrency() int {
	n := 0
	for _, l := range s.loops {
		if !l.stopping {
			n++
		}
	}
	return n
}

func (s *simStore) SetConcurrency(n int) {
	if n < s.min || n > s.max {
		s.t.Errorf("SetConcurrency(%d) outside [%d, %d]", n, s.min, s.max)
	}
	var live []*simLoop
	for _, l := range s.loops {
		if !l.stopping {
			live = append(live, l)
		}
	}
	for len(live) < n {
		l := &simLoop{}
		s.loops = append(s.loops, l)
		live = append(live, l)
	}
	for i := n; i < len(live); i++ {
		live[i].stopping = true // finishes its batch first, as a worker loop does
	}
	s.maxConc = max(s.maxConc, n)
}

func (s *simStore) Backlog(context.Context) (uint64, time.Duration, error) {
	now := s.clock.Now()
	oldest := now
	if len(s.queue) > 0 {
		oldest = s.queue[0].at
	}
	for _, l := range s.loops {
		if l.busy && l.oldest.Before(oldest) {
			oldest = l.oldest
		}
	}
	return uint64(s.queued + s.inflight), now.Sub(oldest), nil
}

func (s *simStore) add(n int) {
	s.queue = append(s.queue, simChunk{s.clock.Now(), n})
	s.queued += n
}

// take removes up to n messages from the front of the queue.
func (s *simStore) take(n int) (int, time.Time) {
	n = min(n, s.queued)
	if n == 0 {
		return 0, time.Time{}
	}
	oldest := s.queue[0].at
	left := n
	for left > 0 {
		c := &s.queue[0]
		k := min(left, c.n)
		c.n -= k
		left -= k
		if c.n == 0 {
			s.queue = s.queue[1:]
		}
	}
	s.queued -= n
	return n, oldest
}

func (s *simStore) writers() int {
	n := 0
	for _, l := range s.loops {
		if l.busy {
			n++
		}
	}
	return n
}

func (s *simStore) step() {
	now := s.clock.Now()
	if !now.Before(s.rateUntil) {
		s.rateNow = s.arrival * (1 + s.noise*(2*s.rng.Float64()-1))
		s.rateUntil = now.Add(time.Second)
	}
	s.carry += s.rateNow * s.tick.Seconds()
	if k := int(s.carry); k > 0 {
		s.carry -= float64(k)
		s.add(k)
	}
	// Batches finish: commit, ack, report.
	for _, l := range s.loops {
		if l.busy && !l.until.After(now) {
			l.busy = false
			s.inflight -= l.n
			s.stats.recordWrite(l.lat, l.n, 2*l.n >= s.batch, nil)
			s.stats.recordBatch(l.n, s.overhead+l.lat, l.n == s.batch)
			s.writes = append(s.writes, simWrite{now, l.lat, l.n})
		}
	}
	s.loops = slices.DeleteFunc(s.loops, func(l *simLoop) bool { return l.stopping && !l.busy })
	// Idle loops fetch.
	for _, l := range s.loops {
		if l.busy || s.queued == 0 && !l.waiting {
			continue
		}
		if s.bucket != nil && !l.waiting {
			l.waiting, l.tokensOut = true, s.batch
			l.until = now.Add(s.bucket.reserve(s.batch))
		}
		if l.waiting {
			if l.until.After(now) {
				continue
			}
			l.waiting = false
		}
		n, oldest := s.take(s.batch)
		if s.bucket != nil {
			s.bucket.refund(l.tokensOut - n)
		}
		if n == 0 {
			continue
		}
		lat := time.Duration(float64(s.base+s.perMsg*time.Duration(n)+s.perInFlight*time.Duration(s.writers()+1)) * (1 + s.jitter*s.rng.Float64()))
		l.busy, l.n, l.lat, l.oldest = true, n, lat, oldest
		l.until = now.Add(s.overhead + lat)
		s.inflight += n
	}
	s.clock.Advance(s.tick)
}

// run simulates d, stepping a every interval, and returns its decisions.
func (s *simStore) run(a *Autoscaler, d time.Duration) []Decision {
	var out []Decision
	end := s.clock.Now().Add(d)
	next := s.clock.Now().Add(a.cfg.Interval)
	for s.clock.Now().Before(end) {
		s.step()
		if !s.clock.Now().Before(next) {
			out = append(out, a.Step(context.Background()))
			next = next.Add(a.cfg.Interval)
		}
	}
	return out
}

func (s *simStore) autoscaler(cfg AutoscaleConfig, reg prometheus.Registerer) *Autoscaler {
	s.t.Helper()
	cfg.Min, cfg.Max = s.min, s.max
	var ceiling float64
	if s.bucket != nil {
		ceiling = s.bucket.rate
	}
	a, err := newAutoscaler(cfg, scaled{s, &s.stats, s.batch, ceiling}, AutoscalerDeps{Backlog: s, Clock: s.clock, Registerer: reg, Log: testLog(s.t)})
	if err != nil {
		s.t.Fatal(err)
	}
	return a
}

// p95Since is the p95 of the simulated writes from t on, exactly.
func (s *simStore) p95Since(t time.Time) time.Duration {
	var lats []time.Duration
	for _, w := range s.writes {
		if !w.at.Before(t) {
			lats = append(lats, w.lat)
		}
	}
	if len(lats) == 0 {
		return 0
	}
	slices.Sort(lats)
	return lats[(len(lats)*95+99)/100-1]
}

// writtenBetween counts messages written in [from, to).
func (s *simStore) writtenBetween(from, to time.Time) int {
	n := 0
	for _, w := range s.writes {
		if !w.at.Before(from) && w.at.Before(to) {
			n += w.n
		}
	}
	return n
}

func changes(ds []Decision) int {
	n := 0
	for _, d := range ds {
		if d.Next != d.Current {
			n++
		}
	}
	return n
}
