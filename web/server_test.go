package web

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue/admin"
	"github.com/prometheus/client_golang/prometheus"
)

// A process without mailboxes (levee smtpd, levee worker) serves only the
// ops endpoints.
func TestNilReaderServesOpsOnly(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, err := New(Config{}, Deps{Gatherer: reg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/healthz": 200, "/metrics": 200, "/readyz": 200, "/api/v1/mailboxes": 404, "/api/v1/messages/x": 404} {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, newRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("GET %s: %d, want %d", path, rec.Code, want)
		}
	}
}

func TestNewRejectsBadArguments(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := newMemReader()
	cases := map[string]func() error{
		"bad config": func() error { _, err := New(Config{Addr: "nope"}, Deps{Reader: r, Gatherer: reg}); return err },
		"nil check": func() error {
			_, err := New(Config{}, Deps{Reader: r, Gatherer: reg, Ready: map[string]Check{"store": nil}})
			return err
		},
		"no gatherer": func() error {
			_, err := New(Config{}, Deps{Reader: r, Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"x": "y"}, prometheus.NewRegistry())})
			return err
		},
	}
	for name, fn := range cases {
		if err := fn(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	// The same registry twice: the second registration conflicts.
	if _, err := New(Config{}, Deps{Reader: r, Gatherer: reg, Registerer: reg}); err != nil {
		t.Fatalf("first New: %v", err)
	}
	if _, err := New(Config{}, Deps{Reader: r, Gatherer: reg, Registerer: reg}); err == nil {
		t.Error("second New on the same registry: want a registration error")
	}
	// A nil gatherer falls back to a registerer that can gather.
	if _, err := New(Config{}, Deps{Reader: r, Registerer: prometheus.NewRegistry()}); err != nil {
		t.Errorf("nil gatherer with a *Registry: %v", err)
	}
}

func startFixture(t *testing.T, o fixtureOpts) *fixture {
	t.Helper()
	if o.cfg.Addr == "" {
		o.cfg.Addr = "127.0.0.1:0"
	}
	f := newFixture(t, o)
	if err := f.srv.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return f
}

func TestStartServeShutdown(t *testing.T) {
	f := newFixture(t, fixtureOpts{cfg: Config{Addr: "127.0.0.1:0"}})
	if f.srv.Addr() != nil {
		t.Fatal("Addr before Start is not nil")
	}
	if err := f.srv.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := f.srv.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := f.srv.Start(t.Context()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v, want ErrStarted", err)
	}
	raw := simpleMessage(7)
	m := f.reader.deliver("s@example.org", []string{"a@example.com"}, raw, baseTime)
	base := "http://" + f.srv.Addr().String()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	// Start returned, so the listener accepts right away.
	resp, err := client.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "{\"status\":\"ok\"}\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}

	// HEAD on a GET route: headers, no body (net/http drops it).
	resp, err = client.Head(base + "/api/v1/messages/" + m.ID + "/raw")
	if err != nil {
		t.Fatalf("HEAD raw: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Header.Get("Content-Length") != strconv.Itoa(len(raw)) {
		t.Errorf("HEAD raw: %d, body %d bytes, Content-Length %q", resp.StatusCode, len(body), resp.Header.Get("Content-Length"))
	}

	if err := f.srv.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := f.srv.Shutdown(t.Context()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if _, err := client.Get(base + "/healthz"); err == nil {
		t.Error("server still answers after Shutdown")
	}
	if err := f.srv.Start(t.Context()); !errors.Is(err, ErrStarted) {
		t.Errorf("Start after Shutdown: %v, want ErrStarted", err)
	}
}

func TestStartFailsOnBusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f := newFixture(t, fixtureOpts{cfg: Config{Addr: ln.Addr().String()}})
	if err := f.srv.Start(t.Context()); err == nil {
		f.srv.Shutdown(t.Context())
		t.Fatal("Start on a busy address succeeded")
	}
	if f.srv.Addr() != nil {
		t.Error("Addr after a failed Start is not nil")
	}
}

// Shutdown waits for in-flight requests, and when its ctx runs out it cuts
// them and still returns only after the server goroutine has exited.
func TestShutdownDrainsThenCuts(t *testing.T) {
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	q := queueFunc(func(ctx context.Context) (admin.Status, error) {
		entered <- struct{}{}
		select {
		case <-release:
			return admin.Status{Messages: 1}, nil
		case <-ctx.Done():
			return admin.Status{}, ctx.Err()
		}
	}).ops()

	t.Run("drain", func(t *testing.T) {
		f := startFixture(t, fixtureOpts{queue: q})
		client := &http.Client{Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		got := make(chan int, 1)
		go func() {
			resp, err := client.Get("http://" + f.srv.Addr().String() + "/api/v1/queue")
			if err != nil {
				got <- -1
				return
			}
			resp.Body.Close()
			got <- resp.StatusCode
		}()
		<-entered
		shut := make(chan error, 1)
		go func() { shut <- f.srv.Shutdown(context.Background()) }()
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned (%v) while a request was in flight", err)
		case <-time.After(50 * time.Millisecond):
		}
		release <- struct{}{}
		if code := <-got; code != http.StatusOK {
			t.Errorf("in-flight request: %d, want 200", code)
		}
		if err := <-shut; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		f := startFixture(t, fixtureOpts{queue: q})
		client := &http.Client{Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		got := make(chan error, 1)
		go func() {
			resp, err := client.Get("http://" + f.srv.Addr().String() + "/api/v1/queue")
			if err == nil {
				resp.Body.Close()
			}
			got <- err
		}()
		<-entered
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if err := f.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want DeadlineExceeded", err)
		}
		<-got // the cut request ends one way or another
	})
}

// TestPprofIsOptInAndBehindTheAdminToken: the profiler is not served unless
// asked for, and then only to the admin token's holder.
func TestPprofIsOptInAndBehindTheAdminToken(t *testing.T) {
	var ops fakeOps
	off := newFixture(t, fixtureOpts{cfg: Config{AdminToken: "tok"}})
	if rec := ops.send(t, off.srv, http.MethodGet, "/debug/pprof/heap", "tok", ""); rec.Code != http.StatusNotFound {
		t.Errorf("pprof off: %d, want 404", rec.Code)
	}
	on := newFixture(t, fixtureOpts{cfg: Config{AdminToken: "tok", Pprof: true}})
	if rec := ops.send(t, on.srv, http.MethodGet, "/debug/pprof/heap", "", ""); rec.Code != http.StatusUnauthorized {
		t.Errorf("pprof without the token: %d, want 401", rec.Code)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1"} {
		rec := ops.send(t, on.srv, http.MethodGet, path, "tok", "")
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("GET %s with the token: %d, %d bytes", path, rec.Code, rec.Body.Len())
		}
	}
	noToken := newFixture(t, fixtureOpts{cfg: Config{Pprof: true}})
	if rec := ops.send(t, noToken.srv, http.MethodGet, "/debug/pprof/", "x", ""); rec.Code != http.StatusForbidden {
		t.Errorf("pprof without a configured token: %d, want 403", rec.Code)
	}
}
