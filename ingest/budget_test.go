package ingest

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestMemoryBudgetBoundsMailInTransit: the bytes of messages read but not yet
// queued stay within smtp.max_bytes_in_flight whatever the number of
// senders. With the budget held by two messages waiting on a slow queue, a
// third is refused at MAIL for its SIZE=, or at the end of a DATA that
// outgrows what is left, with a temporary 452 4.3.1; once the queue answers,
// the budget is free again and the third goes through.
func TestMemoryBudgetBoundsMailInTransit(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxMessageBytes = 1 << 20
	cfg.MaxBytesInFlight = 3 << 20
	release := make(chan struct{})
	pub := blockingPublisher(release)
	srv, addr := startServer(t, cfg, pub, nil)
	body := func(n int) string { return "Subject: big\r\n\r\n" + strings.Repeat("x", n) + "\r\n" }

	// One after the other: while its buffer grows a message holds its old
	// and new buffer for a moment, and two such moments at once would not
	// fit this small budget.
	replies := make(chan resp, 2)
	for i := range 2 {
		c := greet(t, addr)
		go func() { replies <- c.send("a@sender.org", []string{"rcpt@example.com"}, body(1000<<10)) }()
		waitFor(t, "the message waiting on the queue", func() bool { return pub.calls.Load() == int64(i+1) })
	}
	if held := srv.budget.inFlight(); held < 2000<<10 || held > cfg.MaxBytesInFlight {
		t.Fatalf("two 1000 KiB messages hold %d bytes of the budget", held)
	}

	c := greet(t, addr)
	c.expect("MAIL FROM:<a@sender.org> SIZE=1048000", "452 4.3.1")
	if r := c.send("a@sender.org", []string{"rcpt@example.com"}, body(900<<10)); r.status() != "452 4.3.1" {
		t.Fatalf("a 900 KiB DATA with %d bytes of the budget left: %v, want 452 4.3.1", srv.budget.room(), r)
	}
	if n := pub.calls.Load(); n != 2 {
		t.Fatalf("%d publishes, want the message over the budget not published", n)
	}

	close(release)
	for range 2 {
		if r := <-replies; r.code != 250 {
			t.Fatalf("a message within the budget: %v", r)
		}
	}
	waitFor(t, "the budget given back", func() bool { return srv.budget.inFlight() == 0 })
	if r := c.send("a@sender.org", []string{"rcpt@example.com"}, body(900<<10)); r.code != 250 {
		t.Fatalf("the retry once the budget is free: %v", r)
	}
	if msgs := pub.messages(); len(msgs) != 3 {
		t.Fatalf("%d messages queued, want 3", len(msgs))
	}
}

// TestClaimedSizeHoldsNoBudget: SIZE= costs nothing to claim, so a session
// that claims a large message and sends a byte holds a small buffer of the
// budget, not its claim: ten such sessions do not lock out a real sender.
func TestClaimedSizeHoldsNoBudget(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxMessageBytes = 1 << 20
	cfg.MaxBytesInFlight = 4 << 20
	cfg.ReadTimeout = 10 * time.Second
	srv, addr := startServer(t, cfg, &fakePublisher{}, nil)
	for range 10 {
		c := greet(t, addr)
		c.expect("MAIL FROM:<a@claim.example> SIZE=1000000", "250")
		c.expect("RCPT TO:<rcpt@example.com>", "250")
		c.expect("DATA", "354")
		c.write("x")
	}
	waitFor(t, "ten DATAs begun", func() bool { return srv.budget.inFlight() > 0 && srv.metrics.sessionsOpen.Load() == 10 })
	time.Sleep(50 * time.Millisecond) // let the last buffers be taken: what is measured is their size
	if held := srv.budget.inFlight(); held > 10*(maxPrealloc+receivedHeadroom+bytes.MinRead) {
		t.Fatalf("ten one-byte messages claiming 1 MB hold %d KiB of the budget", held>>10)
	}
	real := greet(t, addr)
	if r := real.send("b@sender.org", []string{"rcpt@example.com"}, simpleBody); r.code != 250 {
		t.Fatalf("a real sender beside them: %v", r)
	}
}
