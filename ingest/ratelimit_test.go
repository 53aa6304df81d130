package ingest

import (
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestClientRatesByAddressAndNetwork: a client's allowance refills at its
// rate; its /24 (IPv6: /48) has one of its own, shared by its neighbours; an
// IPv6 client is one /64.
func TestClientRatesByAddressAndNetwork(t *testing.T) {
	r := newClientRates(3, 5)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if got := r.allow("192.0.2.1", now); got != rateAllowed {
			t.Fatalf("message %d of 3: %q", i+1, got)
		}
	}
	if got := r.allow("192.0.2.1", now); got != rateClientLimited {
		t.Fatalf("a fourth message in the same instant: %q, want the client limit", got)
	}
	if got := r.allow("192.0.2.1", now.Add(20*time.Second)); got != rateAllowed {
		t.Fatalf("20 s later (one message refilled at 3 a minute): %q", got)
	}
	// The network's allowance (5) is shared by its neighbours.
	r = newClientRates(3, 5)
	for _, ip := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.2"} {
		if got := r.allow(ip, now); got != rateAllowed {
			t.Fatalf("%s within the network's five: %q", ip, got)
		}
	}
	if got := r.allow("192.0.2.3", now); got != rateNetLimited {
		t.Fatalf("the network's sixth: %q, want the network limit", got)
	}
	if got := r.allow("198.51.100.1", now); got != rateAllowed {
		t.Fatalf("another network: %q", got)
	}
	// Two addresses of one IPv6 /64 are one client.
	for i := range 3 {
		if got := r.allow("2001:db8:1:1::"+string(rune('a'+i)), now); got != rateAllowed {
			t.Fatalf("IPv6 message %d: %q", i+1, got)
		}
	}
	if got := r.allow("2001:db8:1:1::ff", now); got != rateClientLimited {
		t.Fatalf("a fourth from the same /64: %q, want the client limit", got)
	}
	// Idle buckets are forgotten, and nothing is lost by it.
	r.allow("203.0.113.9", now.Add(time.Hour))
	if n := len(r.buckets); n != 2 {
		// Every other bucket was idle for an hour.
		t.Fatalf("%d buckets an hour later, want the newcomer's two", n)
	}
}

// TestRateLimitedSenderGetsA451: over smtp.max_messages_per_client, MAIL
// gets a temporary 451 4.7.1 and the decision is counted; another client
// is not affected.
func TestRateLimitedSenderGetsA451(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxMessagesPerClient = 2
	srv, addr := startServer(t, cfg, &fakePublisher{}, nil)
	c := greet(t, addr)
	for range 2 {
		if r := c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody); r.code != 250 {
			t.Fatalf("within the limit: %v", r)
		}
	}
	c.expect("MAIL FROM:<a@sender.org>", "451 4.7.1")
	if n := testutil.ToFloat64(srv.metrics.rateLimited.WithLabelValues("client")); n != 1 {
		t.Fatalf("levee_smtp_rate_limited_total{scope=client} = %v, want 1", n)
	}
	other := dialFrom(t, addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)})
	other.expect("", "220")
	other.expect("EHLO other.example", "250")
	if r := other.send("b@sender.org", []string{"rcpt@example.com"}, simpleBody); r.code != 250 {
		t.Fatalf("another client: %v", r)
	}
}
