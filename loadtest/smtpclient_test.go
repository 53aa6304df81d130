package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/internal/testcert"
)

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	ca := testcert.NewCA(t, "sink CA")
	return ca.Issue(t, "sink.test", []string{"127.0.0.1"}, x509.ExtKeyUsageServerAuth).TLS, ca.Pool()
}

func TestStartTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	sink := startSink(t, func(s *sinkServer) { s.tls = &tls.Config{Certificates: []tls.Certificate{cert}} })
	cfg := quickConfig(t, sink.addr, mustConstant(t, 100, 200*time.Millisecond))
	cfg.StartTLS = true
	cfg.TLS = &tls.Config{RootCAs: pool}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sink.mu.Lock()
	overTLS := sink.overTLS
	sink.mu.Unlock()
	if res.Counts.Accepted != 20 || overTLS != 20 {
		t.Fatalf("accepted %d, %d over TLS; want 20 and 20", res.Counts.Accepted, overTLS)
	}
	// An untrusted certificate fails the run before it starts.
	cfg.TLS = &tls.Config{}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate: err = %v", err)
	}
	// So does a server without STARTTLS.
	plain := startSink(t, nil)
	cfg.Target = plain.addr
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "--starttls") {
		t.Fatalf("no STARTTLS offered: err = %v", err)
	}
}

// A 421 at the greeting (too many connections) defers the message and the
// worker backs off; the message still gets through once the server lets it.
func TestGreeting421IsRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := startSink(t, nil)
	// A front that refuses the first connections after the probe with 421
	// and then forwards to the sink.
	done := make(chan struct{})
	defer func() { ln.Close(); <-done }()
	go func() {
		defer close(done)
		n := 0
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n++
			if n >= 2 && n <= 4 {
				_, _ = c.Write([]byte("421 4.7.0 Too many connections\r\n"))
				c.Close()
				continue
			}
			go proxy(c, sink.addr)
		}
	}()
	cfg := quickConfig(t, ln.Addr().String(), mustConstant(t, 50, 100*time.Millisecond))
	cfg.Connections = 1
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := res.Counts
	if c.Accepted != 5 || c.ConnErrors != 3 || c.Deferred != 3 {
		t.Fatalf("counts = %+v, want 5 accepted after 3 refused connections", c)
	}
	if len(res.Replies) != 1 || res.Replies[0].Reply != "421 4.7.0" {
		t.Fatalf("replies = %+v", res.Replies)
	}
}

func proxy(c net.Conn, to string) {
	defer c.Close()
	u, err := net.Dial("tcp", to)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := u.Read(buf)
			if n > 0 {
				_, _ = c.Write(buf[:n])
			}
			if err != nil {
				c.Close()
				close(done)
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			_, _ = u.Write(buf[:n])
		}
		if err != nil {
			u.Close()
			break
		}
	}
	<-done
}

func TestReplyError(t *testing.T) {
	for _, tc := range []struct {
		code int
		msg  string
		key  string
		text string
	}{
		{452, "4.3.1 Mail system full", "452 4.3.1", "Mail system full"},
		{421, "Service not available", "421", "Service not available"},
		{550, "5.7.1 Relaying denied\nmore text", "550 5.7.1", "Relaying denied\nmore text"},
		{451, "4.x.0 odd", "451", "4.x.0 odd"},
	} {
		e := replyError(tc.code, tc.msg)
		if replyKey(e) != tc.key || e.Message != tc.text || e.Code != tc.code {
			t.Errorf("replyError(%d, %q) = %+v key %q", tc.code, tc.msg, e, replyKey(e))
		}
		if e.Temporary() != (tc.code/100 == 4) {
			t.Errorf("%d: Temporary() = %v", tc.code, e.Temporary())
		}
	}
}
