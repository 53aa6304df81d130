package loadtest

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParseRateSurgeSize(t *testing.T) {
	for in, want := range map[string]float64{"200/s": 200, "200": 200, "12000/m": 200, "7200/h": 2, " 0.5/sec ": 0.5} {
		if got, err := ParseRate(in); err != nil || math.Abs(got-want) > 1e-9 {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "fast", "-1/s", "10/d", "NaN"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
	if got, _ := ParseSurge("10x", 200); got != 2000 {
		t.Errorf("10x of 200/s = %v", got)
	}
	if got, _ := ParseSurge("3000/m", 200); got != 50 {
		t.Errorf("3000/m = %v", got)
	}
	for in, want := range map[string]int{"4096": 4096, "4k": 4096, "4KiB": 4096, "1MiB": 1 << 20, "1.5k": 1536, "10 b": 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseSize("4 parsecs"); err == nil {
		t.Error("ParseSize accepted nonsense")
	}
}

func TestSizeDistributions(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fixed, _ := ParseSizeDist("8KiB")
	if fixed.draw(r) != 8192 {
		t.Error("fixed size")
	}
	uni, err := ParseSizeDist("uniform:1KiB-2KiB")
	if err != nil {
		t.Fatal(err)
	}
	logn, err := ParseSizeDist("lognormal:8KiB,1.0")
	if err != nil {
		t.Fatal(err)
	}
	var below int
	for range 10000 {
		if n := uni.draw(r); n < 1024 || n > 2048 {
			t.Fatalf("uniform draw %d", n)
		}
		if logn.draw(r) < 8192 {
			below++
		}
	}
	if below < 4700 || below > 5300 { // the median splits the draws in half
		t.Errorf("%d of 10000 log-normal draws below the median", below)
	}
	if n := logn.Capped(1000).draw(rand.New(rand.NewPCG(1, 1))); n > 1000 {
		t.Errorf("capped draw %d", n)
	}
	for _, bad := range []string{"uniform:2k-1k", "lognormal:8k", "pareto:1", "uniform:x-y"} {
		if _, err := ParseSizeDist(bad); err == nil {
			t.Errorf("ParseSizeDist(%q) accepted", bad)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	h := newHistogram()
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Millisecond, 0.9: 900 * time.Millisecond, 0.99: 990 * time.Millisecond} {
		got := h.Quantile(q)
		if math.Abs(float64(got-want)) > 0.02*float64(want) {
			t.Errorf("p%v = %s, want %s ±2%%", q*100, got, want)
		}
	}
	if h.Quantile(1) != time.Second || h.Quantile(0) != time.Millisecond {
		t.Errorf("min/max = %s/%s", h.Quantile(0), h.Quantile(1))
	}
	s := h.Summary()
	if s.Count != 1000 || math.Abs(s.Mean-0.5005) > 1e-9 {
		t.Errorf("summary %+v", s)
	}
	o := newHistogram()
	o.Record(2 * time.Hour) // beyond the last bucket: still counted, max exact
	o.Record(-time.Second)  // negative: 0
	h.Merge(o)
	if h.Count() != 1002 || h.Quantile(1) != 2*time.Hour || h.Quantile(0) != 0 {
		t.Errorf("after merge: n=%d max=%s min=%s", h.Count(), h.Quantile(1), h.Quantile(0))
	}
	var total uint64
	for _, b := range h.Bins(40) {
		total += b.Count
		if b.Max < b.Min {
			t.Errorf("bin %+v", b)
		}
	}
	if total != 1002 {
		t.Errorf("bins hold %d samples, want 1002", total)
	}
}

func TestParseMetrics(t *testing.T) {
	page := `# HELP levee_worker_concurrency Delivery loops.
# TYPE levee_worker_concurrency gauge
levee_worker_concurrency 4
levee_worker_concurrency_extra 99
levee_smtp_active_sessions{listener="a"} 2
levee_smtp_active_sessions{listener="b",x="}"} 3 1700000000000
`
	m, err := parseMetrics(strings.NewReader(page), "levee_worker_concurrency", "levee_smtp_active_sessions", "levee_missing")
	if err != nil {
		t.Fatal(err)
	}
	if m["levee_worker_concurrency"] != 4 || m["levee_smtp_active_sessions"] != 5 {
		t.Errorf("metrics = %v", m)
	}
	if _, ok := m["levee_missing"]; ok {
		t.Error("a missing metric was reported")
	}
}
