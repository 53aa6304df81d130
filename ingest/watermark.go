package ingest

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// FillGauge reports how full the queue is: 0 empty, 1 at its limits (values
// above 1 are possible while limits shrink live). The queue adapter caches
// it; ingest calls it once per MAIL, so it must be cheap.
type FillGauge interface {
	Fill() float64
}

// watermark refuses new transactions while the queue is nearly full. It has
// hysteresis: once the fill reaches high it stays engaged until the fill
// drops below low, so the receiver does not flap between accepting and
// refusing around one threshold. One watermark is shared by every session of
// a Server.
type watermark struct {
	fill      FillGauge
	high, low float64
	gauge     prometheus.Gauge

	mu      sync.Mutex
	engaged bool
}

// refuse reports whether a new transaction must be refused now.
func (w *watermark) refuse() bool {
	if w.fill == nil {
		return false
	}
	f := w.fill.Fill()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case !w.engaged && f >= w.high:
		w.engaged = true
		w.gauge.Set(1)
	case w.engaged && f < w.low:
		w.engaged = false
		w.gauge.Set(0)
	}
	return w.engaged
}
