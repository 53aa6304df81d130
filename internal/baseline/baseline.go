package baseline

import (
	"slices"
	"time"
)

// Windows holds per-window figures (a p99, a p95) for Span; the zero value
// is not usable, make one with New. Not safe for concurrent use: its owner
// holds its own lock.
type Windows struct {
	span time.Duration
	figs []timed // oldest first
}

type timed struct {
	end time.Time
	d   time.Duration
}

// New keeps the windows that ended within span.
func New(span time.Duration) *Windows { return &Windows{span: span} }

// Add records the figure of a window that ended at end, and forgets the
// windows older than the span by then.
func (w *Windows) Add(end time.Time, d time.Duration) {
	w.figs = append(w.figs, timed{end, d})
	w.forget(end)
}

// Baseline is the lowest decile of the figures of the windows within the
// span at now, and how many windows that is (0: no baseline yet).
func (w *Windows) Baseline(now time.Time) (time.Duration, int) {
	w.forget(now)
	if len(w.figs) == 0 {
		return 0, 0
	}
	ds := make([]time.Duration, len(w.figs))
	for i, f := range w.figs {
		ds[i] = f.d
	}
	slices.Sort(ds)
	return ds[len(ds)/10], len(ds)
}

func (w *Windows) forget(now time.Time) {
	i := 0
	for i < len(w.figs) && now.Sub(w.figs[i].end) > w.span {
		i++
	}
	w.figs = slices.Delete(w.figs, 0, i)
}
