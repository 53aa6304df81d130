package pgtest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a test server and can fail the ways a
// database host does: Cut closes the listener and every connection (host
// gone: calls fail at once), Stall keeps connections open but forwards
// nothing more (a network black hole: calls wait), Restore goes back to
// forwarding on the same address. It lets tests take PostgreSQL away from
// one store (or one Levee process) without touching the shared server.
type Proxy struct {
	t       testing.TB
	addr    string
	backend string

	mu      sync.Mutex
	ln      net.Listener
	conns   map[net.Conn]struct{}
	stalled bool
	wg      sync.WaitGroup
}

// NewProxy listens on a free loopback port and forwards to backend (host:port)
// until the test ends.
func NewProxy(t testing.TB, backend string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, backend: backend, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.Cut(); p.wg.Wait() })
	return p
}

// Addr is the proxy's host:port, to put in a URL instead of the backend's.
func (p *Proxy) Addr() string { return p.addr }

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			stalled := p.stalled
			p.mu.Unlock()
			var b net.Conn
			if !stalled {
				if b, err = net.Dial("tcp", p.backend); err != nil {
					c.Close()
					continue
				}
			}
			if !p.track(c, b) {
				continue
			}
			if b == nil { // stalled: accept and never answer
				p.wg.Go(func() { p.swallow(c) })
				continue
			}
			p.wg.Go(func() { p.pipe(c, b) })
			p.wg.Go(func() { p.pipe(b, c) })
		}
	})
}

func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil { // cut meanwhile
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return false
	}
	for _, c := range conns {
		if c != nil {
			p.conns[c] = struct{}{}
		}
	}
	return true
}

// pipe copies src to dst until either closes; once stalled it reads and
// drops what src sends, so that writers do not block but get no answer.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			stalled := p.stalled
			p.mu.Unlock()
			if !stalled {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
		}
		if err != nil {
			break
		}
	}
	src.Close()
	dst.Close()
}

func (p *Proxy) swallow(c net.Conn) {
	_, _ = io.Copy(io.Discard, c)
	c.Close()
}

// Cut closes the listener and every connection.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Stall stops forwarding on open and new connections alike.
func (p *Proxy) Stall() {
	p.mu.Lock()
	p.stalled = true
	p.mu.Unlock()
}

// Restore forwards again, listening on the same address after a Cut.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.stalled = false
	listening := p.ln != nil
	p.mu.Unlock()
	if listening {
		return
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}
