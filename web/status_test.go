package web

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue/admin"
	"github.com/prometheus/client_golang/prometheus"
)

// queueFunc is a QueueOps whose Status is the function (and whose other
// operations are not expected to be called: they panic).
type queueFunc func(ctx context.Context) (admin.Status, error)

func (f queueFunc) ops() QueueOps { return statusOnly{status: f} }

type statusOnly struct {
	QueueOps
	status queueFunc
}

func (s statusOnly) Status(ctx context.Context) (admin.Status, error) { return s.status(ctx) }

func (s statusOnly) SampleInterval() time.Duration { return 2 * time.Second }

func (s statusOnly) History(time.Time) []admin.Sample { return []admin.Sample{} }

func TestQueueStatus(t *testing.T) {
	want := admin.Status{Stream: "LEVEE", Messages: 42, Fill: admin.Fill{Max: 0.25}}
	f := newFixture(t, fixtureOpts{queue: queueFunc(func(context.Context) (admin.Status, error) { return want, nil }).ops()})
	var got admin.Status
	decode(t, f.get(t, "/api/v1/queue"), http.StatusOK, &got)
	if got.Stream != want.Stream || got.Messages != want.Messages || got.Fill != want.Fill {
		t.Fatalf("status = %+v, want %+v", got, want)
	}
}

// TestQueueStatusInSeconds: GET /api/v1/queue gives durations in seconds
// (max_age was 604800000000000), an empty queue's first_seq as 0 (it was
// last_seq+1), and no rates over a moment: a window of 59µs just after a
// sample made one message look like 17,000 a second (issue 13 item 14).
func TestQueueStatusInSeconds(t *testing.T) {
	st := admin.Status{Stream: "LEVEE_MAIL", FirstSeq: 2, LastSeq: 1,
		Limits: admin.StreamLimits{MaxAge: 168 * time.Hour, DuplicateWindow: 10 * time.Minute},
		Rates:  admin.Rates{WindowSeconds: 0.000059, Ingest: 17000}}
	f := newFixture(t, fixtureOpts{queue: queueFunc(func(context.Context) (admin.Status, error) { return st, nil }).ops()})
	var got struct {
		FirstSeq uint64 `json:"first_seq"`
		LastSeq  uint64 `json:"last_seq"`
		Limits   map[string]any
		Oldest   *float64 `json:"oldest_message_age_seconds"`
		Rates    admin.Rates
	}
	decode(t, f.get(t, "/api/v1/queue"), http.StatusOK, &got)
	if got.FirstSeq != 0 || got.LastSeq != 1 {
		t.Errorf("empty queue: first_seq %d, last_seq %d; want 0 and 1", got.FirstSeq, got.LastSeq)
	}
	if got.Limits["max_age_seconds"] != 604800.0 || got.Limits["duplicate_window_seconds"] != 600.0 || got.Limits["max_age"] != nil {
		t.Errorf("limits = %v, want max_age_seconds 604800, duplicate_window_seconds 600, no nanoseconds", got.Limits)
	}
	if got.Oldest == nil || *got.Oldest != 0 {
		t.Errorf("oldest_message_age_seconds = %v, want 0", got.Oldest)
	}
	if got.Rates != (admin.Rates{}) {
		t.Errorf("rates over 59µs = %+v, want none (window 0)", got.Rates)
	}

	st.Rates = admin.Rates{WindowSeconds: 5, Ingest: 2}
	decode(t, f.get(t, "/api/v1/queue"), http.StatusOK, &got)
	if got.Rates != st.Rates {
		t.Errorf("rates over 5s = %+v, want %+v", got.Rates, st.Rates)
	}
}

func TestQueueStatusUnavailable(t *testing.T) {
	t.Run("error", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{queue: queueFunc(func(context.Context) (admin.Status, error) {
			return admin.Status{}, errors.New("nats: connection refused to nats://internal-host:4222")
		}).ops()})
		rec := f.get(t, "/api/v1/queue")
		wantError(t, rec, http.StatusServiceUnavailable, "queue status unavailable")
		if !strings.Contains(f.logs.String(), "internal-host") {
			t.Errorf("the cause is not logged:\n%s", f.logs)
		}
	})
	t.Run("hangs past the timeout", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{
			cfg: Config{QueueStatusTimeout: 20 * time.Millisecond},
			queue: queueFunc(func(ctx context.Context) (admin.Status, error) {
				<-ctx.Done()
				return admin.Status{}, ctx.Err()
			}).ops(),
		})
		wantError(t, f.get(t, "/api/v1/queue"), http.StatusServiceUnavailable, "queue status unavailable")
	})
	t.Run("no queue", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{})
		wantError(t, f.get(t, "/api/v1/queue"), http.StatusServiceUnavailable, "queue status not available")
	})
	t.Run("status that cannot be encoded", func(t *testing.T) {
		f := newFixture(t, fixtureOpts{queue: queueFunc(func(context.Context) (admin.Status, error) {
			return admin.Status{Fill: admin.Fill{Max: math.NaN()}}, nil
		}).ops()})
		wantError(t, f.get(t, "/api/v1/queue"), http.StatusInternalServerError, "internal server error")
	})
}

func TestHandlerPanicIs500(t *testing.T) {
	f := newFixture(t, fixtureOpts{queue: queueFunc(func(context.Context) (admin.Status, error) { panic("boom in status") }).ops()})
	wantError(t, f.get(t, "/api/v1/queue"), http.StatusInternalServerError, "internal server error")
	if !strings.Contains(f.logs.String(), "boom in status") {
		t.Errorf("panic not logged:\n%s", f.logs)
	}
	// The server keeps answering.
	wantStatus(t, f.get(t, "/healthz"), http.StatusOK)
}

func wantStatus(t *testing.T, rec interface{ Result() *http.Response }, code int) {
	t.Helper()
	if got := rec.Result().StatusCode; got != code {
		t.Fatalf("status = %d, want %d", got, code)
	}
}

func TestHealthz(t *testing.T) {
	// Liveness ignores dependencies: a failing readiness check does not matter.
	f := newFixture(t, fixtureOpts{ready: map[string]Check{"store": func(context.Context) error { return errors.New("down") }}})
	rec := f.get(t, "/healthz")
	var body map[string]string
	decode(t, rec, http.StatusOK, &body)
	if body["status"] != "ok" || len(body) != 1 {
		t.Fatalf("body = %s", rec.Body)
	}
}

func TestReadyz(t *testing.T) {
	ok := func(context.Context) error { return nil }
	failing := func(context.Context) error { return errors.New("dial tcp 10.0.0.7:5432: connection refused") }
	hanging := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	panicking := func(context.Context) error { panic("check exploded") }

	for _, tc := range []struct {
		name      string
		checks    map[string]Check
		wantCode  int
		wantErr   string
		wantCheck map[string]string
	}{
		{"no checks", nil, http.StatusOK, "", map[string]string{}},
		{"all pass", map[string]Check{"store": ok, "queue": ok}, http.StatusOK, "",
			map[string]string{"store": "ok", "queue": "ok"}},
		{"one fails", map[string]Check{"store": failing, "queue": ok}, http.StatusServiceUnavailable, "not ready: store",
			map[string]string{"store": "failed", "queue": "ok"}},
		{"fail, hang and panic", map[string]Check{"store": failing, "queue": hanging, "cache": panicking, "disk": ok},
			http.StatusServiceUnavailable, "not ready: cache, queue, store",
			map[string]string{"store": "failed", "queue": "timeout", "cache": "failed", "disk": "ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixtureOpts{cfg: Config{ReadyTimeout: 50 * time.Millisecond}, ready: tc.checks})
			rec := f.get(t, "/readyz")
			var body struct {
				Status string
				Error  string
				Checks map[string]string
			}
			decode(t, rec, tc.wantCode, &body)
			if body.Error != tc.wantErr {
				t.Errorf("error = %q, want %q", body.Error, tc.wantErr)
			}
			if len(body.Checks) != len(tc.wantCheck) {
				t.Errorf("checks = %v, want %v", body.Checks, tc.wantCheck)
			}
			for k, v := range tc.wantCheck {
				if body.Checks[k] != v {
					t.Errorf("check %s = %q, want %q", k, body.Checks[k], v)
				}
			}
			if strings.Contains(rec.Body.String(), "10.0.0.7") || strings.Contains(rec.Body.String(), "exploded") {
				t.Errorf("readyz leaks check errors: %s", rec.Body)
			}
		})
	}
}

// A check that ignores its ctx must not hold the probe past ReadyTimeout.
func TestReadyzDoesNotWaitForStuckCheck(t *testing.T) {
	release := make(chan struct{})
	done := make(chan struct{})
	stuck := func(context.Context) error { defer close(done); <-release; return nil }
	f := newFixture(t, fixtureOpts{cfg: Config{ReadyTimeout: 20 * time.Millisecond}, ready: map[string]Check{"stuck": stuck}})
	defer func() { close(release); <-done }() // let the check's goroutine end for goleak

	rec := f.get(t, "/readyz")
	var body struct{ Checks map[string]string }
	decode(t, rec, http.StatusServiceUnavailable, &body)
	if body.Checks["stuck"] != "timeout" {
		t.Fatalf("checks = %v, want stuck: timeout", body.Checks)
	}
}

func TestReadyzJSONShape(t *testing.T) {
	f := newFixture(t, fixtureOpts{ready: map[string]Check{"store": func(context.Context) error { return nil }}})
	var raw map[string]json.RawMessage
	decode(t, f.get(t, "/readyz"), http.StatusOK, &raw)
	if string(raw["status"]) != `"ready"` {
		t.Errorf("status = %s", raw["status"])
	}
	if _, ok := raw["error"]; ok {
		t.Errorf("ready response carries an error field: %v", raw)
	}
}

// historyAsks counts History calls: an admin.Ops samples only once asked.
type historyAsks struct {
	fakeOps
	mu    sync.Mutex
	asked int
}

func (h *historyAsks) History(since time.Time) []admin.Sample {
	h.mu.Lock()
	h.asked++
	h.mu.Unlock()
	return h.fakeOps.History(since)
}

// The process that serves mailboxes (and so the dashboard people open)
// starts the queue's history when it starts listening, not at the first
// poll; one that serves no mail (smtpd, worker) leaves it to the first
// ask, as sampling costs a stats round over every process.
func TestStartStartsTheHistory(t *testing.T) {
	t.Parallel()
	for _, withReader := range []bool{true, false} {
		q := &historyAsks{}
		reg := prometheus.NewRegistry()
		deps := Deps{Queue: q, Gatherer: reg}
		if withReader {
			deps.Reader = newMemReader()
		}
		srv, err := New(Config{Addr: "127.0.0.1:0"}, deps)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		q.mu.Lock()
		asked := q.asked
		q.mu.Unlock()
		if want := map[bool]int{true: 1, false: 0}[withReader]; asked != want {
			t.Errorf("with a reader %v: Start asked for the history %d times, want %d", withReader, asked, want)
		}
	}
}
