package ingest

import (
	"net"
	"testing"

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
