package loadtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// smallRun is the result of a short, light run: a handful of messages, at
// most one queued, two sessions, one worker. Small counts are where a count
// axis got ticks at 0.5 and a legend sat on the lines.
func smallRun() *Result {
	res := &Result{RunID: "plots", Started: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC), Target: "127.0.0.1:2525", API: "http://127.0.0.1:8025"}
	res.Phases = []Phase{
		{Name: PhaseBefore, Start: 0, End: 3 * time.Second},
		{Name: PhaseDuring, Start: 3 * time.Second, End: 6 * time.Second},
		{Name: PhaseAfter, Start: 6 * time.Second, End: 9 * time.Second},
		{Name: PhaseDrain, Start: 9 * time.Second, End: 10 * time.Second},
	}
	s := &res.Series
	s.Interval, s.ReaderWindow = 0.5, 1
	for i := range 21 {
		t := float64(i) / 2
		rate := 2.0
		if t >= 3 && t < 6 {
			rate = 6
		}
		s.T = append(s.T, t)
		s.Scheduled = append(s.Scheduled, rate)
		s.Offered = append(s.Offered, rate)
		s.Accepted = append(s.Accepted, rate)
		s.Deferred = append(s.Deferred, 0)
		s.Backlog = append(s.Backlog, int64(i%2))
		s.Sessions = append(s.Sessions, 2)
		s.SMTPP99 = append(s.SMTPP99, 0.004+0.001*float64(i%3))
		w, d := 1.0, 0.25+0.75*float64(i%2)
		res.Queue = append(res.Queue, QueuePoint{T: t, Messages: uint64(i % 2), AckPending: i % 2, Workers: &w, Duty: &d})
	}
	for i := range 11 {
		s.ReaderT = append(s.ReaderT, float64(i))
		s.ReaderP50 = append(s.ReaderP50, 0.001)
		s.ReaderP99 = append(s.ReaderP99, 0.003+0.001*float64(i%2))
	}
	res.Counts = Counts{Offered: 34, Accepted: 34}
	res.Readers = &ReaderResult{Readers: 1, Requests: 40}
	res.Audit = &AuditResult{Accepted: 34, Stored: 34, Complete: true, Distribution: []HistBin{
		{Min: 0.001, Max: 0.002, Count: 3}, {Min: 0.002, Max: 0.004, Count: 2}, {Min: 0.004, Max: 0.008, Count: 1},
	}}
	return res
}

// svgText is one <text> of a gonum SVG, at its baseline's start in the
// plot's coordinates (y up).
type svgText struct {
	x, y float64
	size string
	text string
}

var (
	svgGridLine = regexp.MustCompile(`<path d="M([-\d.e]+),([-\d.e]+)L([-\d.e]+),([-\d.e]+)" style="fill:none;stroke:#808080;stroke-width:0.25"`)
	svgTextElem = regexp.MustCompile(`<text x="([-\d.e]+)" y="([-\d.e]+)" transform="scale\(1, -1\)"\s+style="[^"]*font-size:(\d+)px[^"]*">([^<]*)</text>`)
)

func num(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// dataArea is the rectangle the grid spans: the plot's data.
func dataArea(t *testing.T, svg string) (minX, minY, maxX, maxY float64) {
	t.Helper()
	first := true
	for _, m := range svgGridLine.FindAllStringSubmatch(svg, -1) {
		x0, y0, x1, y1 := num(t, m[1]), num(t, m[2]), num(t, m[3]), num(t, m[4])
		if first {
			minX, minY, maxX, maxY, first = min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), false
		}
		minX, minY, maxX, maxY = min(minX, x0, x1), min(minY, y0, y1), max(maxX, x0, x1), max(maxY, y0, y1)
	}
	if first {
		t.Fatal("no grid lines in the SVG")
	}
	return
}

func texts(t *testing.T, svg string) []svgText {
	t.Helper()
	var out []svgText
	for _, m := range svgTextElem.FindAllStringSubmatch(svg, -1) {
		// Rotated labels (the y axis title) are in another frame: not
		// legends nor ticks, and they have no transform of this form.
		out = append(out, svgText{x: num(t, m[1]), y: -num(t, m[2]), size: m[3], text: m[4]})
	}
	return out
}

// The report's plots as a person reads them: no legend on the data, and
// whole numbers on the axes that count things (issue 13 item 17).
func TestPlotLegendsOutsideDataAndCountsInWholeNumbers(t *testing.T) {
	t.Parallel()
	figs, err := smallRun().figures("svg")
	if err != nil {
		t.Fatal(err)
	}
	legends := map[string][]string{
		"Load":               {"scheduled", "offered", "accepted (250)", "deferred (4xx)"},
		"Sender backlog":     {"backlog (waiting + deferred)", "open SMTP sessions"},
		"Queue depth":        {"in the stream", "not yet delivered to workers", "with workers, unacknowledged"},
		"Worker concurrency": {"levee_worker_concurrency", "levee_worker_autoscale_duty"},
		"Sender latency":     {"p99"},
		"Reader latency":     {"p50", "p99"},
		"End-to-end latency": nil,
	}
	counts := map[string]bool{"Sender backlog": true, "Queue depth": true, "Worker concurrency": true, "End-to-end latency": true}
	seen := 0
	for _, f := range figs {
		names, ok := legends[f.Title]
		if !ok {
			t.Errorf("figure %q: not known to this test", f.Title)
			continue
		}
		seen++
		minX, minY, maxX, maxY := dataArea(t, f.SVG)
		all := texts(t, f.SVG)
		for _, name := range names {
			found := false
			for _, tx := range all {
				if tx.text != name {
					continue
				}
				found = true
				// Entirely right of the data, or above it.
				if tx.x < maxX && tx.y < maxY {
					t.Errorf("%s: legend %q at (%.1f, %.1f) is inside the data area (%.1f..%.1f, %.1f..%.1f)", f.Title, name, tx.x, tx.y, minX, maxX, minY, maxY)
				}
			}
			if !found {
				t.Errorf("%s: no legend entry %q", f.Title, name)
			}
		}
		if !counts[f.Title] {
			continue
		}
		var ticks []string
		for _, tx := range all {
			// The y axis's tick labels: left of the data and not below it
			// (the x axis's first label can start left of it too).
			if tx.size == "10" && tx.x < minX && tx.y > minY-10 {
				ticks = append(ticks, tx.text)
			}
		}
		if len(ticks) < 2 {
			t.Errorf("%s: y ticks %q, want at least two", f.Title, ticks)
		}
		for _, l := range ticks {
			if _, err := strconv.Atoi(l); err != nil {
				t.Errorf("%s: y tick %q on a count axis (all: %q), want whole numbers", f.Title, l, ticks)
			}
		}
	}
	if seen != len(legends) {
		t.Errorf("%d figures checked, want %d", seen, len(legends))
	}
	// LEVEE_REPORT_FIXTURE=path writes this report, to look at.
	if p := os.Getenv("LEVEE_REPORT_FIXTURE"); p != "" {
		if err := smallRun().WriteReport(filepath.Clean(p)); err != nil {
			t.Fatal(err)
		}
	}
}
