package ingest

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConnectionLimits(t *testing.T) {
	t.Run("total", func(t *testing.T) {
		cfg := baseConfig()
		cfg.MaxConnections, cfg.MaxConnectionsPerIP = 2, 2
		srv, addr := startServer(t, cfg, &fakePublisher{}, nil)
		a := greet(t, addr)
		greet(t, addr)
		over := dial(t, addr)
		over.expect("", "421 4.7.0") // the greeting itself
		over.expectClosed()
		if n := testutil.ToFloat64(srv.metrics.sessions.WithLabelValues(sessionRejectedLimit)); n != 1 {
			t.Errorf("rejected_limit = %v, want 1", n)
		}
		// A slot frees when a session ends.
		a.expect("QUIT", "221")
		waitFor(t, "active sessions to drop", func() bool { return testutil.ToFloat64(srv.metrics.active) == 1 })
		greet(t, addr)
	})
	t.Run("per IP", func(t *testing.T) {
		cfg := baseConfig()
		cfg.MaxConnections, cfg.MaxConnectionsPerIP = 10, 1
		srv, addr := startServer(t, cfg, &fakePublisher{}, nil)
		greet(t, addr)
		over := dial(t, addr)
		over.expect("", "421 4.7.0")
		over.expectClosed()
		// Another source address on the loopback has its own allowance.
		other := dialFrom(t, addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)})
		other.expect("", "220")
		if n := testutil.ToFloat64(srv.metrics.sessions.WithLabelValues(sessionAccepted)); n != 2 {
			t.Errorf("accepted = %v, want 2", n)
		}
		if n := testutil.ToFloat64(srv.metrics.active); n != 2 {
			t.Errorf("active = %v, want 2", n)
		}
	})
}

// go-smtp echoes client bytes into some replies; what leaves the server is
// still one well-formed line per reply.
func TestCleanReply(t *testing.T) {
	c := &trackedConn{}
	for _, tc := range []struct{ in, want string }{
		{"250 2.0.0 fine\r\n", "250 2.0.0 fine\r\n"},
		{"500 5.5.2 Syntax errors, \r000 command unrecognized\r\n", "500 5.5.2 Syntax errors, ?000 command unrecognized\r\n"},
		{"250 I'll make sure <a\nb\x00@x> gets this\r\n", "250 I'll make sure <a?b?@x> gets this\r\n"},
		{"250-multi\r\n250 tab\tand caf\xc3\xa9\r\n", "250-multi\r\n250 tab\tand caf\xc3\xa9\r\n"},
	} {
		if got := string(c.cleanReply([]byte(tc.in))); got != tc.want {
			t.Errorf("cleanReply(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// A CRLF split across two writes survives.
	if got := string(c.cleanReply([]byte("250 long\r"))) + string(c.cleanReply([]byte("\n"))); got != "250 long\r\n" {
		t.Errorf("split CRLF: %q", got)
	}
}

// TestMessageAtTheAdvertisedSize: a message of exactly the advertised SIZE is
// accepted, by DATA and by BDAT, and one byte more is refused (go-smtp's DATA
// reader counted one byte too many: exactly SIZE got 552).
func TestMessageAtTheAdvertisedSize(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxMessageBytes = 1024
	pub := &fakePublisher{}
	_, addr := startServer(t, cfg, pub, nil)
	body := func(size int) string {
		head := "Subject: size\r\n\r\n"
		return head + strings.Repeat("x", size-len(head)-2) + "\r\n"
	}
	c := dial(t, addr)
	c.expect("", "220")
	if ehlo := c.expect("EHLO client.test", "250"); !slices.Contains(ehlo.lines, "250-SIZE 1024") && !slices.Contains(ehlo.lines, "250 SIZE 1024") {
		t.Fatalf("EHLO does not advertise SIZE 1024: %v", ehlo)
	}
	c.expect("MAIL FROM:<a@x.test> SIZE=1025", "552 5.3.4")
	c.expect("MAIL FROM:<a@x.test> SIZE=1024", "250")
	c.expect("RCPT TO:<r@example.com>", "250")
	c.expect("DATA", "354")
	c.write(body(1024) + ".\r\n")
	if r := c.mustRead(); r.code != 250 {
		t.Fatalf("DATA of exactly SIZE (1024 bytes): %v, want 250", r)
	}
	if r := c.send("a@x.test", []string{"r@example.com"}, body(1025)); r.status() != "552 5.3.4" {
		t.Fatalf("DATA of SIZE+1: %v, want 552 5.3.4", r)
	}
	for size, want := range map[int]string{1024: "250", 1025: "552 5.3.4"} {
		c.expect("MAIL FROM:<a@x.test>", "250")
		c.expect("RCPT TO:<r@example.com>", "250")
		c.write(fmt.Sprintf("BDAT %d LAST\r\n", size) + body(size))
		if r := c.mustRead(); !strings.HasPrefix(r.status(), want) {
			t.Fatalf("BDAT of %d bytes: %v, want %s", size, r, want)
		}
	}
	msgs := pub.messages()
	if len(msgs) != 2 {
		t.Fatalf("published %d messages, want the two of exactly 1024 bytes", len(msgs))
	}
	for _, m := range msgs {
		if !strings.HasSuffix(string(m.Raw), body(1024)) {
			t.Errorf("stored body is not the 1024 bytes sent (%d bytes raw)", len(m.Raw))
		}
	}
}

// TestLongLinesAreAccepted: real mail has long lines (a 2,420-byte HTML line,
// a 48 KB one); at the default smtp.max_line_length they are accepted and
// stored byte for byte, where the old 2,000-byte limit bounced them with 500.
func TestLongLinesAreAccepted(t *testing.T) {
	pub := &fakePublisher{}
	_, addr := startServer(t, baseConfig(), pub, nil)
	c := greet(t, addr)
	body := "Subject: long lines\r\nContent-Type: text/html\r\n\r\n<p>" + strings.Repeat("a", 2420) + "</p>\r\n" + strings.Repeat("b", 48<<10) + "\r\n"
	if r := c.send("a@sender.org", []string{"rcpt@example.com"}, body); r.code != 250 {
		t.Fatalf("message with a 48 KB line: %v, want 250", r)
	}
	if msgs := pub.messages(); len(msgs) != 1 || !strings.HasSuffix(string(msgs[0].Raw), body) {
		t.Fatalf("the long lines were not published byte for byte")
	}
}

// TestPerIPCapCountsAnIPv6Slash64: one machine can take any number of
// addresses in its /64, so the per-IP cap counts IPv6 clients by /64.
func TestPerIPCapCountsAnIPv6Slash64(t *testing.T) {
	r := newConnRegistry(10, 2, func(int) {})
	add := func(ip string) bool {
		ok, _ := r.add(&trackedConn{ip: ip}, time.Now())
		return ok
	}
	if !add("2001:db8:1:2::1") || !add("2001:db8:1:2::2") {
		t.Fatal("two addresses of a /64 within a cap of 2 refused")
	}
	if add("2001:db8:1:2:ffff::3") {
		t.Fatal("a third address of the same /64 admitted over the per-IP cap of 2")
	}
	if !add("2001:db8:1:3::1") || !add("192.0.2.1") || !add("192.0.2.2") {
		t.Fatal("another /64 or IPv4 addresses refused")
	}
}
