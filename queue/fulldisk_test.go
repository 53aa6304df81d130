package queue

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/levee-mail/levee/store/storetest"
)

// TestFullDiskHealsWithoutRestart (issue 12 item 6): the embedded
// JetStream's file store on a filesystem that fills up. nats-server keeps a
// store's write error until the stream is opened again and leaves the
// publishes that meet it unanswered, so before the fix every publish timed
// out as unavailable (451) for as long as the process ran, long after the
// space came back, while levee_queue_up said 1. Now: while the disk is full
// a publish is refused at once as full (452 4.3.1) and the queue says it
// cannot write (StoreFault, levee_queue_up 0); once space is back the queue
// restarts its embedded server by itself and publishes succeed, with every
// message accepted before, during and after in the stream exactly once.
func TestFullDiskHealsWithoutRestart(t *testing.T) {
	disk := storetest.SmallDisk(t, "32m")
	cfg := testConfig(t)
	cfg.DataDir = disk + "/jetstream"
	cfg.Partitions = 2
	// The server reserves each stream's max_bytes (and the dead stream's)
	// out of 75% of the free space it finds at start.
	cfg.MaxBytes = 8 << 20
	cfg.MaxMsgSize = 1 << 20
	q := openQueue(t, cfg)

	accepted := map[string]bool{}
	publish := func(id string) error {
		_, err := q.Publish(ctxT(t), testMessage(id, 2048))
		if err == nil {
			accepted[id] = true
		}
		return err
	}
	for i := range 20 {
		if err := publish(fmt.Sprintf("before-%d", i)); err != nil {
			t.Fatalf("publish before the disk filled: %v", err)
		}
	}

	filler := storetest.FillDisk(t, disk)
	var full, unavailable int
	deadline := time.Now().Add(90 * time.Second)
	for i := 0; ; i++ {
		err := publish(fmt.Sprintf("full-%d", i))
		switch {
		case errors.Is(err, ErrQueueFull):
			full++
		case errors.Is(err, ErrUnavailable):
			unavailable++
		case err != nil:
			t.Fatalf("publish on a full disk: %v, want a temporary error (full or unavailable)", err)
		}
		if full >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publishes on a full disk: %d full, %d unavailable, %d accepted after 90s (last: %v); want them refused as full (452 4.3.1)",
				full, unavailable, i+1-full-unavailable, err)
		}
	}
	t.Logf("full disk: %d publishes refused as full, %d unavailable (the one that met ENOSPC waits out PublishTimeout)", full, unavailable)
	if up := testutil.ToFloat64(q.metrics.up); up != 0 {
		t.Errorf("levee_queue_up = %v while the store cannot be written, want 0", up)
	}
	if err := q.StoreFault(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("StoreFault on a full disk: %v, want ENOSPC", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var err error
	for i := 0; ; i++ {
		if err = publish(fmt.Sprintf("after-%d", i)); err == nil {
			break
		}
		if time.Since(start) > 90*time.Second {
			t.Fatalf("publishes still fail 90s after the space came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("first publish accepted %s after the space came back", time.Since(start).Round(time.Millisecond))
	for i := range 20 {
		if err := publish(fmt.Sprintf("healed-%d", i)); err != nil {
			t.Fatalf("publish after recovery: %v", err)
		}
	}
	waitFor(t, "levee_queue_up 1", func() bool { return testutil.ToFloat64(q.metrics.up) == 1 })
	if err := q.StoreFault(); err != nil {
		t.Errorf("StoreFault after recovery: %v", err)
	}
	if n := testutil.ToFloat64(q.metrics.restarts); n < 1 {
		t.Errorf("levee_queue_server_restarts_total = %v, want at least 1", n)
	}

	stored := storedInAll(t, q)
	for id, n := range stored {
		if n != 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
	for id := range accepted {
		if stored[id] == 0 {
			t.Errorf("%s was accepted and is not in the stream", id)
		}
	}
	t.Logf("%d messages accepted, %d in the stream", len(accepted), len(stored))
}
