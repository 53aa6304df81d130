package loadtest

import (
	"container/heap"
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// job is one message on its way: from its arrival until it is accepted,
// fails, expires or the run ends.
type job struct {
	seq      uint64
	arr      Arrival
	due      time.Time // intended arrival time: latency counts from here
	rcpts    []string
	attempts int
	// notBefore is when a deferred message may be tried again.
	notBefore time.Time
	// final: the worker has decided the message's outcome.
	final bool
}

// generate emits the schedule's arrivals at their times, whatever the
// server does: it never waits for a session, only for the clock. The
// dispatcher takes them into its backlog at once.
func (r *run) generate(ctx context.Context) {
	defer close(r.arrivals)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for seq := uint64(0); ; seq++ {
		a, err := r.cfg.Schedule.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			r.genErr = err
			return
		}
		due := r.start.Add(a.At)
		// Sleeping for less than a millisecond costs more in wake-ups than
		// it gains in precision; such arrivals go out a little early,
		// their latency still counted from the intended time.
		if wait := time.Until(due); wait > time.Millisecond {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		j := &job{seq: seq, arr: a, due: due, rcpts: r.recipients(seq, a)}
		r.stats.offer(time.Now())
		select {
		case r.arrivals <- j:
		case <-ctx.Done():
			r.stats.finish(j, stateUnsent, time.Now())
			return
		}
	}
}

// dispatch owns the backlog: arrivals waiting for a free session (FIFO)
// and deferred messages waiting for their retry time (a heap). Workers take
// jobs from r.jobs and hand every job back on r.back, final or to retry.
// It closes r.jobs when nothing is left, or the drain timeout passed after
// the last arrival.
func (r *run) dispatch(ctx context.Context) {
	defer close(r.jobs)
	var ready []*job
	delayed := &jobHeap{}
	outstanding := 0 // handed to a worker and not yet back
	arrivals := r.arrivals
	var drainC <-chan time.Time
	aborting := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var timerAt time.Time
	done := ctx.Done()

	abort := func() {
		aborting = true
		now := time.Now()
		for _, j := range ready {
			r.stats.finish(j, stateUnsent, now)
		}
		ready = nil
		for delayed.Len() > 0 {
			r.stats.finish(heap.Pop(delayed).(*job), stateUnsent, now)
		}
	}
	for {
		r.backlog.Store(int64(len(ready)))
		r.retrying.Store(int64(delayed.Len()))
		if arrivals == nil && len(ready) == 0 && delayed.Len() == 0 && outstanding == 0 {
			return
		}
		var out chan<- *job
		var head *job
		if len(ready) > 0 {
			out, head = r.jobs, ready[0]
		}
		var timerC <-chan time.Time
		if delayed.Len() > 0 {
			if next := (*delayed)[0].notBefore; !next.Equal(timerAt) {
				timer.Reset(time.Until(next))
				timerAt = next
			}
			timerC = timer.C
		}
		select {
		case j, ok := <-arrivals:
			if !ok {
				arrivals = nil
				r.loadEnd.Store(time.Now().UnixNano())
				if ctx.Err() != nil {
					abort()
				} else {
					drainC = time.After(r.cfg.DrainTimeout)
				}
				continue
			}
			if aborting {
				r.stats.finish(j, stateUnsent, time.Now())
				continue
			}
			ready = append(ready, j)
		case out <- head:
			ready[0] = nil
			ready = ready[1:]
			outstanding++
		case j := <-r.back:
			outstanding--
			if !j.final {
				if aborting {
					r.stats.finish(j, stateUnsent, time.Now())
				} else {
					heap.Push(delayed, j)
				}
			}
		case <-timerC:
			timerAt = time.Time{}
			now := time.Now()
			for delayed.Len() > 0 && !(*delayed)[0].notBefore.After(now) {
				ready = append(ready, heap.Pop(delayed).(*job))
			}
		case <-drainC:
			drainC = nil
			abort()
		case <-done:
			done = nil
			abort()
		}
	}
}

// backoff is the wait before attempt n+1 after n refusals.
func (p RetryPolicy) backoff(n int, rng *rand.Rand) time.Duration {
	d := float64(p.Initial) * math.Pow(p.Multiplier, float64(max(0, n-1)))
	d = min(d, float64(p.Max))
	if p.Jitter > 0 {
		d *= 1 + p.Jitter*(2*rng.Float64()-1)
	}
	return time.Duration(d)
}

// jobHeap orders deferred jobs by their retry time.
type jobHeap []*job

func (h jobHeap) Len() int           { return len(h) }
func (h jobHeap) Less(i, j int) bool { return h[i].notBefore.Before(h[j].notBefore) }
func (h jobHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *jobHeap) Push(x any)        { *h = append(*h, x.(*job)) }
func (h *jobHeap) Pop() any {
	old := *h
	n := len(old)
	x := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return x
}

// gauges read by the sampler.
type gauges struct {
	backlog, retrying, sessions atomic.Int64
	loadEnd                     atomic.Int64 // unix nanos of the last arrival's emission (0: still offering)
}
