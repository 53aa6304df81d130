package ingest

import (
	"context"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxied dials from 127.0.0.1 (the trusted balancer) and sends header.
func proxied(t *testing.T, addr string, header []byte) *client {
	t.Helper()
	c := dialFrom(t, addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	c.write(string(header))
	return c
}

func v1Header(src string) []byte {
	return []byte("PROXY TCP4 " + src + " 198.51.100.1 4567 25\r\n")
}

// TestPROXYProtocolNamesTheClient: behind a trusted load balancer, the
// client named by its PROXY header (v1 and v2) is the one the Received
// header, the envelope and the per-IP limit see; an untrusted peer cannot
// claim another address; a trusted peer without a header is closed, and
// makes no one else wait.
func TestPROXYProtocolNamesTheClient(t *testing.T) {
	defer func(d time.Duration) { proxyHeaderTimeout = d }(proxyHeaderTimeout)
	proxyHeaderTimeout = 3 * time.Second
	cfg := baseConfig()
	cfg.ProxyProtocolFrom = []string{"127.0.0.1"}
	cfg.MaxConnectionsPerIP = 1
	pub := &fakePublisher{}
	_, addr := startServer(t, cfg, pub, nil)

	silent := dialFrom(t, addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}) // sends no header yet

	c := proxied(t, addr, v1Header("192.0.2.7"))
	c.expect("", "220")
	c.expect("EHLO mta.example", "250")
	if r := c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody); r.code != 250 {
		t.Fatalf("through the balancer: %v", r)
	}
	// Served while the silent peer's header is still awaited: the header
	// is read off the accept loop.
	_ = silent.nc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := silent.br.ReadByte(); !isTimeout(err) {
		t.Fatalf("the silent peer: %v, want it still waiting", err)
	}
	msgs := pub.messages()
	if len(msgs) != 1 || msgs[0].Envelope.RemoteAddr != "192.0.2.7:4567" || !strings.Contains(string(msgs[0].Raw), "from mta.example ([192.0.2.7])") {
		t.Fatalf("the message does not name the client behind the balancer: %q", msgs[0].Envelope.RemoteAddr)
	}

	// The per-IP cap (1) counts the real client, not the balancer.
	proxied(t, addr, v1Header("192.0.2.7")).expect("", "421 4.7.0")
	v2 := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv6,
		SourceAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::9"), Port: 1234}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 25}}
	raw, err := v2.Format()
	if err != nil {
		t.Fatal(err)
	}
	other := proxied(t, addr, raw)
	other.expect("", "220")
	other.expect("EHLO v6.example", "250")
	if r := other.send("b@sender.org", []string{"rcpt@example.com"}, simpleBody); r.code != 250 {
		t.Fatalf("a v2 header: %v", r)
	}
	if msgs := pub.messages(); len(msgs) != 2 || msgs[1].Envelope.RemoteAddr != "[2001:db8::9]:1234" {
		t.Fatalf("v2 client: %q", msgs[len(msgs)-1].Envelope.RemoteAddr)
	}

	// From an untrusted address a header is a bad command, not an address.
	liar := dialFrom(t, addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)})
	liar.expect("", "220")
	liar.expect(strings.TrimSpace(string(v1Header("192.0.2.99"))), "50")

	// The silent peer was closed, after the others were served.
	silent.expectClosed()
}

// flakyListener fails its first Accept as a process out of file
// descriptors would, then accepts as usual.
type flakyListener struct {
	net.Listener
	failed bool
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if !f.failed {
		f.failed = true
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return f.Listener.Accept()
}

// TestPROXYAcceptSurvivesATemporaryError: with PROXY protocol on, the accept
// loop runs on a goroutine of its own; a temporary error (EMFILE) must not
// end it, or the port would take connections and never greet them.
func TestPROXYAcceptSurvivesATemporaryError(t *testing.T) {
	cfg := baseConfig()
	cfg.ProxyProtocolFrom = []string{"127.0.0.1"}
	srv, err := New(cfg, &fakePublisher{}, nil, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(&flakyListener{Listener: l}) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	c := proxied(t, l.Addr().String(), v1Header("192.0.2.7"))
	c.expect("", "220")
}
