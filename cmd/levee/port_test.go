package main

import (
	"net"
	"testing"
)

// freePort asks the kernel for a free loopback port, for a JetStream server
// that must come back on the same port after a restart.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
