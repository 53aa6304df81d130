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
	d := newDispatcher(r)
	arrivals := r.arrivals
	var drainC <-chan time.Time
	done := ctx.Done()
	for {
		r.backlog.Store(int64(len(d.ready)))
		r.retrying.Store(int64(d.delayed.Len()))
		if arrivals == nil && d.empty() {
			return
		}
		// A send on a nil channel never proceeds: nothing is offered to
		// the workers while no job is ready.
		var out chan<- *job
		var head *job
		if len(d.ready) > 0 {
			out, head = r.jobs, d.ready[0]
		}
		retryC := d.retryTimer()
		select {
		case j, ok := <-arrivals:
			if !ok {
				arrivals = nil
				drainC = d.arrivalsEnded(ctx)
				continue
			}
			d.arrived(j)
		case out <- head:
			d.ready[0] = nil
			d.ready = d.ready[1:]
			d.outstanding++
		case j := <-r.back:
			d.returned(j)
		case <-retryC:
			d.releaseDue()
		case <-drainC:
			drainC = nil
			d.abort()
		case <-done:
			done = nil
			d.abort()
		}
	}
}

// dispatcher is the backlog dispatch holds between its select rounds. Only
// the dispatch goroutine touches it, so it needs no lock; the backlog and
// retrying gauges publish its size to the sampler.
type dispatcher struct {
	r           *run
	ready       []*job  // waiting for a free session, first come first served
	delayed     jobHeap // deferred, waiting for their retry time
	outstanding int     // handed to a worker and not yet back
	// aborting: the run is over (interrupted, or the drain timeout
	// passed), so whatever arrives or comes back to retry is unsent.
	aborting bool
	timer    *time.Timer
	timerAt  time.Time // the retry time timer is set for, to reset it only when that changes
}

func newDispatcher(r *run) *dispatcher {
	d := &dispatcher{r: r, timer: time.NewTimer(time.Hour)}
	d.timer.Stop()
	return d
}

// empty: no job waits and none is with a worker, so none can come back.
func (d *dispatcher) empty() bool {
	return len(d.ready) == 0 && d.delayed.Len() == 0 && d.outstanding == 0
}

// retryTimer returns the channel that fires when the earliest deferred job
// is due, or nil when none is deferred.
func (d *dispatcher) retryTimer() <-chan time.Time {
	if d.delayed.Len() == 0 {
		return nil
	}
	if next := d.delayed[0].notBefore; !next.Equal(d.timerAt) {
		d.timer.Reset(time.Until(next))
		d.timerAt = next
	}
	return d.timer.C
}

// arrivalsEnded marks the end of the load and returns the drain timeout's
// channel; an interrupted run gets none and stops at once.
func (d *dispatcher) arrivalsEnded(ctx context.Context) <-chan time.Time {
	d.r.loadEnd.Store(time.Now().UnixNano())
	if ctx.Err() != nil {
		d.abort()
		return nil
	}
	return time.After(d.r.cfg.DrainTimeout)
}

// arrived puts a new arrival at the back of the line, unless the run is
// over: then it will never be sent.
func (d *dispatcher) arrived(j *job) {
	if d.aborting {
		d.r.stats.finish(j, stateUnsent, time.Now())
		return
	}
	d.ready = append(d.ready, j)
}

// returned takes a job back from a worker: a final one is done, the others
// wait for their retry time.
func (d *dispatcher) returned(j *job) {
	d.outstanding--
	if j.final {
		return
	}
	if d.aborting {
		d.r.stats.finish(j, stateUnsent, time.Now())
		return
	}
	heap.Push(&d.delayed, j)
}

// releaseDue moves the deferred jobs whose retry time has come behind the
// waiting arrivals.
func (d *dispatcher) releaseDue() {
	d.timerAt = time.Time{}
	now := time.Now()
	for d.delayed.Len() > 0 && !d.delayed[0].notBefore.After(now) {
		d.ready = append(d.ready, heap.Pop(&d.delayed).(*job))
	}
}

// abort ends the run for every job still waiting: they count as unsent.
// Jobs with a worker finish their attempt and are counted when they come
// back.
func (d *dispatcher) abort() {
	d.aborting = true
	now := time.Now()
	for _, j := range d.ready {
		d.r.stats.finish(j, stateUnsent, now)
	}
	d.ready = nil
	for d.delayed.Len() > 0 {
		d.r.stats.finish(heap.Pop(&d.delayed).(*job), stateUnsent, now)
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
