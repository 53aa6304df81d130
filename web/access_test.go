package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue/admin"
)

// deadOps answers the dead-letter reads, so that a 200 shows a request got
// through.
type deadOps struct{ fakeOps }

func (d *deadOps) DeadLetters(context.Context, uint64, int) ([]admin.DeadLetterInfo, uint64, error) {
	return []admin.DeadLetterInfo{{Seq: 7}}, 1, nil
}

func (d *deadOps) DeadLetter(context.Context, uint64) (admin.DeadLetterInfo, []byte, error) {
	return admin.DeadLetterInfo{Seq: 7}, []byte("Subject: secret\r\n\r\nbody\r\n"), nil
}

func (d *deadOps) Status(context.Context) (admin.Status, error) {
	return admin.Status{At: time.Now()}, nil
}

// request sends one request as `curl localhost:8025` would, with the
// Authorization header given (none when empty).
func request(srv *Server, method, target, auth, host string) *httptest.ResponseRecorder {
	var body *strings.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"message_ids":["<a@b>"]}`)
	} else {
		body = strings.NewReader("")
	}
	req := newRequest(method, target, body)
	if host != "" {
		req.Host = host
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	return rec
}

// mailRoutes are every route that shows mail: with a read token they need
// it.
func mailRoutes(id string) [][2]string {
	return [][2]string{
		{http.MethodGet, "/api/v1/mailboxes"},
		{http.MethodGet, "/api/v1/mailboxes/rcpt@example.test/messages"},
		{http.MethodGet, "/api/v1/messages?message_id=%3Ca@b%3E"},
		{http.MethodPost, "/api/v1/messages/lookup"},
		{http.MethodGet, "/api/v1/messages/" + id},
		{http.MethodGet, "/api/v1/messages/" + id + "/raw"},
		{http.MethodGet, "/api/v1/dlq"},
		{http.MethodGet, "/api/v1/dlq/7"},
		{http.MethodGet, "/api/v1/dlq/7/raw"},
	}
}

func TestReadTokenGuardsMail(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOpts{queue: &deadOps{}, cfg: Config{ReadToken: "r3ad-tok", AdminToken: "adm1n-tok"}})
	m := f.reader.deliver("s@x.test", []string{"rcpt@example.test"}, []byte("Subject: hi\r\n\r\nhello\r\n"), time.Now())
	for _, rt := range mailRoutes(m.ID) {
		for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Bearer r3ad-to", "Bearer r3ad-tok2",
			"Basic cjNhZC10b2s=", "r3ad-tok", "Token r3ad-tok"} {
			rec := request(f.srv, rt[0], rt[1], auth, "")
			wantError(t, rec, http.StatusUnauthorized, "read token missing or wrong (Authorization: Bearer <http.read_token>)")
			if rec.Header().Get("WWW-Authenticate") != `Bearer realm="levee"` {
				t.Errorf("%s %s with %q: WWW-Authenticate %q", rt[0], rt[1], auth, rec.Header().Get("WWW-Authenticate"))
			}
		}
		// The scheme is case-insensitive (RFC 7235), and the admin token
		// reads too.
		for _, auth := range []string{"Bearer r3ad-tok", "bearer r3ad-tok", "BEARER  r3ad-tok", "Bearer adm1n-tok", "bEaReR adm1n-tok"} {
			if rec := request(f.srv, rt[0], rt[1], auth, ""); rec.Code != http.StatusOK {
				t.Errorf("%s %s with %q: %d, want 200: %s", rt[0], rt[1], auth, rec.Code, rec.Body)
			}
		}
	}
	// What holds no mail stays open: the dashboard and the figures it
	// polls, the probes, the metrics.
	for _, path := range []string{"/", "/ui/dashboard.js", "/api/v1/queue", "/api/v1/queue/history", "/healthz", "/readyz", "/metrics"} {
		if rec := request(f.srv, http.MethodGet, path, "", ""); rec.Code != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want 200: %s", path, rec.Code, rec.Body)
		}
	}
}

// Without a read token the mail routes are open, as they always were.
func TestNoReadTokenLeavesReadsOpen(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOpts{queue: &deadOps{}})
	m := f.reader.deliver("s@x.test", []string{"rcpt@example.test"}, []byte("Subject: hi\r\n\r\nhello\r\n"), time.Now())
	for _, rt := range mailRoutes(m.ID) {
		if rec := request(f.srv, rt[0], rt[1], "", ""); rec.Code != http.StatusOK {
			t.Errorf("%s %s: %d, want 200: %s", rt[0], rt[1], rec.Code, rec.Body)
		}
	}
}

// RFC 7235 section 2.1: the auth scheme is case-insensitive, for the admin
// token too.
func TestAdminTokenSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	ops := &fakeOps{}
	f := newFixture(t, fixtureOpts{queue: ops, cfg: Config{AdminToken: "tok"}})
	for _, auth := range []string{"bearer tok", "BEARER tok", "Bearer  tok"} {
		if rec := request(f.srv, http.MethodPost, "/api/v1/dlq/7/replay", auth, ""); rec.Code != http.StatusOK {
			t.Errorf("replay with %q: %d, want 200: %s", auth, rec.Code, rec.Body)
		}
	}
	// The read token does not change anything.
	g := newFixture(t, fixtureOpts{queue: ops, cfg: Config{AdminToken: "tok", ReadToken: "read"}})
	wantError(t, request(g.srv, http.MethodPost, "/api/v1/dlq/7/replay", "Bearer read", ""), http.StatusUnauthorized,
		"admin token missing or wrong (Authorization: Bearer <http.admin_token>)")
}

// A DNS rebinding: a page from http://attacker.example:8025/ whose name now
// resolves to 127.0.0.1 reads the API as same-origin. Its requests name
// the attacker's domain in Host, which a server on loopback does not answer.
func TestHostAllowList(t *testing.T) {
	t.Parallel()
	const misdirected = "this server does not answer to host %q: list it in http.allowed_hosts (LEVEE_HTTP_ALLOWED_HOSTS), or address it by IP"
	cases := []struct {
		name  string
		cfg   Config
		allow []string
		deny  []string
	}{
		{"default loopback", Config{},
			[]string{"127.0.0.1:8025", "localhost:8025", "LocalHost.:8025", "app.localhost", "[::1]:8025", "10.1.2.3", "127.0.0.1", ""},
			[]string{"attacker.example:8025", "attacker.example", "localhost.attacker.example:8025", "127.0.0.1.nip.io:8025"}},
		{"ipv6 loopback", Config{Addr: "[::1]:8025"}, []string{"[::1]:8025", "localhost"}, []string{"attacker.example"}},
		{"localhost listener", Config{Addr: "localhost:8025"}, []string{"localhost:8025"}, []string{"attacker.example"}},
		{"public listener", Config{Addr: "0.0.0.0:8025"}, []string{"attacker.example", "mail.example.com"}, nil},
		{"every interface", Config{Addr: ":8025"}, []string{"attacker.example"}, nil},
		{"listed", Config{Addr: "0.0.0.0:8025", AllowedHosts: []string{"mail.example.com", "Levee.Internal."}},
			[]string{"mail.example.com", "MAIL.example.com.:443", "levee.internal:8025", "10.0.0.5:8025", "[2001:db8::1]:8025", "localhost:8025"},
			[]string{"attacker.example", "example.com", "sub.mail.example.com", "mail.example.com.attacker.example"}},
		{"star", Config{AllowedHosts: []string{"*"}}, []string{"attacker.example"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fixtureOpts{queue: &deadOps{}, cfg: c.cfg})
			for _, h := range c.allow {
				for _, path := range []string{"/api/v1/mailboxes", "/", "/api/v1/queue"} {
					if rec := request(f.srv, http.MethodGet, path, "", h); rec.Code != http.StatusOK {
						t.Errorf("Host %q, GET %s: %d, want 200: %s", h, path, rec.Code, rec.Body)
					}
				}
			}
			for _, h := range c.deny {
				for _, path := range []string{"/api/v1/mailboxes", "/api/v1/messages/x/raw", "/", "/ui/dashboard.js", "/api/v1/queue", "/api/v1/dlq"} {
					wantError(t, request(f.srv, http.MethodGet, path, "", h), http.StatusMisdirectedRequest, strings.ReplaceAll(misdirected, "%q", `"`+h+`"`))
				}
				// Probes and scrapers name the pod as they were told.
				for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
					if rec := request(f.srv, http.MethodGet, path, "", h); rec.Code != http.StatusOK {
						t.Errorf("Host %q, GET %s: %d, want 200", h, path, rec.Code)
					}
				}
			}
		})
	}
}

// The default, over a real connection: curl to 127.0.0.1 and localhost
// work, a rebound name does not.
func TestHostAllowListOverTCP(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOpts{cfg: Config{Addr: "127.0.0.1:0"}})
	if err := f.srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.srv.Shutdown(context.Background()) })
	addr := f.srv.Addr().String()
	_, port, _ := strings.Cut(addr, ":")
	for host, want := range map[string]int{addr: 200, "localhost:" + port: 200, "rebound.example:" + port: http.StatusMisdirectedRequest} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/api/v1/mailboxes", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestAllowedHostsValidation(t *testing.T) {
	t.Parallel()
	for _, bad := range [][]string{{"http://mail.example.com"}, {"mail.example.com:8025"}, {"mail.example.com/x"}, {"."}} {
		err := Config{AllowedHosts: bad}.WithDefaults().Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "http.allowed_hosts: ") {
			t.Errorf("allowed_hosts %q: %v, want an error naming http.allowed_hosts", bad, err)
		}
	}
	for _, good := range [][]string{{"mail.example.com"}, {"*"}, {"10.0.0.1", "::1", "[::1]"}, nil} {
		if err := (Config{AllowedHosts: good}).WithDefaults().Validate(); err != nil {
			t.Errorf("allowed_hosts %q: %v", good, err)
		}
	}
}
