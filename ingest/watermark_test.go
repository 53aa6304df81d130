package ingest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The watermark refuses MAIL (before any DATA) from the moment the fill
// reaches HighWatermark until it drops below LowWatermark, for every session.
func TestWatermarkHysteresis(t *testing.T) {
	cfg := baseConfig()
	cfg.HighWatermark, cfg.LowWatermark = 0.9, 0.8
	fill := &fakeFill{}
	pub := &fakePublisher{}
	srv, addr := startServer(t, cfg, pub, fill)
	a, b := greet(t, addr), greet(t, addr)
	engaged := func() float64 { return testutil.ToFloat64(srv.metrics.watermark) }

	steps := []struct {
		fill    float64
		want    string
		engaged float64
	}{
		{0.5, "250", 0},
		{0.89, "250", 0},
		{0.9, "452 4.3.1", 1},  // engages at High
		{0.85, "452 4.3.1", 1}, // between Low and High: still engaged
		{0.8, "452 4.3.1", 1},  // at Low: still engaged (must drop below)
		{0.79, "250", 0},       // disengages below Low
		{0.85, "250", 0},       // between: stays disengaged
		{1.2, "452 4.3.1", 1},  // over the limit
	}
	for i, s := range steps {
		fill.set(s.fill)
		c := a
		if i%2 == 1 {
			c = b // the state is shared by all sessions
		}
		r := c.cmd("MAIL FROM:<a@sender.org>")
		if len(r.status()) < len(s.want) || r.status()[:len(s.want)] != s.want {
			t.Fatalf("step %d fill %.2f: MAIL got %v, want %s", i, s.fill, r, s.want)
		}
		if got := engaged(); got != s.engaged {
			t.Fatalf("step %d fill %.2f: levee_smtp_watermark_engaged = %v, want %v", i, s.fill, got, s.engaged)
		}
		c.expect("RSET", "250")
	}
	if n := msgCount(srv, resultDeferred, "452"); n != 4 {
		t.Errorf("deferred 452 count = %v, want 4", n)
	}
	if pub.calls.Load() != 0 {
		t.Error("Publish called without any DATA")
	}
}

// A transaction that passed MAIL before the watermark engaged still completes.
func TestWatermarkDoesNotAbortOpenTransaction(t *testing.T) {
	fill := &fakeFill{}
	_, addr := startServer(t, baseConfig(), &fakePublisher{}, fill)
	c := greet(t, addr)
	c.expect("MAIL FROM:<a@sender.org>", "250")
	fill.set(0.99)
	c.expect("RCPT TO:<rcpt@example.com>", "250")
	c.expect("DATA", "354")
	c.write(simpleBody + ".\r\n")
	c.expect("", "250 2.0.0")
	c.expect("MAIL FROM:<a@sender.org>", "452 4.3.1")
}
