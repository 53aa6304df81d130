package loadtest

import (
	"context"
	"errors"
	"io"
	"math"
	"testing"
	"time"
)

// arrivalsPer drains s and counts arrivals per interval.
func arrivalsPer(t *testing.T, s Schedule, iv time.Duration) []int {
	t.Helper()
	var counts []int
	prev := time.Duration(-1)
	for {
		a, err := s.Next()
		if errors.Is(err, io.EOF) {
			return counts
		}
		if err != nil {
			t.Fatal(err)
		}
		if a.At < prev {
			t.Fatalf("arrival at %s after one at %s", a.At, prev)
		}
		prev = a.At
		i := int(a.At / iv)
		for len(counts) <= i {
			counts = append(counts, 0)
		}
		counts[i]++
	}
}

func TestBurstScheduleShape(t *testing.T) {
	// 100/s, 5x for 1s in the middle of 3s: 100 + 500 + 100.
	s, err := Burst(BurstSpec{Baseline: 100, Surge: 500, SurgeFor: time.Second}, ArrivalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Duration() != 3*time.Second {
		t.Fatalf("duration %s, want 3s (3x --surge-for)", s.Duration())
	}
	want := []Phase{{PhaseBefore, 0, time.Second}, {PhaseDuring, time.Second, 2 * time.Second}, {PhaseAfter, 2 * time.Second, 3 * time.Second}}
	if got := s.Phases(); len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("phases = %+v, want %+v", got, want)
	}
	counts := arrivalsPer(t, s, 250*time.Millisecond)
	wantCounts := []int{25, 25, 25, 25, 125, 125, 125, 125, 25, 25, 25, 25}
	if len(counts) != len(wantCounts) {
		t.Fatalf("counts = %v, want %v", counts, wantCounts)
	}
	for i := range counts {
		if counts[i] != wantCounts[i] {
			t.Fatalf("counts = %v, want %v", counts, wantCounts)
		}
	}
	if got := expectedArrivals(s, 0, 3*time.Second); math.Abs(got-700) > 1e-6 {
		t.Fatalf("expected arrivals %v, want 700", got)
	}
}

func TestBurstWithRampedEdges(t *testing.T) {
	s, err := Burst(BurstSpec{Baseline: 100, Surge: 300, SurgeAt: time.Second, SurgeFor: 2 * time.Second, SurgeRamp: 500 * time.Millisecond, Duration: 4 * time.Second}, ArrivalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	counts := arrivalsPer(t, s, time.Second)
	// Ramp halves average 200/s: 1s base + (0.5·200 + 0.5·300) + (0.5·300 + 0.5·200) + 1s base.
	want := []int{100, 250, 250, 100}
	for i := range want {
		if i >= len(counts) || abs(counts[i]-want[i]) > 1 {
			t.Fatalf("counts = %v, want %v (±1)", counts, want)
		}
	}
	if got := s.RateAt(1250 * time.Millisecond); math.Abs(got-200) > 1e-9 {
		t.Fatalf("rate half way up the ramp = %v, want 200", got)
	}
}

func TestRampAndConstantSchedules(t *testing.T) {
	r, err := Ramp(0, 400, 2*time.Second, ArrivalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Λ(t) = 100 t²: 100 in the first second, 300 in the second.
	counts := arrivalsPer(t, r, time.Second)
	if len(counts) != 2 || abs(counts[0]-100) > 1 || abs(counts[1]-300) > 1 {
		t.Fatalf("ramp counts = %v, want [100 300]", counts)
	}
	c, err := Constant(50, 2*time.Second, ArrivalOptions{Count: 30})
	if err != nil {
		t.Fatal(err)
	}
	if counts := arrivalsPer(t, c, time.Second); len(counts) != 1 || counts[0] != 30 {
		t.Fatalf("--count 30 gave %v", counts)
	}
	p, err := Constant(1000, 2*time.Second, ArrivalOptions{Poisson: true, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range arrivalsPer(t, p, time.Second) {
		total += n
	}
	if abs(total-2000) > 200 { // sd ≈ 45
		t.Fatalf("Poisson total %d, want about 2000", total)
	}
}

func TestScheduleErrors(t *testing.T) {
	if _, err := Burst(BurstSpec{Baseline: 1, Surge: 10}, ArrivalOptions{}); err == nil {
		t.Error("burst without --surge-for accepted")
	}
	if _, err := Burst(BurstSpec{Baseline: 1, Surge: 10, SurgeFor: time.Minute, Duration: 30 * time.Second}, ArrivalOptions{}); err == nil {
		t.Error("surge longer than the duration accepted")
	}
	if _, err := Constant(10, 0, ArrivalOptions{}); err == nil {
		t.Error("zero duration accepted")
	}
	if _, err := Constant(-1, time.Second, ArrivalOptions{}); err == nil {
		t.Error("negative rate accepted")
	}
}

// The generator emits arrivals on the clock, whatever the server does: a
// server that takes 100ms per message on 2 sessions (20 msg/s) still gets
// the burst's 40/s, 160/s, 40/s offered, interval by interval.
func TestOfferedLoadIndependentOfSlowServer(t *testing.T) {
	sink := startSink(t, func(s *sinkServer) { s.delay = 100 * time.Millisecond })
	sched, err := Burst(BurstSpec{Baseline: 40, Surge: 160, SurgeFor: time.Second}, ArrivalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := quickConfig(t, sink.addr, sched)
	cfg.Connections = 2
	cfg.DrainTimeout = time.Millisecond // do not wait for the backlog
	cfg.Interval = 500 * time.Millisecond
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Series
	iv := time.Duration(s.Interval * float64(time.Second))
	for i := range 6 { // the 3s schedule in 500ms intervals
		from := time.Duration(i) * iv
		want := expectedArrivals(sched, from, from+iv)
		got := s.Offered[i] * s.Interval
		// The tolerance covers a generator goroutine that a busy
		// 2-core machine schedules up to ~90ms late.
		if math.Abs(got-want) > 0.15*want+3 {
			t.Errorf("interval %d (%s): offered %.0f, scheduled %.0f", i, from, got, want)
		}
	}
	c := res.Counts
	if c.Offered != 240 {
		t.Errorf("offered %d, want 240", c.Offered)
	}
	// The server really was slow: far fewer accepted than offered, the
	// rest waited in the backlog and was left unsent at the end.
	if c.Accepted > 100 || c.Accepted+c.Unsent != c.Offered {
		t.Errorf("accepted %d, unsent %d of %d offered", c.Accepted, c.Unsent, c.Offered)
	}
	// Latency counts from the intended arrival, so the backlog shows.
	if res.SMTPLatency.P99 < 1 {
		t.Errorf("arrival -> 250 p99 = %.3fs, want the backlog's wait (> 1s)", res.SMTPLatency.P99)
	}
	maxBacklog := int64(0)
	for _, b := range s.Backlog {
		maxBacklog = max(maxBacklog, b)
	}
	if maxBacklog < 50 {
		t.Errorf("backlog peaked at %d, want the unsent arrivals to show", maxBacklog)
	}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
