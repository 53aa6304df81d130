package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/levee-mail/levee/app"
)

// Levee is a whole Levee in the test process, stopped when the test ends.
type Levee struct {
	*app.Levee
	T        *testing.T
	SMTPAddr string // host:port
	HTTPURL  string // http://host:port
}

// Config is `levee serve`'s defaults in a fresh directory, on free loopback
// ports, accepting mail for example.test and other.test, with the queue in
// 4 partitions: the end-to-end tests (exactly once, restarts, limits) run
// over several streams, the harder case. The default single stream runs in
// the process tests (cmd/levee) and queue's own.
func Config(t *testing.T) app.Config {
	cfg := app.DefaultConfig()
	cfg.Queue.Partitions = 4
	cfg.DataDir = t.TempDir()
	cfg.SMTP.Addr = "127.0.0.1:0"
	cfg.SMTP.Hostname = "mx.levee.test"
	cfg.SMTP.Domains = []string{"example.test", "other.test"}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Queue.Port = -1
	cfg.LogLevel = "warn"
	return cfg
}

// Start runs every role with cfg, logging warnings to the test's output.
func Start(t *testing.T, cfg app.Config) *Levee {
	t.Helper()
	return StartWith(t, cfg, app.RoleAll, Log(t))
}

// StartWith runs roles with cfg, logging to log.
func StartWith(t *testing.T, cfg app.Config, roles app.Role, log *slog.Logger) *Levee {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := app.Start(ctx, cfg, roles, log)
	if err != nil {
		t.Fatalf("start levee: %v", err)
	}
	tl := &Levee{Levee: l, T: t, HTTPURL: "http://" + l.HTTP.Addr().String()}
	if l.SMTP != nil {
		tl.SMTPAddr = l.SMTP.Addr().String()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := l.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return tl
}

// Log sends warnings and errors to t.Log, so that they show only for
// failing tests.
func Log(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Send delivers one message in its own SMTP session and returns the SMTP
// error of whichever command refused it (nil on 250).
func Send(addr, from string, to []string, body []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.levee.test"); err != nil {
		return err
	}
	if err := SendOn(c, from, to, body); err != nil {
		return err
	}
	return c.Quit()
}

// SendOn runs one mail transaction on an open client.
func SendOn(c *smtp.Client, from string, to []string, body []byte) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.Close()
}

// ReplyCode returns "452 4.3.1" for an *smtp.SMTPError, "" for nil.
func ReplyCode(err error) string {
	if err == nil {
		return ""
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return "error: " + err.Error()
}

// Message is test message i of about size bytes, to rcpt@example.test.
func Message(i int, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Sender <sender@client.test>\r\nTo: rcpt@example.test\r\nSubject: test message %d\r\nMessage-ID: <msg-%d@client.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nX-Levee-Test-Id: %d\r\n\r\n", i, i, i)
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	fmt.Fprintf(&b, "end of message %d\r\n", i)
	return b.Bytes()
}

// WaitFor polls cond until it holds, failing the test after timeout.
func WaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ports returns n distinct loopback ports, each free a moment ago, for
// servers that must be told their port in advance (another process's
// config) or come back on the same port after a restart.
//
// A port from 127.0.0.1:0 is one the kernel also hands to outgoing
// connections as their local port, so between our close and the server's
// bind another socket could take it (issue 13 item 20: nats-server failed
// with "bind: address already in use"). These are drawn at random from
// below the kernel's ephemeral range instead, where only an explicit bind
// can land; another test can still pick one, so starts that fail with
// AddrInUse should be retried on fresh ports.
func Ports(t testing.TB, n int) []int {
	t.Helper()
	lo, hi := portRange()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no free loopback port in [%d, %d) after %d tries", lo, hi, tries)
		}
		p := lo + rand.IntN(hi-lo)
		handedOut.Lock()
		taken := handedOut.m[p]
		handedOut.Unlock()
		if taken {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		handedOut.Lock()
		handedOut.m[p] = true
		handedOut.Unlock()
		ports = append(ports, p)
	}
	return ports
}

// handedOut: ports Ports returned in this process, never returned twice.
var handedOut = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// portRange is where Ports draws from: from 20000 (clear of the well-known
// ports and deploy/local's defaults) up to the kernel's ephemeral range.
func portRange() (lo, hi int) {
	lo, hi = 20000, 32768 // Linux's default ephemeral range starts at 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var elo, ehi int
		if _, err := fmt.Sscan(string(b), &elo, &ehi); err == nil {
			switch {
			case elo-lo >= 1000:
				hi = elo
			case ehi < 64000:
				lo, hi = ehi+1, 65536
			}
		}
	}
	return lo, hi
}

// AddrInUse reports whether a server's error or log says its port was
// taken: the one failure a start on fresh ports cures.
func AddrInUse(errOrLog string) bool {
	return strings.Contains(errOrLog, "address already in use")
}

// GetJSON GETs path from the HTTP API and decodes a 200's JSON into v
// (unless nil); it returns the status.
func (l *Levee) GetJSON(path string, v any) int {
	l.T.Helper()
	resp, err := http.Get(l.HTTPURL + path)
	if err != nil {
		l.T.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			l.T.Fatalf("GET %s: decode: %v", path, err)
		}
	}
	return resp.StatusCode
}

// Raw is the stored message id, byte for byte.
func (l *Levee) Raw(id string) []byte {
	l.T.Helper()
	resp, err := http.Get(l.HTTPURL + "/api/v1/messages/" + url.PathEscape(id) + "/raw")
	if err != nil {
		l.T.Fatalf("GET raw: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		l.T.Fatalf("GET raw %s: status %d", id, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		l.T.Fatal(err)
	}
	return b
}

// Summary is a message as a mailbox page lists it.
type Summary struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Size    int64  `json:"size"`
}

// Mailbox lists every message in a mailbox through the HTTP API, page by
// page; nil for an unknown mailbox.
func (l *Levee) Mailbox(address string) []Summary {
	l.T.Helper()
	var all []Summary
	cursor := ""
	for {
		var page struct {
			Messages   []Summary `json:"messages"`
			NextCursor string    `json:"next_cursor"`
		}
		code := l.GetJSON("/api/v1/mailboxes/"+url.PathEscape(address)+"/messages?limit=200&cursor="+url.QueryEscape(cursor), &page)
		if code == http.StatusNotFound {
			return nil
		}
		if code != http.StatusOK {
			l.T.Fatalf("list mailbox %s: status %d", address, code)
		}
		all = append(all, page.Messages...)
		if page.NextCursor == "" {
			return all
		}
		cursor = page.NextCursor
	}
}

// SyncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// CheckStoredAsSent asserts that raw is exactly sent with one Received
// header (possibly folded) prepended by Levee.
func CheckStoredAsSent(t *testing.T, raw, sent []byte) {
	t.Helper()
	if !bytes.HasSuffix(raw, sent) {
		t.Fatalf("stored bytes do not end with the sent bytes:\nstored %d bytes, sent %d bytes", len(raw), len(sent))
	}
	prefix := string(raw[:len(raw)-len(sent)])
	if !strings.HasPrefix(prefix, "Received: from ") || !strings.HasSuffix(prefix, "\r\n") {
		t.Fatalf("prepended bytes are not one Received header: %q", prefix)
	}
	for i, line := range strings.Split(strings.TrimSuffix(prefix, "\r\n"), "\r\n") {
		if i > 0 && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			t.Fatalf("prepended bytes hold more than the Received header: line %q", line)
		}
	}
}
