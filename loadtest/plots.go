package loadtest

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The report's plots are drawn with gonum/plot as SVG without embedded
// fonts (the viewer's sans-serif is used), so that the HTML stays small and
// opens offline.

var palette = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff}, // blue
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, // green
	color.RGBA{0xff, 0x7f, 0x0e, 0xff}, // orange
	color.RGBA{0xd6, 0x27, 0x28, 0xff}, // red
	color.RGBA{0x94, 0x67, 0xbd, 0xff}, // purple
	color.RGBA{0x7f, 0x7f, 0x7f, 0xff}, // grey
}

const (
	plotW = 9 * vg.Inch
	plotH = 3.2 * vg.Inch
)

func newPlot(title, xLabel, yLabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	for _, s := range []*plot.Plot{p} {
		s.Title.TextStyle.Font.Variant = "Sans"
		s.X.Label.TextStyle.Font.Variant = "Sans"
		s.Y.Label.TextStyle.Font.Variant = "Sans"
		s.X.Tick.Label.Font.Variant = "Sans"
		s.Y.Tick.Label.Font.Variant = "Sans"
		s.Legend.TextStyle.Font.Variant = "Sans"
	}
	p.Legend.Top = true
	p.Legend.Padding = vg.Points(3)
	p.Y.Min = 0
	p.X.Tick.Marker = relabel{plot.DefaultTicks{}, plainNumber}
	p.Y.Tick.Marker = relabel{plot.DefaultTicks{}, plainNumber}
	p.Add(plotter.NewGrid())
	return p
}

// relabel keeps a Ticker's marks and rewrites their labels.
type relabel struct {
	plot.Ticker
	label func(float64) string
}

func (r relabel) Ticks(lo, hi float64) []plot.Tick {
	ts := r.Ticker.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = r.label(ts[i].Value)
		}
	}
	return ts
}

// countTicks marks whole numbers only, for axes that count things
// (messages, sessions, delivery loops): the default ticks put 0.5 between
// 0 and 1, a count nobody can have.
type countTicks struct{}

func (countTicks) Ticks(lo, hi float64) []plot.Tick {
	lo, hi = math.Ceil(lo), math.Floor(hi)
	if hi <= lo {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'f', 0, 64)}}
	}
	step := wholeStep((hi - lo) / 4) // 3 to 5 labels
	minor := 0.0
	switch {
	case step >= 5 && math.Mod(step, 5) == 0:
		minor = step / 5
	case step >= 2 && math.Mod(step, 2) == 0:
		minor = step / 2
	}
	var ts []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi; v += step {
		ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', 0, 64)})
	}
	if minor > 0 {
		for v := math.Ceil(lo/minor) * minor; v <= hi; v += minor {
			if math.Mod(v, step) != 0 {
				ts = append(ts, plot.Tick{Value: v})
			}
		}
	}
	return ts
}

// wholeStep is the smallest of 1, 2, 5, 10, 20, 50... that is at least x.
func wholeStep(x float64) float64 {
	if x <= 1 {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= x {
			return m * mag
		}
	}
	return 10 * mag
}

// countAxis makes p's y axis a count's: whole-number ticks, and at least
// 0..1 when every value is 0 (gonum would span -1..1).
func countAxis(p *plot.Plot) {
	p.Y.Tick.Marker = countTicks{}
	p.Y.Max = max(p.Y.Max, 1)
}

// plainNumber drops the fixed two decimals of the default labels.
func plainNumber(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

// secondsLabel renders a value in seconds as a duration: 250ms, 1.5s.
func secondsLabel(v float64) string {
	if v == 0 {
		return "0"
	}
	return fmtDur(time.Duration(v * float64(time.Second)))
}

// addSeries draws ys over xs; NaN or negative (when gaps is set) values
// break the line instead of dropping to zero.
func addSeries(p *plot.Plot, name string, xs []float64, ys []float64, c color.Color, dashed, gaps bool) error {
	var seg plotter.XYs
	first := true
	flush := func() error {
		if len(seg) == 0 {
			return nil
		}
		l, err := plotter.NewLine(seg)
		if err != nil {
			return err
		}
		l.Color = c
		l.Width = vg.Points(1.3)
		if dashed {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l)
		if first {
			p.Legend.Add(name, l)
			first = false
		}
		seg = nil
		return nil
	}
	for i := range min(len(xs), len(ys)) {
		y := ys[i]
		if math.IsNaN(y) || math.IsInf(y, 0) || (gaps && y < 0) {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		seg = append(seg, plotter.XY{X: xs[i], Y: y})
	}
	return flush()
}

// addPhaseLines marks where the phases begin with grey dashed verticals.
func addPhaseLines(p *plot.Plot, phases []Phase, top float64) error {
	if top <= 0 {
		top = 1
	}
	for i, ph := range phases {
		if i == 0 {
			continue
		}
		x := ph.Start.Seconds()
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: top}})
		if err != nil {
			return err
		}
		l.Color = color.Gray{0xa0}
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(l)
	}
	return nil
}

func maxOf(vss ...[]float64) float64 {
	m := 0.0
	for _, vs := range vss {
		for _, v := range vs {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				m = max(m, v)
			}
		}
	}
	return m
}

func toFloats[T int64 | uint64 | int](vs []T) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = float64(v)
	}
	return out
}

// legendGap separates the legend column from the data.
const legendGap = vg.Length(10)

// legendWidth is how wide p's legend is drawn.
func legendWidth(p *plot.Plot) vg.Length {
	c := draw.New(vgsvg.New(plotW, plotH))
	return p.Legend.Rectangle(c).Size().X
}

// dataLeft is where render puts the left edge of p's data area, before
// any indent.
func dataLeft(p *plot.Plot, legendCol vg.Length) vg.Length {
	c := draw.New(vgsvg.New(plotW, plotH))
	return p.DataCanvas(plotArea(c, legendCol, 0)).Min.X
}

// plotArea is the part of c the plot itself is drawn in: without the
// legend column on the right, indented by indent on the left.
func plotArea(c draw.Canvas, legendCol, indent vg.Length) draw.Canvas {
	right := vg.Length(0)
	if legendCol > 0 {
		right = legendCol + legendGap
	}
	return draw.Crop(c, indent, -right, 0, 0)
}

// render draws p in format ("svg" or "png"), its legend in a column of
// width legendCol right of the data, never on it (gonum draws the legend
// inside the data area, where it hid the lines it names), and indented by
// indent. Every figure has the same column and its data area starts at
// the same x, so that the time axes of the report line up. For SVG the XML
// declaration is dropped so that it can sit inline in HTML.
func render(p *plot.Plot, format string, legendCol, indent vg.Length) (string, error) {
	wt, err := draw.NewFormattedCanvas(plotW, plotH, format)
	if err != nil {
		return "", err
	}
	c := draw.New(wt)
	leg := p.Legend
	p.Legend = plot.NewLegend() // nothing drawn inside; Draw still positions it
	plotC := plotArea(c, legendCol, indent)
	p.Draw(plotC)
	data := p.DataCanvas(plotC)
	leg.Left, leg.Top, leg.XOffs, leg.YOffs = true, true, 0, 0
	leg.Draw(draw.Canvas{Canvas: c.Canvas, Rectangle: vg.Rectangle{
		Min: vg.Point{X: data.Max.X + legendGap, Y: data.Min.Y},
		Max: vg.Point{X: c.Max.X, Y: data.Max.Y},
	}})
	p.Legend = leg
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return "", err
	}
	out := b.Bytes()
	if i := bytes.Index(out, []byte("<svg")); format == "svg" && i > 0 {
		out = out[i:]
	}
	return string(out), nil
}

// figure is one plot in the report.
type figure struct {
	Title, Caption string
	SVG            string // or PNG bytes, when drawn as PNG
}

func (res *Result) figures(format string) ([]figure, error) {
	type drawn struct {
		p              *plot.Plot
		title, caption string
	}
	var plots []drawn
	s := res.Series
	add := func(p *plot.Plot, title, caption string) error {
		plots = append(plots, drawn{p, title, caption})
		return nil
	}
	// Every time plot spans the whole run, so that one moment sits at
	// the same place in all of them.
	end := 0.0
	for _, ts := range [][]float64{s.T, s.ReaderT} {
		if n := len(ts); n > 0 {
			end = max(end, ts[n-1])
		}
	}
	if n := len(res.Queue); n > 0 {
		end = max(end, res.Queue[n-1].T)
	}
	timePlot := func(title, yLabel string) *plot.Plot {
		p := newPlot(title, "seconds since start", yLabel)
		p.X.Min, p.X.Max = 0, end
		return p
	}

	p := timePlot("Offered, accepted and deferred", "messages per second")
	top := maxOf(s.Scheduled, s.Offered, s.Accepted, s.Deferred)
	steps := []struct {
		name   string
		ys     []float64
		c      color.Color
		dashed bool
	}{
		{"scheduled", s.Scheduled, palette[5], true},
		{"offered", s.Offered, palette[0], false},
		{"accepted (250)", s.Accepted, palette[1], false},
		{"deferred (4xx)", s.Deferred, palette[2], false},
	}
	if res.Counts.Failed > 0 {
		steps = append(steps, struct {
			name   string
			ys     []float64
			c      color.Color
			dashed bool
		}{"failed (5xx)", s.Failed, palette[3], false})
	}
	for _, st := range steps {
		if len(st.ys) == 0 {
			continue
		}
		if err := addSeries(p, st.name, s.T, st.ys, st.c, st.dashed, false); err != nil {
			return nil, err
		}
	}
	if err := addPhaseLines(p, res.Phases, top); err != nil {
		return nil, err
	}
	if err := add(p, "Load", "Messages per second in each interval: what the schedule asked for, what the load tester offered (arrivals, independent of the server's speed), what the server accepted, and the 4xx deferrals that senders will retry. Dashed verticals mark the phases."); err != nil {
		return nil, err
	}

	p = timePlot("Sender side: backlog and sessions", "messages / sessions")
	if err := addSeries(p, "backlog (waiting + deferred)", s.T, toFloats(s.Backlog), palette[2], false, false); err != nil {
		return nil, err
	}
	if err := addSeries(p, "open SMTP sessions", s.T, toFloats(s.Sessions), palette[0], false, false); err != nil {
		return nil, err
	}
	countAxis(p)
	if err := add(p, "Sender backlog", "Arrivals waiting for a free session plus deferred messages waiting for their retry, and the SMTP sessions open. A growing backlog is the server not keeping up, seen from outside."); err != nil {
		return nil, err
	}

	if len(res.Queue) > 0 {
		var qt, depth, pending, ack, workers, duty []float64
		hasWorkers, hasDuty := false, false
		for _, q := range res.Queue {
			qt = append(qt, q.T)
			depth = append(depth, float64(q.Messages))
			pending = append(pending, float64(q.Pending))
			ack = append(ack, float64(q.AckPending))
			w := math.NaN()
			if q.Workers != nil {
				w, hasWorkers = *q.Workers, true
			}
			workers = append(workers, w)
			d := math.NaN()
			if q.Duty != nil {
				d, hasDuty = *q.Duty, true
			}
			duty = append(duty, d)
		}
		p = timePlot("Levee queue depth", "messages")
		if err := addSeries(p, "in the stream", qt, depth, palette[0], false, false); err != nil {
			return nil, err
		}
		if err := addSeries(p, "not yet delivered to workers", qt, pending, palette[2], true, false); err != nil {
			return nil, err
		}
		if err := addSeries(p, "with workers, unacknowledged", qt, ack, palette[4], false, false); err != nil {
			return nil, err
		}
		countAxis(p)
		if err := add(p, "Queue depth", "From GET /api/v1/queue: messages held by the JetStream stream (the levee), those not yet handed to a worker, and those being stored."); err != nil {
			return nil, err
		}
		if hasWorkers {
			p = timePlot("Worker concurrency", "delivery loops")
			if err := addSeries(p, "levee_worker_concurrency", qt, workers, palette[1], false, false); err != nil {
				return nil, err
			}
			caption := "levee_worker_concurrency from /metrics: how many delivery loops drained the queue into storage."
			if hasDuty {
				if err := addSeries(p, "levee_worker_autoscale_duty", qt, duty, palette[3], true, false); err != nil {
					return nil, err
				}
				caption += " levee_worker_autoscale_duty: the share of time each loop works; below 1 the loops rest for the readers or the store, at 1 they work at full speed (and catch up once mail falls behind)."
			}
			countAxis(p)
			if err := add(p, "Worker concurrency", caption); err != nil {
				return nil, err
			}
		}
	}

	p = timePlot("SMTP: arrival to 250, p99 per interval", "latency")
	p.Y.Tick.Marker = relabel{plot.DefaultTicks{}, secondsLabel}
	if err := addSeries(p, "p99", s.T, s.SMTPP99, palette[0], false, true); err != nil {
		return nil, err
	}
	if err := add(p, "Sender latency", "99th percentile of the time from a message's scheduled arrival to its 250, for the messages accepted in each interval: waiting for a session, retries after 4xx, and the transaction."); err != nil {
		return nil, err
	}

	if res.Readers != nil && res.Readers.Requests > 0 {
		p = timePlot("Reader probe latency", "latency")
		p.Y.Tick.Marker = relabel{plot.DefaultTicks{}, secondsLabel}
		if err := addSeries(p, "p50", s.ReaderT, s.ReaderP50, palette[1], false, true); err != nil {
			return nil, err
		}
		if err := addSeries(p, "p99", s.ReaderT, s.ReaderP99, palette[3], false, true); err != nil {
			return nil, err
		}
		if err := addPhaseLines(p, res.Phases, maxOf(s.ReaderP99)); err != nil {
			return nil, err
		}
		if err := add(p, "Reader latency", fmt.Sprintf("Latency of the mailbox API as a web app calls it (folder counts, a mailbox page, one message), in windows of %s. This is what users feel while mail surges in.", secs(s.ReaderWindow))); err != nil {
			return nil, err
		}
	}

	if res.Audit != nil && len(res.Audit.Distribution) > 0 {
		p = newPlot("End-to-end latency: 250 to stored", "latency (log scale)", "messages")
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = relabel{plot.LogTicks{}, secondsLabel}
		h := &plotter.Histogram{FillColor: palette[0], LineStyle: draw.LineStyle{Color: color.White, Width: vg.Points(0.5)}}
		for _, b := range res.Audit.Distribution {
			h.Bins = append(h.Bins, plotter.HistogramBin{Min: math.Max(b.Min, 1e-6), Max: b.Max, Weight: float64(b.Count)})
		}
		p.Add(h)
		countAxis(p)
		if err := add(p, "End-to-end latency", "How long accepted messages took from their 250 to being readable through the API (stored_at), as found by the audit. Messages stored before the sender had read its 250 count as 0 and sit in the leftmost bar."); err != nil {
			return nil, err
		}
	}

	// One legend column for all, and the data areas' left edges (which
	// move with the y axis's widest label) lined up.
	var col, left vg.Length
	for _, d := range plots {
		col = max(col, legendWidth(d.p))
	}
	for _, d := range plots {
		left = max(left, dataLeft(d.p, col))
	}
	figs := make([]figure, 0, len(plots))
	for _, d := range plots {
		out, err := render(d.p, format, col, left-dataLeft(d.p, col))
		if err != nil {
			return nil, fmt.Errorf("loadtest: plot %q: %w", d.title, err)
		}
		figs = append(figs, figure{Title: d.title, Caption: d.caption, SVG: out})
	}
	return figs, nil
}
