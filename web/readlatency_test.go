package web

import (
	"testing"
	"time"
)

// TestReadLatencyWindowsAndIdleBaseline: the recent p99 is the last
// complete window's, the idle baseline the lowest of the windows with
// enough reads, and nothing is judged from too few reads or a stale window.
func TestReadLatencyWindowsAndIdleBaseline(t *testing.T) {
	now := time.Unix(0, 0)
	r := newReadLatency(func() time.Time { return now })
	window := func(n int, d time.Duration) {
		for range n {
			r.observe(d)
		}
		now = now.Add(readWindow)
	}
	if _, _, _, ok := r.ReadLatency(); ok {
		t.Fatal("ok before any read")
	}
	window(100, 4*time.Millisecond) // idle
	if recent, idle, _, ok := r.ReadLatency(); !ok || recent != 4*time.Millisecond || idle != 4*time.Millisecond {
		t.Fatalf("after an idle window: %v %v %v", recent, idle, ok)
	}
	// A busy window: 98 fast reads, 2 slow; p99 is a slow one.
	for range 98 {
		r.observe(5 * time.Millisecond)
	}
	r.observe(40 * time.Millisecond)
	r.observe(40 * time.Millisecond)
	now = now.Add(readWindow)
	if recent, idle, _, ok := r.ReadLatency(); !ok || recent != 40*time.Millisecond || idle != 4*time.Millisecond {
		t.Fatalf("after a slow window: recent %v idle %v %v; want 40ms over the idle 4ms", recent, idle, ok)
	}
	window(5, 100*time.Millisecond) // too few reads to judge
	if _, _, _, ok := r.ReadLatency(); ok {
		t.Error("judged a window of 5 reads")
	}
	window(50, 6*time.Millisecond)
	now = now.Add(3 * readWindow) // nothing read since
	if _, _, _, ok := r.ReadLatency(); ok {
		t.Error("judged by a window that ended 15 s ago")
	}
	// The idle baseline forgets windows older than half an hour.
	now = now.Add(readIdleSpan)
	window(50, 9*time.Millisecond)
	if _, idle, _, ok := r.ReadLatency(); !ok || idle != 9*time.Millisecond {
		t.Errorf("idle %v %v after half an hour, want the newest 9ms", idle, ok)
	}
}

// TestReadersRoutesFeedReadLatency: the mailbox API's reads count, the
// rest (metrics, health) do not.
func TestReadersRoutesFeedReadLatency(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for range 30 {
		f.get(t, "/api/v1/mailboxes")
		f.get(t, "/metrics")
	}
	if n := len(f.srv.reads.cur); n != 30 {
		t.Errorf("%d reads recorded, want the 30 mailbox reads", n)
	}
}
