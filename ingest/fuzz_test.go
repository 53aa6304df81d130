package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
)

// FuzzSession feeds arbitrary client bytes to a real session over net.Pipe
// (the idea of mox's smtpserver fuzz test). The server must not panic, every
// reply line must be well formed, and a message whose publish failed must
// never be answered 250 or 5xx.
//
// mode picks the publisher's behaviour (low two bits: accept, plain error,
// panic, queue errors) and, with its top bit, an engaged watermark; split is
// the size of the writes the client bytes arrive in, which moves the read
// boundaries inside go-smtp's buffers.
func FuzzSession(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzSession.
	f.Add(uint8(0), uint8(255), []byte("EHLO a\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<r@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"))
	f.Add(uint8(1), uint8(3), []byte("HELO a\r\nMAIL FROM:<>\r\nRCPT TO:<r@example.com>\r\nBDAT 5 LAST\r\nhello"))
	f.Fuzz(func(t *testing.T, mode, split uint8, in []byte) {
		runFuzzSession(t, fuzzMode(mode%4), mode&0x80 != 0, 1+int(split), in)
	})
}

type fuzzMode int

const (
	fuzzAccept fuzzMode = iota
	fuzzPlainError
	fuzzPanic
	fuzzQueueErrors
)

func runFuzzSession(t *testing.T, mode fuzzMode, watermark bool, chunk int, in []byte) {
	var n int
	pub := &fakePublisher{}
	switch mode {
	case fuzzPlainError:
		pub.fn = func(context.Context, *mail.Message) (queue.PublishResult, error) {
			return queue.PublishResult{}, errors.New("flaky")
		}
	case fuzzPanic:
		pub.fn = func(context.Context, *mail.Message) (queue.PublishResult, error) { panic("publisher bug") }
	case fuzzQueueErrors:
		var mu sync.Mutex
		pub.fn = func(context.Context, *mail.Message) (queue.PublishResult, error) {
			mu.Lock()
			defer mu.Unlock()
			n++
			if n%2 == 0 {
				return queue.PublishResult{}, queue.ErrQueueFull
			}
			return queue.PublishResult{}, fmt.Errorf("wrapped: %w", queue.ErrUnavailable)
		}
	}
	fill := &fakeFill{}
	if watermark {
		fill.set(0.95)
	}
	cfg := baseConfig()
	cfg.MaxMessageBytes = 4096
	cfg.MaxLineLength = 1000
	cfg.MaxRecipients = 3
	cfg.ReadTimeout = 10 * time.Second // the input is all there: never idle
	srv, err := New(cfg, pub, fill, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	replies := playOverPipe(t, srv, chunk, in)
	checkFuzzReplies(t, mode, replies, pub.calls.Load())
}

// playOverPipe serves one session on srv whose client sends in in writes
// of chunk bytes and then half-closes, and returns every reply; srv is shut
// down after it.
func playOverPipe(t *testing.T, srv *Server, chunk int, in []byte) []byte {
	t.Helper()
	ln := newPipeListener()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// Two pipes make a connection whose client side can half-close: the
	// server reads EOF after the input yet can still write its replies.
	srvIn, cliOut := net.Pipe()
	cliIn, srvOut := net.Pipe()
	ln.conns <- &pipeConn{r: srvIn, w: srvOut}

	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(cliIn)
		out <- b
	}()
	for rest := in; len(rest) > 0; {
		k := min(chunk, len(rest))
		if _, err := cliOut.Write(rest[:k]); err != nil {
			break // the server hung up (QUIT, too many errors, overlong line)
		}
		rest = rest[k:]
	}
	_ = cliOut.Close()

	var replies []byte
	select {
	case replies = <-out:
	case <-time.After(20 * time.Second):
		t.Fatal("session did not end after the input")
	}
	_ = cliIn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return replies
}

var (
	// RFC 5321 4.2: textstring is TAB and printable characters (UTF-8
	// allowed under SMTPUTF8): no other control byte.
	replyLineRE = regexp.MustCompile(`^([2-5])[0-9]{2}([ -])([^\x00-\x08\x0a-\x1f\x7f]*)$`)
	enhancedRE  = regexp.MustCompile(`^([245])\.[0-9]{1,3}\.[0-9]{1,3} `)
)

func checkFuzzReplies(t *testing.T, mode fuzzMode, replies []byte, calls int64) {
	t.Helper()
	if len(replies) > 0 && !bytes.HasSuffix(replies, []byte("\r\n")) {
		t.Fatalf("reply stream ends mid-line: %q", tail(replies))
	}
	queued, temporary := 0, 0
	first := true
	var lines []string
	if len(replies) > 0 {
		lines = strings.Split(strings.TrimSuffix(string(replies), "\r\n"), "\r\n")
	}
	for _, line := range lines {
		m := replyLineRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("malformed reply line %q", line)
		}
		if first && !strings.HasPrefix(line, "220 ") {
			t.Fatalf("first reply %q is not the greeting", line)
		}
		first = false
		if e := enhancedRE.FindStringSubmatch(m[3]); e != nil && e[1] != m[1] {
			t.Fatalf("enhanced code class differs from the reply's: %q", line)
		}
		switch {
		case strings.HasPrefix(line, "421 4.0.0"):
			t.Fatalf("go-smtp recovered a panic: %q", line)
		case strings.HasPrefix(line, "554"):
			t.Fatalf("a plain error reached go-smtp (554 is permanent): %q", line)
		case strings.HasPrefix(line, "250 2.0.0 Ok: queued as "):
			queued++
		case strings.HasPrefix(line, "451 4.3.0"), strings.HasPrefix(line, "452 4.3.1"):
			temporary++
		}
	}
	if mode == fuzzAccept {
		if int64(queued) != calls {
			t.Fatalf("%d messages published but %d answered queued", calls, queued)
		}
		return
	}
	if queued != 0 {
		t.Fatalf("publisher failing (mode %d) but %d messages answered 250", mode, queued)
	}
	if int64(temporary) < calls {
		t.Fatalf("%d failed publishes but only %d temporary replies", calls, temporary)
	}
}

func tail(b []byte) []byte { return b[max(0, len(b)-200):] }

// pipeConn is the server's side: it reads one pipe and writes another.
type pipeConn struct{ r, w net.Conn }

func (c *pipeConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *pipeConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *pipeConn) Close() error {
	return errors.Join(c.r.Close(), c.w.Close())
}
func (c *pipeConn) LocalAddr() net.Addr  { return c.r.LocalAddr() }
func (c *pipeConn) RemoteAddr() net.Addr { return c.r.RemoteAddr() }
func (c *pipeConn) SetDeadline(t time.Time) error {
	return errors.Join(c.r.SetDeadline(t), c.w.SetDeadline(t))
}
func (c *pipeConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// pipeListener hands the server connections made in the test.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
