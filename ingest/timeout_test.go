package ingest

import (
	"strings"
	"testing"
	"time"
)

// A client silent at the command prompt for ReadTimeout gets 421 4.4.2 and
// is disconnected.
func TestIdleTimeoutAtCommand(t *testing.T) {
	cfg := baseConfig()
	cfg.ReadTimeout = 200 * time.Millisecond
	_, addr := startServer(t, cfg, &fakePublisher{}, nil)
	c := greet(t, addr)
	c.expect("", "421 4.4.2") // unsolicited, after the idle period
	c.expectClosed()
}

// A client that stops sending in the middle of DATA gets 421 4.4.2 — a
// temporary reply, never a 5xx — and nothing is published.
func TestIdleTimeoutInsideDATA(t *testing.T) {
	cfg := baseConfig()
	cfg.ReadTimeout = 200 * time.Millisecond
	pub := &fakePublisher{}
	srv, addr := startServer(t, cfg, pub, nil)
	c := greet(t, addr)
	c.expect("MAIL FROM:<a@sender.org>", "250")
	c.expect("RCPT TO:<rcpt@example.com>", "250")
	c.expect("DATA", "354")
	c.write("Subject: half a message\r\n\r\nand then")
	r := c.mustRead()
	if r.status() != "421 4.4.2" {
		t.Fatalf("got %v, want 421 4.4.2", r)
	}
	c.expectClosed()
	if n := pub.calls.Load(); n != 0 {
		t.Fatalf("Publish called %d times for a truncated message", n)
	}
	waitFor(t, "outcome metric", func() bool { return msgCount(srv, resultDeferred, "421") == 1 })
}

// A slow but live sender trickles DATA for several times ReadTimeout in
// total, never pausing as long as ReadTimeout: the idle deadline renews on
// every read, so the message is accepted (go-smtp alone would cut it off:
// go-smtp #196).
func TestSlowSenderIsNotCutOff(t *testing.T) {
	const idle = 400 * time.Millisecond
	cfg := baseConfig()
	cfg.ReadTimeout = idle
	pub := &fakePublisher{}
	_, addr := startServer(t, cfg, pub, nil)
	c := greet(t, addr)
	c.expect("MAIL FROM:<a@sender.org>", "250")
	c.expect("RCPT TO:<rcpt@example.com>", "250")
	c.expect("DATA", "354")
	start := time.Now()
	c.write("Subject: slow\r\n\r\n")
	var body strings.Builder
	body.WriteString("Subject: slow\r\n\r\n")
	for i := 0; time.Since(start) < 3*idle; i++ {
		time.Sleep(idle / 4) // the trickle under test, not synchronisation
		line := strings.Repeat("s", 10) + "\r\n"
		body.WriteString(line)
		c.write(line)
	}
	c.write(".\r\n")
	r := c.mustRead()
	if r.status() != "250 2.0.0" {
		t.Fatalf("slow sender: got %v after %v, want 250", r, time.Since(start))
	}
	msgs := pub.messages()
	if len(msgs) != 1 || !strings.HasSuffix(string(msgs[0].Raw), body.String()) {
		t.Fatalf("published message does not end with the trickled body")
	}
	// The same idle deadline still applies at the prompt afterwards.
	c.expect("", "421 4.4.2")
}
