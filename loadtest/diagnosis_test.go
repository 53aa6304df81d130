package loadtest

import (
	"strings"
	"testing"
	"time"
)

// surgeResult is a run of 10 one-second buckets with a surge from 2 s to
// 6 s offering 100/s, accepting accept/s, whose readers had p99 before and
// during as given.
func surgeResult(accept float64, backlog int64, fill float64, catchUp float64, before, during float64, replies []ReplyCount) *Result {
	res := &Result{
		Counts:  Counts{Offered: 400},
		Replies: replies,
		Phases: []Phase{{Name: PhaseBefore, End: 2 * time.Second}, {Name: PhaseDuring, Start: 2 * time.Second, End: 6 * time.Second},
			{Name: PhaseAfter, Start: 6 * time.Second, End: 10 * time.Second}},
		Series: Series{Interval: 1},
		Queue:  []QueuePoint{{T: 3, Messages: 40, Fill: fill / 2}, {T: 5, Messages: 80, Fill: fill}},
		Audit:  &AuditResult{CatchUp: catchUp},
		Readers: &ReaderResult{Phases: []ReaderPhase{
			{Phase: PhaseBefore, Latency: Quantiles{Count: 100, P99: before}},
			{Phase: PhaseDuring, Latency: Quantiles{Count: 100, P99: during}},
		}},
	}
	for i := range 10 {
		off, acc := 0.0, 0.0
		if i >= 2 && i < 6 {
			off, acc = 100, accept
		}
		res.Series.T = append(res.Series.T, float64(i))
		res.Series.Offered = append(res.Series.Offered, off)
		res.Series.Accepted = append(res.Series.Accepted, acc)
		res.Series.Backlog = append(res.Series.Backlog, backlog*int64(min(i, 3)))
	}
	return res
}

func TestDiagnosisNamesTheBottleneck(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  *Result
		want string
		why  string
	}{
		{"queue limits deferred senders", surgeResult(95, 10, 0.5, 3, 0.005, 0.006, []ReplyCount{{Reply: "452 4.3.1 Mail system full", Count: 30}}), "queue", "452 4.3.1"},
		{"queue at its watermark", surgeResult(95, 10, 0.9, 3, 0.005, 0.006, nil), "queue", "fill 90%"},
		{"receiver behind, queue with room", surgeResult(60, 500, 0.02, 3, 0.005, 0.006, nil), "receiver", "60% of the offered"},
		{"drain slower than the arrivals", surgeResult(100, 5, 0.1, 9, 0.005, 0.006, nil), "store", "longer than the load"},
		{"readers slowed past the budget", surgeResult(100, 5, 0.1, 2, 0.005, 0.02, nil), "store", "readers slowed 4.00x"},
		// Rounded to one decimal, 1.546x read "slowed 1.5x, over the 1.5x
		// budget" in make surge.
		{"readers just past the budget", surgeResult(100, 5, 0.1, 2, 0.01, 0.01546, nil), "store", "readers slowed 1.55x"},
		{"kept up", surgeResult(99, 5, 0.1, 2, 0.005, 0.006, nil), "none", "99% of the offered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.res.diagnose()
			d := tc.res.Diagnosis
			if d.Bottleneck != tc.want || !strings.Contains(d.Why, tc.why) {
				t.Errorf("diagnosis %q: %s; want %q, mentioning %q", d.Bottleneck, d.Why, tc.want, tc.why)
			}
		})
	}
	// A drain phase after a prompt catch-up is a handful of requests: not
	// judged, nor reported.
	audit := surgeResult(99, 5, 0.1, 0.1, 0.005, 0.006, nil)
	audit.Readers.Phases = append(audit.Readers.Phases, ReaderPhase{Phase: PhaseDrain, Latency: Quantiles{Count: 3, P99: 0.1}})
	audit.diagnose()
	if audit.Diagnosis.Bottleneck != "none" || audit.Diagnosis.ReaderDrainOverBefore != 0 {
		t.Errorf("a drain of 0.1s: %+v", audit.Diagnosis)
	}
	d := surgeResult(60, 500, 0.02, 3, 0.005, 0.006, nil)
	d.diagnose()
	if got := d.Diagnosis; got.SenderBacklogPeak != 1500 || got.QueuePeak != 80 || got.ReaderDuringOverBefore < 1.19 || got.ReaderDuringOverBefore > 1.21 {
		t.Errorf("figures %+v", got)
	}
}
