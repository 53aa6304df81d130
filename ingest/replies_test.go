package ingest

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writeCountingListener counts the writes made on the connections it
// accepts: each is a send system call, and usually a packet.
type writeCountingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &writeCountingConn{Conn: c, writes: &l.writes}, nil
}

type writeCountingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *writeCountingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestRepliesLeaveWhenTheSessionWaitsForInput: the replies to a client's
// pipelined commands leave in one write, and so does a multi-line EHLO
// reply (go-smtp writes each line on its own). A whole session, greeting to
// 221, is five writes instead of fifteen; each reply still arrives before
// the server waits for the command that follows it.
func TestRepliesLeaveWhenTheSessionWaitsForInput(t *testing.T) {
	pub := &fakePublisher{}
	srv, err := New(baseConfig(), pub, nil, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &writeCountingListener{Listener: l}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})

	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	// replies reads n replies and returns their final lines.
	replies := func(n int) []string {
		t.Helper()
		var out []string
		for len(out) < n {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", out, err)
			}
			if len(line) >= 4 && line[3] == ' ' {
				out = append(out, strings.TrimSpace(line))
			}
		}
		return out
	}
	send := func(s string) {
		t.Helper()
		if _, err := nc.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	want := func(got []string, prefixes ...string) {
		t.Helper()
		for i, p := range prefixes {
			if !strings.HasPrefix(got[i], p) {
				t.Fatalf("reply %d is %q, want %s (all: %q)", i, got[i], p, got)
			}
		}
	}

	want(replies(1), "220 ")
	send("EHLO client.test\r\n")
	want(replies(1), "250 ")
	send("MAIL FROM:<a@sender.org>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n")
	want(replies(3), "250 ", "250 ", "354 ")
	send(simpleBody + ".\r\n")
	want(replies(1), "250 ")
	send("QUIT\r\n")
	want(replies(1), "221 ")
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the connection is still open after QUIT")
	}
	if got := len(pub.messages()); got != 1 {
		t.Fatalf("published %d messages, want 1", got)
	}
	// greeting, EHLO, MAIL+RCPT+DATA, end of data, QUIT
	if n := ln.writes.Load(); n != 5 {
		t.Fatalf("the session took %d writes, want 5 (one per time the client waits)", n)
	}
}
