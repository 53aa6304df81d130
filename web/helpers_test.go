package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer collects log output written from handler goroutines.
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

type fixture struct {
	srv    *Server
	reader *memReader
	reg    *prometheus.Registry
	logs   *syncBuffer
}

type fixtureOpts struct {
	cfg   Config
	queue QueueOps
	ready map[string]Check
}

func newFixture(t *testing.T, o fixtureOpts) *fixture {
	t.Helper()
	f := &fixture{reader: newMemReader(), reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := New(o.cfg, Deps{Reader: f.reader, Queue: o.queue, Gatherer: f.reg, Ready: o.ready, Registerer: f.reg, Log: log})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.srv = srv
	return f
}

func (f *fixture) do(t *testing.T, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, newRequest(method, target, nil))
	return rec
}

func (f *fixture) get(t *testing.T, target string) *httptest.ResponseRecorder {
	t.Helper()
	return f.do(t, http.MethodGet, target)
}

// decode asserts the status and a JSON content type, then decodes the body.
func decode(t *testing.T, rec *httptest.ResponseRecorder, wantCode int, v any) {
	t.Helper()
	if rec.Code != wantCode {
		t.Fatalf("status = %d, want %d; body: %s", rec.Code, wantCode, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q, want application/json; body: %s", ct, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
}

// wantError asserts a JSON error response with the given status and message.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, wantCode int, wantMsg string) {
	t.Helper()
	wantReason(t, rec, wantCode, wantMsg, "")
}

// wantReason is wantError for the ops API's errors that carry a reason
// (admin.Reason), "" for none.
func wantReason(t *testing.T, rec *httptest.ResponseRecorder, wantCode int, wantMsg, reason string) {
	t.Helper()
	var body map[string]any
	decode(t, rec, wantCode, &body)
	want := map[string]any{"error": wantMsg}
	if reason != "" {
		want["reason"] = reason
	}
	if !reflect.DeepEqual(body, want) {
		t.Fatalf("body = %s, want %v", rec.Body, want)
	}
}

var baseTime = time.Date(2025, 11, 24, 9, 0, 0, 0, time.UTC)

// simpleMessage is a plain one-part message with a distinguishing subject.
func simpleMessage(n int) []byte {
	return fmt.Appendf(nil, "From: Sender <s@example.org>\r\nTo: a@example.com\r\n"+
		"Subject: message %d\r\nMessage-ID: <m%d@example.org>\r\n"+
		"Date: Mon, 24 Nov 2025 09:00:00 +0000\r\n\r\nbody %d\r\n", n, n, n)
}

// newRequest is httptest.NewRequest addressed as `curl localhost:8025`
// would be: its default Host, example.com, is not one a server on the
// default loopback address answers to (hostPolicy).
func newRequest(method, target string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	r.Host = "localhost:8025"
	return r
}
