package queue

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMonitorGaugesAndBacklogMatchTheServer: the monitor's gauges, Fill
// and the autoscaler's Backlog are the server's own figures.
func TestMonitorGaugesAndBacklogMatchTheServer(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMsgs = 100
	cfg.MaxBytes = 1 << 20
	cfg.MaxMsgSize = 64 << 10
	reg := prometheus.NewRegistry()
	q := openQueueReg(t, cfg, reg)
	ctx := ctxT(t)
	if n, oldest, err := q.Backlog(ctx); err != nil || n != 0 || oldest != 0 {
		t.Errorf("Backlog of an empty queue = %d, %s, %v", n, oldest, err)
	}
	for _, id := range ids("s", 10) {
		if _, err := q.Publish(ctx, testMessage(id, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := q.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fetched, _, err := cons.Fetch(3, 5*time.Second)
	if err != nil || len(fetched) != 3 {
		t.Fatalf("fetched %d, %v", len(fetched), err)
	}
	if err := fetched[0].GiveUp(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gauges", func() bool {
		return testutil.ToFloat64(q.metrics.messages) == 9 && testutil.ToFloat64(q.metrics.ackPending) == 2 &&
			testutil.ToFloat64(q.metrics.deadLetters) == 1 && testutil.ToFloat64(q.metrics.pending) == 7
	})
	if got := testutil.ToFloat64(q.metrics.fill.WithLabelValues("messages")); got != 0.09 {
		t.Errorf("fill gauge %v", got)
	}
	if q.Fill() != 0.09 {
		t.Errorf("Fill() = %v", q.Fill())
	}
	if got := testutil.ToFloat64(q.metrics.oldestAge); got <= 0 {
		t.Errorf("oldest message age gauge %v", got)
	}
	// Waiting for the workers: 7 not yet delivered plus 2 held.
	if n, oldest, err := q.Backlog(ctx); err != nil || n != 9 || oldest <= 0 {
		t.Errorf("Backlog = %d, %s, %v; want 9 and an age", n, oldest, err)
	}
	if n, _ := histogram(t, reg, "levee_queue_publish_duration_seconds"); n != 10 {
		t.Errorf("publish histogram count %v, want 10", n)
	}
	for _, d := range fetched[1:] {
		_ = d.Ack()
	}
}

// TestUpGaugeFollowsJetStream: levee_queue_up says whether the status
// refresh reaches JetStream, so that an outage shows even with no mail.
func TestUpGaugeFollowsJetStream(t *testing.T) {
	q := openQueue(t, testConfig(t))
	waitFor(t, "levee_queue_up 1", func() bool { return testutil.ToFloat64(q.metrics.up) == 1 })
	q.Server().Shutdown()
	waitFor(t, "levee_queue_up 0", func() bool { return testutil.ToFloat64(q.metrics.up) == 0 })
}
