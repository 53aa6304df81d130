package baseline

import (
	"testing"
	"time"
)

// TestBaselineIsTheLowestDecileWithinTheSpan: of twenty windows of 1..20ms
// the baseline is the third lowest (index 20/10), not the lucky minimum;
// windows older than the span are forgotten.
func TestBaselineIsTheLowestDecileWithinTheSpan(t *testing.T) {
	w := New(time.Minute)
	t0 := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	if d, n := w.Baseline(t0); d != 0 || n != 0 {
		t.Fatalf("empty: %s over %d windows, want none", d, n)
	}
	for i := 20; i >= 1; i-- { // in no particular order
		w.Add(t0.Add(time.Duration(20-i)*time.Second), time.Duration(i)*time.Millisecond)
	}
	if d, n := w.Baseline(t0.Add(19 * time.Second)); d != 3*time.Millisecond || n != 20 {
		t.Fatalf("baseline %s over %d windows, want 3ms over 20", d, n)
	}
	// 50s later the first ten windows (20ms down to 11ms) are over a minute old.
	if d, n := w.Baseline(t0.Add(70 * time.Second)); n != 10 || d != 2*time.Millisecond {
		t.Fatalf("baseline %s over %d windows after the span, want 2ms over 10", d, n)
	}
}
