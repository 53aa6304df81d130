package ingest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakePublisher stands in for the queue: the failures under test (queue
// full, unreachable, panicking) cannot be produced on demand by a real one
// from this package. The lead's end-to-end tests use the real queue.
type fakePublisher struct {
	// fn decides the outcome; nil accepts, reporting repeats of an ID as
	// duplicates like JetStream's duplicate window does.
	fn func(ctx context.Context, m *mail.Message) (queue.PublishResult, error)

	mu    sync.Mutex
	msgs  []*mail.Message
	seen  map[string]bool
	calls atomic.Int64
}

func (p *fakePublisher) Publish(ctx context.Context, m *mail.Message) (queue.PublishResult, error) {
	p.calls.Add(1)
	if p.fn != nil {
		return p.fn(ctx, m)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = map[string]bool{}
	}
	dup := p.seen[m.ID]
	p.seen[m.ID] = true
	p.msgs = append(p.msgs, m)
	return queue.PublishResult{Duplicate: dup}, nil
}

// blockingPublisher holds every publish until release is closed (or the
// publish's context ends), then accepts it: transactions waiting on a slow
// queue.
func blockingPublisher(release <-chan struct{}) *fakePublisher {
	p := &fakePublisher{}
	p.fn = func(ctx context.Context, m *mail.Message) (queue.PublishResult, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return queue.PublishResult{}, ctx.Err()
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.msgs = append(p.msgs, m)
		return queue.PublishResult{}, nil
	}
	return p
}

func (p *fakePublisher) messages() []*mail.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*mail.Message(nil), p.msgs...)
}

// fakeFill is a FillGauge the test sets.
type fakeFill struct{ bits atomic.Uint64 }

func (f *fakeFill) Fill() float64 { return math.Float64frombits(f.bits.Load()) }
func (f *fakeFill) set(v float64) { f.bits.Store(math.Float64bits(v)) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// baseConfig is a valid test config; tests change what they exercise.
func baseConfig() Config {
	return Config{
		Addr:     "127.0.0.1:0",
		Hostname: "mx.test",
		Domains:  []string{"example.com"},
	}
}

// startServer runs a Server on a loopback port and stops it at cleanup.
func startServer(t testing.TB, cfg Config, pub Publisher, fill FillGauge) (*Server, string) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	srv, err := New(cfg, pub, fill, nil, discardLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, ErrServerClosed) {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return srv, srv.Addr().String()
}

// resp is one SMTP reply.
type resp struct {
	code  int
	enh   string // "5.7.1", or "" if none
	text  string // last line's text after the codes
	lines []string
}

func (r resp) String() string { return strings.Join(r.lines, " | ") }

// status is "code enh", e.g. "550 5.7.1".
func (r resp) status() string {
	if r.enh == "" {
		return strconv.Itoa(r.code)
	}
	return fmt.Sprintf("%d %s", r.code, r.enh)
}

// client is a raw SMTP client: every byte on the wire is the test's.
type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	return dialFrom(t, addr, nil)
}

func dialFrom(t *testing.T, addr string, local net.Addr) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: local}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	// A guard against a hung test, far longer than any expected wait.
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// greet dials, expects the 220 greeting and says EHLO.
func greet(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr)
	c.expect("", "220")
	c.expect("EHLO client.example", "250")
	return c
}

func (c *client) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write %q: %v", trunc(s), err)
	}
}

// read reads one (possibly multi-line) reply.
func (c *client) read() (resp, error) {
	var r resp
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return r, err
		}
		line = strings.TrimRight(line, "\r\n")
		r.lines = append(r.lines, line)
		if len(line) < 4 {
			return r, fmt.Errorf("short reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return r, fmt.Errorf("bad reply line %q", line)
		}
		r.code = code
		if line[3] == '-' {
			continue
		}
		r.text = line[4:]
		if f := strings.SplitN(r.text, " ", 2); len(f) == 2 && strings.Count(f[0], ".") == 2 && f[0][0] >= '2' && f[0][0] <= '5' {
			r.enh, r.text = f[0], f[1]
		}
		return r, nil
	}
}

func (c *client) mustRead() resp {
	c.t.Helper()
	r, err := c.read()
	if err != nil {
		c.t.Fatalf("read reply: %v (got %v)", err, r)
	}
	return r
}

// cmd sends one command line ("" sends nothing) and reads the reply.
func (c *client) cmd(line string) resp {
	c.t.Helper()
	if line != "" {
		c.write(line + "\r\n")
	}
	return c.mustRead()
}

// expect sends line and checks that the reply's status starts with want
// ("250", "550 5.7.1").
func (c *client) expect(line, want string) resp {
	c.t.Helper()
	r := c.cmd(line)
	if !strings.HasPrefix(r.status(), want) {
		c.t.Fatalf("%q: got %v, want %s", trunc(line), r, want)
	}
	return r
}

// expectClosed checks that the server closed the connection (after any
// replies already read).
func (c *client) expectClosed() {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.br.ReadByte()
	if err == nil {
		rest, _ := c.br.ReadString('\n')
		c.t.Fatalf("connection still open: read %q", string(b)+rest)
	}
	if isTimeout(err) {
		c.t.Fatalf("connection still open: %v", err)
	}
}

// send runs a whole transaction and returns the reply to the end of DATA.
func (c *client) send(from string, rcpts []string, body string) resp {
	c.t.Helper()
	c.expect("MAIL FROM:<"+from+">", "250")
	for _, r := range rcpts {
		c.expect("RCPT TO:<"+r+">", "250")
	}
	c.expect("DATA", "354")
	c.write(dotStuff(body) + ".\r\n")
	return c.mustRead()
}

// dotStuff prepares body for DATA: a leading '.' is doubled, a final CRLF
// is ensured.
func dotStuff(body string) string {
	if !strings.HasSuffix(body, "\r\n") {
		body += "\r\n"
	}
	lines := strings.SplitAfter(body, "\r\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") {
			lines[i] = "." + l
		}
	}
	return strings.Join(lines, "")
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// msgCount reads levee_smtp_messages_total{result,code}.
func msgCount(s *Server, result, code string) float64 {
	return testutil.ToFloat64(s.metrics.messages.WithLabelValues(result, code))
}

// waitFor polls cond (no sleeps as synchronisation: the condition decides).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

const simpleBody = "From: a@sender.org\r\nTo: rcpt@example.com\r\nSubject: hi\r\nMessage-ID: <1@sender.org>\r\n\r\nHello.\r\n"
