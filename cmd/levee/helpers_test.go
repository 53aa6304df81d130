package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// testLevee is a whole Levee in the test process: embedded JetStream in a
// temp dir, real SQLite, real SMTP and HTTP on loopback ports.
type testLevee struct {
	*Levee
	t        *testing.T
	smtpAddr string
	httpURL  string
}

func testConfig(t *testing.T) Config {
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.SMTP.Addr = "127.0.0.1:0"
	cfg.SMTP.Hostname = "mx.levee.test"
	cfg.SMTP.Domains = []string{"example.test", "other.test"}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Queue.Port = -1
	cfg.LogLevel = "warn"
	return cfg
}

func startLevee(t *testing.T, cfg Config) *testLevee {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Start(ctx, cfg, RoleAll, log)
	if err != nil {
		t.Fatalf("start levee: %v", err)
	}
	tl := &testLevee{Levee: l, t: t, smtpAddr: l.SMTP.Addr().String(), httpURL: "http://" + l.HTTP.Addr().String()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := l.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return tl
}

// testWriter sends logs to t.Log so that they show only for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// send delivers one message in its own SMTP session and returns the SMTP
// error of whichever command refused it (nil on 250).
func send(addr, from string, to []string, body []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.levee.test"); err != nil {
		return err
	}
	if err := sendOn(c, from, to, body); err != nil {
		return err
	}
	return c.Quit()
}

// sendOn runs one mail transaction on an open client.
func sendOn(c *smtp.Client, from string, to []string, body []byte) error {
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

// replyCode returns "452 4.3.1" for an *smtp.SMTPError, or "" for nil.
func replyCode(err error) string {
	if err == nil {
		return ""
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return "error: " + err.Error()
}

func testMessage(i int, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Sender <sender@client.test>\r\nTo: rcpt@example.test\r\nSubject: test message %d\r\nMessage-ID: <msg-%d@client.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nX-Levee-Test-Id: %d\r\n\r\n", i, i, i)
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	fmt.Fprintf(&b, "end of message %d\r\n", i)
	return b.Bytes()
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *testLevee) getJSON(path string, v any) int {
	l.t.Helper()
	resp, err := http.Get(l.httpURL + path)
	if err != nil {
		l.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			l.t.Fatalf("GET %s: decode: %v", path, err)
		}
	}
	return resp.StatusCode
}

func (l *testLevee) getRaw(id string) []byte {
	l.t.Helper()
	resp, err := http.Get(l.httpURL + "/api/v1/messages/" + url.PathEscape(id) + "/raw")
	if err != nil {
		l.t.Fatalf("GET raw: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		l.t.Fatalf("GET raw %s: status %d", id, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		l.t.Fatal(err)
	}
	return b
}

type summary struct {
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Size    int64  `json:"size"`
}

// mailbox lists every message in a mailbox through the HTTP API, page by page.
func (l *testLevee) mailbox(address string) []summary {
	l.t.Helper()
	var all []summary
	cursor := ""
	for {
		var page struct {
			Messages   []summary `json:"messages"`
			NextCursor string    `json:"next_cursor"`
		}
		code := l.getJSON("/api/v1/mailboxes/"+url.PathEscape(address)+"/messages?limit=200&cursor="+url.QueryEscape(cursor), &page)
		if code == http.StatusNotFound {
			return nil
		}
		if code != http.StatusOK {
			l.t.Fatalf("list mailbox %s: status %d", address, code)
		}
		all = append(all, page.Messages...)
		if page.NextCursor == "" {
			return all
		}
		cursor = page.NextCursor
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
