package apptest

import (
	"net"
	"strconv"
	"testing"
)

// TestPortsKeepClearOfEphemeralPorts: ports for servers told their port in
// advance are never ones the kernel may give an outgoing connection
// meanwhile (issue 13 item 20), distinct, and free when handed out.
func TestPortsKeepClearOfEphemeralPorts(t *testing.T) {
	lo, hi := portRange()
	if hi-lo < 1000 {
		t.Fatalf("range [%d, %d) too small", lo, hi)
	}
	seen := map[int]bool{}
	for _, p := range Ports(t, 50) {
		if p < lo || p >= hi {
			t.Errorf("port %d outside [%d, %d), clear of the ephemeral range", p, lo, hi)
		}
		if seen[p] {
			t.Errorf("port %d handed out twice", p)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Errorf("port %d not free: %v", p, err)
			continue
		}
		ln.Close()
	}
}
