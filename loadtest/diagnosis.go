package loadtest

import (
	"fmt"
	"strings"
	"time"
)

// Diagnosis names what bound a run, read from the shapes the report plots
// (accepted against offered, the senders' backlog, the queue, the readers,
// the catch-up), so that a load tester need not read the curves to know
// where to look. It also carries the surge recipe's ratios
// (docs/loadtesting.md).
type Diagnosis struct {
	// Bottleneck is "queue" (its limits deferred senders), "receiver"
	// (senders waited to be accepted while the queue had room), "store"
	// (everything was accepted, but the drain fell behind the arrivals or
	// the readers slowed), or "none".
	Bottleneck string `json:"bottleneck"`
	// Why is the evidence, in words.
	Why string `json:"why"`

	// AcceptedShare is accepted over offered within the load phases
	// (during a surge, or the whole load).
	AcceptedShare float64 `json:"accepted_share"`
	// SenderBacklogPeak is the most messages that waited at the senders
	// (for a session, or for a retry after a 4xx).
	SenderBacklogPeak int64 `json:"sender_backlog_peak"`
	// QueuePeak and QueuePeakFill are the queue at its fullest (0 without
	// --api).
	QueuePeak     uint64  `json:"queue_peak"`
	QueuePeakFill float64 `json:"queue_peak_fill"`
	// Reader p99 during the load and while the backlog drained, over the
	// p99 before it (0 without a reader probe or a before phase).
	ReaderDuringOverBefore float64 `json:"reader_p99_during_over_before,omitempty"`
	ReaderAfterOverBefore  float64 `json:"reader_p99_after_over_before,omitempty"`
	ReaderDrainOverBefore  float64 `json:"reader_p99_drain_over_before,omitempty"`
}

// The judgement's thresholds.
const (
	// keptUpShare: a receiver accepting this share of what was offered in
	// the load phases kept up.
	keptUpShare = 0.9
	// queueBindsFill: a queue this full is at its limits (the receiver's
	// 452 watermark defaults to 0.9).
	queueBindsFill = 0.85
	// queueDeferredShare: deferrals with 452 4.3.1 above this share of
	// the offered messages mean the queue's limits deferred senders.
	queueDeferredShare = 0.01
	// readerBudget: readers slower than this many times their p99 before
	// the load were slowed by the drain (issue: reader budget 1.5x idle).
	readerBudget = 1.5
	// drainJudged: a catch-up longer than this puts the store's drain in
	// the drain phase, whose readers then count.
	drainJudged = 5 * time.Second
)

// diagnose fills res.Diagnosis from the rest of res.
func (res *Result) diagnose() {
	d := &Diagnosis{Bottleneck: "none"}
	res.Diagnosis = d
	s := res.Series
	var offered, accepted float64
	var loadTime float64
	for _, ph := range res.Phases {
		if ph.Name != PhaseDuring && ph.Name != PhaseLoad {
			continue
		}
		loadTime += (ph.End - ph.Start).Seconds()
		for i, t := range s.T {
			if t >= ph.Start.Seconds() && t < ph.End.Seconds() {
				offered += s.Offered[i] * s.Interval
				accepted += s.Accepted[i] * s.Interval
			}
		}
	}
	if offered > 0 {
		d.AcceptedShare = accepted / offered
	}
	for _, b := range s.Backlog {
		d.SenderBacklogPeak = max(d.SenderBacklogPeak, b)
	}
	for _, q := range res.Queue {
		if q.Messages >= d.QueuePeak {
			d.QueuePeak, d.QueuePeakFill = q.Messages, q.Fill
		}
	}
	if rd := res.Readers; rd != nil {
		p99 := map[string]float64{}
		for _, p := range rd.Phases {
			if p.Latency.Count > 0 {
				p99[p.Phase] = p.Latency.P99
			}
		}
		if before := p99[PhaseBefore]; before > 0 {
			d.ReaderDuringOverBefore = p99[PhaseDuring] / before
			d.ReaderAfterOverBefore = p99[PhaseAfter] / before
			d.ReaderDrainOverBefore = p99[PhaseDrain] / before
		}
	}
	var queueFull int64
	for _, r := range res.Replies {
		if strings.HasPrefix(r.Reply, "452 4.3.1") {
			queueFull += r.Count
		}
	}
	catchUp := 0.0
	if res.Audit != nil {
		catchUp = res.Audit.CatchUp
	}
	// The drain phase counts only when there was a drain to speak of: a
	// catch-up within drainJudged leaves it a handful of requests, whose
	// p99 is one of them.
	if catchUp <= drainJudged.Seconds() {
		d.ReaderDrainOverBefore = 0
	}
	slowest := max(d.ReaderDuringOverBefore, d.ReaderAfterOverBefore, d.ReaderDrainOverBefore)
	switch {
	case res.Counts.Offered > 0 && float64(queueFull) > queueDeferredShare*float64(res.Counts.Offered),
		d.QueuePeakFill >= queueBindsFill:
		d.Bottleneck = "queue"
		d.Why = fmt.Sprintf("the queue's limits deferred senders: %d replies 452 4.3.1, queue peak %d messages (fill %.0f%%); raise queue.max_msgs/max_bytes if the disks have room, or drain faster",
			queueFull, d.QueuePeak, d.QueuePeakFill*100)
	case offered > 0 && d.AcceptedShare < keptUpShare:
		d.Bottleneck = "receiver"
		d.Why = fmt.Sprintf("senders waited to be accepted while the queue had room: %.0f%% of the offered mail accepted during the load, up to %d messages waiting at the senders, queue fill at most %.0f%%",
			d.AcceptedShare*100, d.SenderBacklogPeak, d.QueuePeakFill*100)
	case loadTime > 0 && catchUp > loadTime:
		d.Bottleneck = "store"
		d.Why = fmt.Sprintf("everything offered was accepted, but draining the queue (peak %d) into the store took %s after the last arrival, longer than the load lasted (%s)",
			d.QueuePeak, secs(catchUp), secs(loadTime))
	case slowest > readerBudget:
		d.Bottleneck = "store"
		d.Why = fmt.Sprintf("everything offered was accepted, but readers slowed %.2fx (p99 against before the load), over the %.1fx budget: the drain contends with them in the store",
			slowest, readerBudget)
	default:
		d.Why = fmt.Sprintf("the receiver accepted %.0f%% of the offered mail during the load, the queue peaked at %d messages (fill %.0f%%) and drained %s after the last arrival",
			d.AcceptedShare*100, d.QueuePeak, d.QueuePeakFill*100, secs(catchUp))
		if slowest > 0 {
			d.Why += fmt.Sprintf(", readers within %.2fx of their p99 before", slowest)
		}
	}
}
