package ingest

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
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
	cfg.MinDataRate = 1 // this test is about the idle deadline, not the rate
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

// trickle writes one byte every interval until the connection fails or the
// test ends: a slowloris client, always just inside the idle deadline.
func trickle(t *testing.T, c *client, interval time.Duration) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if _, err := c.nc.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
}

// TestDataSlowerThanTheMinimumRateIsCutOff: a byte every 50 ms renews the
// idle deadline forever; smtp.min_data_rate ends it after the grace
// (smtp.read_timeout) with a temporary 421, and nothing is published.
func TestDataSlowerThanTheMinimumRateIsCutOff(t *testing.T) {
	cfg := baseConfig()
	cfg.ReadTimeout = 300 * time.Millisecond
	cfg.MinDataRate = 100
	pub := &fakePublisher{}
	srv, addr := startServer(t, cfg, pub, nil)
	c := greet(t, addr)
	c.expect("MAIL FROM:<a@sender.org>", "250")
	c.expect("RCPT TO:<rcpt@example.com>", "250")
	c.expect("DATA", "354")
	trickle(t, c, 50*time.Millisecond)
	if r := c.mustRead(); r.status() != "421 4.4.2" || !strings.Contains(r.text, "too slow") {
		t.Fatalf("slowloris inside DATA: got %v, want 421 4.4.2 Data transfer too slow", r)
	}
	c.expectClosed()
	if n := pub.calls.Load(); n != 0 {
		t.Fatalf("Publish called %d times for a message that never ended", n)
	}
	if n := testutil.ToFloat64(srv.metrics.timeouts.WithLabelValues("data_rate")); n != 1 {
		t.Fatalf("levee_smtp_timeouts_total{reason=data_rate} = %v, want 1", n)
	}
}

// TestSessionLifetimeIsCapped: a client that keeps a connection busy with
// NOOPs is closed once smtp.max_session_duration has passed.
func TestSessionLifetimeIsCapped(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxSessionDuration = 500 * time.Millisecond
	srv, addr := startServer(t, cfg, &fakePublisher{}, nil)
	c := greet(t, addr)
	for {
		r := c.cmd("NOOP")
		if r.code == 421 {
			if r.status() != "421 4.4.2" || !strings.Contains(r.text, "Session too long") {
				t.Fatalf("got %v, want 421 4.4.2 Session too long", r)
			}
			break
		}
		if r.code != 250 {
			t.Fatalf("NOOP: %v", r)
		}
		time.Sleep(50 * time.Millisecond) // a busy client's pace, not synchronisation
	}
	c.expectClosed()
	if n := testutil.ToFloat64(srv.metrics.timeouts.WithLabelValues("session_duration")); n != 1 {
		t.Fatalf("levee_smtp_timeouts_total{reason=session_duration} = %v, want 1", n)
	}
}

// TestSlowlorisCannotHoldEverySlot: connections from several addresses, each
// under the per-IP cap, take every slot and trickle DATA slowly enough to be
// kept by the rate check for a while (issue 12: 1,000 such connections gave
// every real sender 421). A new client still gets in and delivers: under
// stress a DATA behind smtp.min_data_rate after smtp.stress_timeout gives up
// its slot.
func TestSlowlorisCannotHoldEverySlot(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxConnections, cfg.MaxConnectionsPerIP = 4, 2
	cfg.ReadTimeout = 10 * time.Second // the rate's own cut-off is far away
	cfg.MinDataRate = 100              // the trickle (20 B/s) falls behind it under stress
	cfg.StressTimeout = 200 * time.Millisecond
	pub := &fakePublisher{}
	srv, addr := startServer(t, cfg, pub, nil)
	var loris []*client
	for i := range cfg.MaxConnections {
		c := dialFrom(t, addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i/2))})
		c.expect("", "220")
		c.expect("EHLO loris.example", "250")
		c.expect("MAIL FROM:<a@loris.example>", "250")
		c.expect("RCPT TO:<rcpt@example.com>", "250")
		c.expect("DATA", "354")
		trickle(t, c, 50*time.Millisecond)
		loris = append(loris, c)
	}
	var sender *client
	waitFor(t, "a slot for a well-behaved sender", func() bool {
		c := dialFrom(t, addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9)})
		if r := c.mustRead(); r.code != 220 {
			return false
		}
		sender = c
		return true
	})
	sender.expect("EHLO mta.example", "250")
	if r := sender.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody); r.code != 250 {
		t.Fatalf("the well-behaved sender's message: %v", r)
	}
	// The evicted connection says goodbye on its own goroutine, at its
	// next read: counted a moment after the newcomer was admitted.
	waitFor(t, "levee_smtp_timeouts_total{reason=stalled} >= 1", func() bool {
		return testutil.ToFloat64(srv.metrics.timeouts.WithLabelValues("stalled")) >= 1
	})
	goodbyes := 0
	for _, c := range loris {
		_ = c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if r, err := c.read(); err == nil && r.status() == "421 4.4.2" {
			goodbyes++
		}
	}
	if goodbyes == 0 {
		t.Fatalf("no slowloris connection was told 421 4.4.2")
	}
}

// TestStressSparesStreamingSendersNotIdlers: with every slot taken, a new
// client takes the slot of a client idling with NOOPs, never that of a
// sender streaming a large message (whose last reply, the 354, is old) nor
// that of one whose message waits on the queue.
func TestStressSparesStreamingSendersNotIdlers(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxConnections, cfg.MaxConnectionsPerIP = 3, 3
	cfg.MinDataRate = 100
	cfg.StressTimeout = 200 * time.Millisecond
	release := make(chan struct{})
	pub := blockingPublisher(release)
	_, addr := startServer(t, cfg, pub, nil)

	waiting := greet(t, addr) // its message will wait on the queue
	waiting.expect("MAIL FROM:<w@sender.org>", "250")
	waiting.expect("RCPT TO:<rcpt@example.com>", "250")
	waiting.expect("DATA", "354")
	waiting.write("Subject: waiting\r\n\r\nbody\r\n.\r\n")
	waitFor(t, "a message waiting on the queue", func() bool { return pub.calls.Load() == 1 })

	streamer := greet(t, addr)
	streamer.expect("MAIL FROM:<s@sender.org>", "250")
	streamer.expect("RCPT TO:<rcpt@example.com>", "250")
	streamer.expect("DATA", "354")
	streamer.write("Subject: large\r\n\r\n")
	stop := make(chan struct{})
	streamed := make(chan struct{})
	go func() { // 2 KB/s, twenty times the minimum rate
		defer close(streamed)
		line := []byte(strings.Repeat("s", 198) + "\r\n")
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				if _, err := streamer.nc.Write(line); err != nil {
					return
				}
			}
		}
	}()

	idler := greet(t, addr)
	deadline := time.Now().Add(10 * time.Second)
	var newcomer *client
	for newcomer == nil {
		if time.Now().After(deadline) {
			t.Fatal("no slot for a newcomer")
		}
		if r := idler.cmd("NOOP"); r.code != 250 {
			if r.status() != "421 4.4.2" {
				t.Fatalf("the idler got %v", r)
			}
			break // evicted: its slot is free
		}
		c := dialFrom(t, addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}) // the others' IP is at its cap
		if r := c.mustRead(); r.code == 220 {
			newcomer = c
		}
		time.Sleep(50 * time.Millisecond) // the idler's NOOP pace, not synchronisation
	}
	close(stop)
	<-streamed
	streamer.write(".\r\n")
	close(release)
	if r := streamer.mustRead(); r.code != 250 {
		t.Fatalf("the streaming sender: %v, want its message taken", r)
	}
	if r := waiting.mustRead(); r.code != 250 {
		t.Fatalf("the sender waiting on the queue: %v, want 250", r)
	}
}
