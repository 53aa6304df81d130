package worker

import (
	"math"
	"sync"
	"time"
)

// latencyHist counts durations in log-spaced buckets (eight per doubling,
// about 9% wide) from histMin up to several minutes: a fixed-size summary,
// so that measuring the store costs the same memory at 10 writes a second
// as at 10,000.
type latencyHist struct {
	counts [histBuckets]uint32
	n      uint32
}

const (
	histMin     = 50 * time.Microsecond
	histPerOct  = 8
	histBuckets = 24*histPerOct + 1 // up to histMin * 2^24, about 14 minutes
)

// histIndex is the first bucket whose upper bound is >= d.
func histIndex(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	i := int(math.Ceil(histPerOct * math.Log2(float64(d)/float64(histMin))))
	return min(i, histBuckets-1)
}

// histBound is the upper bound of bucket i.
func histBound(i int) time.Duration {
	return time.Duration(float64(histMin) * math.Exp2(float64(i)/histPerOct))
}

func (h *latencyHist) observe(d time.Duration) {
	h.counts[histIndex(d)]++
	h.n++
}

func (h *latencyHist) add(o *latencyHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// without is h less the durations of o, which h holds.
func (h latencyHist) without(o *latencyHist) latencyHist {
	for i, c := range o.counts {
		h.counts[i] -= c
	}
	h.n -= o.n
	return h
}

// quantile returns the upper bound of the bucket holding the q-quantile
// (nearest rank): it errs high by at most one bucket width, which is the
// safe side for a latency budget. 0 when empty.
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint32(math.Ceil(q * float64(h.n)))
	var seen uint32
	for i, c := range h.counts {
		seen += c
		if seen >= max(rank, 1) {
			return histBound(i)
		}
	}
	return histBound(histBuckets - 1)
}

// sampleSet is what the delivery loops did between two autoscaler steps.
type sampleSet struct {
	// writes and failed count store transactions; lat holds their durations
	// (failed ones too: a write that timed out is the strongest evidence of
	// an overloaded store there is).
	writes, failed int
	lat            latencyHist
	// full holds the durations of the writes of full batches (a subset of
	// lat): a write takes longer the more it holds, so the store is judged
	// against its idle latency for writes of the same kind
	// (autoscale_budget.go).
	full latencyHist
	// Batches take busy loop-time: from the fetch (when the batch came back
	// full, so the fetch did not wait for mail) or from the end of the fetch
	// (when it waited) to the last ack. Idle waiting is left out. Full
	// batches measure what a loop can do; partial ones only bound it from
	// above (a full batch would have taken longer), see Autoscaler.perLoopSample.
	fullMsgs    int
	fullBusy    time.Duration
	partBatches int
	partBusy    time.Duration
	// stored counts messages in committed transactions.
	stored int
}

// loopStats collects samples from every delivery loop until the autoscaler
// takes them. The worker always records (it is a few additions under a
// mutex per batch); without an autoscaler nobody takes them, and the set
// stays the same size.
type loopStats struct {
	mu  sync.Mutex
	cur sampleSet
}

// recordWrite records a store transaction of msgs messages that took d;
// full says the batch held at least half of what a loop fetches.
func (s *loopStats) recordWrite(d time.Duration, msgs int, full bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.writes++
	s.cur.lat.observe(d)
	if full {
		s.cur.full.observe(d)
	}
	if err != nil {
		s.cur.failed++
		return
	}
	s.cur.stored += msgs
}

func (s *loopStats) recordBatch(msgs int, busy time.Duration, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if full {
		s.cur.fullMsgs += msgs
		s.cur.fullBusy += busy
		return
	}
	s.cur.partBatches++
	s.cur.partBusy += busy
}

// take returns the samples since the last take and starts a new set.
func (s *loopStats) take() sampleSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.cur
	s.cur = sampleSet{}
	return out
}
