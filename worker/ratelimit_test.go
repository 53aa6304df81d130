package worker

import (
	"testing"
	"time"
)

func TestTokenBucketReservesInOrderAndRefunds(t *testing.T) {
	clock := newFakeClock()
	b := newTokenBucket(100, 10, clock.Now) // 100 messages/s, one batch of 10 at once
	if w := b.reserve(10); w != 0 {
		t.Fatalf("first batch waits %s with a full bucket", w)
	}
	// Two more loops ask at once: each waits for its own share, in order.
	if w := b.reserve(10); w != 100*time.Millisecond {
		t.Fatalf("second batch waits %s, want 100ms", w)
	}
	if w := b.reserve(10); w != 200*time.Millisecond {
		t.Fatalf("third batch waits %s, want 200ms", w)
	}
	// The third fetch found only 4 messages: 6 tokens go back.
	b.refund(6)
	clock.Advance(200 * time.Millisecond)
	if w := b.reserve(10); w != 40*time.Millisecond {
		t.Fatalf("after a refund of 6 the next batch waits %s, want 40ms", w)
	}
	// A long idle spell refills no more than one batch.
	clock.Advance(time.Hour)
	b.refund(100)
	if w := b.reserve(10); w != 0 {
		t.Fatalf("idle bucket makes a batch wait %s", w)
	}
	if w := b.reserve(1); w != 10*time.Millisecond {
		t.Fatalf("bucket held more than its burst after idling: next message waits %s", w)
	}
}
