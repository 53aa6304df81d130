package loadtest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// sinkServer is a real go-smtp server over TCP whose behaviour a test
// scripts: it records every message it accepts and can refuse or delay
// them. It stands in for "any SMTP server"; the tests against Levee itself
// are in cmd/levee.
type sinkServer struct {
	t    *testing.T
	addr string
	srv  *smtp.Server

	// data decides the reply to DATA for a message's n-th attempt (1-based);
	// nil accepts everything.
	data func(mid string, attempt int) error
	// mail decides the reply to MAIL FROM (nil: accept).
	mail func() error
	// delay is slept in DATA: a deliberately slow server.
	delay time.Duration

	mu        sync.Mutex
	attempts  map[string]int       // Message-ID -> DATA attempts
	stored    map[string]int       // Message-ID -> times accepted
	storedAt  map[string]time.Time // first acceptance
	rcpts     map[string][]string
	sessions  int
	resets    int
	bodies    map[string][]byte
	overTLS   int // messages received over TLS
	closeOnce sync.Once
	// tls, when set, makes the server offer STARTTLS.
	tls *tls.Config
}

func startSink(t *testing.T, configure func(*sinkServer)) *sinkServer {
	t.Helper()
	s := &sinkServer{t: t, attempts: map[string]int{}, stored: map[string]int{}, storedAt: map[string]time.Time{},
		rcpts: map[string][]string{}, bodies: map[string][]byte{}}
	if configure != nil {
		configure(s)
	}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "sink.test"
	s.srv.MaxRecipients = 100
	s.srv.MaxMessageBytes = 32 << 20
	s.srv.AllowInsecureAuth = true
	s.srv.TLSConfig = s.tls
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(s.close)
	return s
}

func (s *sinkServer) close() { s.closeOnce.Do(func() { _ = s.srv.Close() }) }

func (s *sinkServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	s.sessions++
	s.mu.Unlock()
	return &sinkSession{s: s, conn: c}, nil
}

type sinkSession struct {
	s     *sinkServer
	conn  *smtp.Conn
	rcpts []string
}

func (ss *sinkSession) Reset() {
	ss.rcpts = nil
	ss.s.mu.Lock()
	ss.s.resets++
	ss.s.mu.Unlock()
}
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(string, *smtp.MailOptions) error {
	if ss.s.mail != nil {
		return ss.s.mail()
	}
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasSuffix(to, "@refused.test") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "not here"}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if ss.s.delay > 0 {
		time.Sleep(ss.s.delay)
	}
	mid := headerValue(body, "Message-ID")
	ss.s.mu.Lock()
	ss.s.attempts[mid]++
	n := ss.s.attempts[mid]
	ss.s.mu.Unlock()
	if ss.s.data != nil {
		if err := ss.s.data(mid, n); err != nil {
			return err
		}
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if _, ok := ss.conn.TLSConnectionState(); ok {
		ss.s.overTLS++
	}
	if ss.s.stored[mid] == 0 {
		ss.s.storedAt[mid] = time.Now()
		ss.s.bodies[mid] = body
	}
	ss.s.stored[mid]++
	ss.s.rcpts[mid] = append([]string(nil), ss.rcpts...)
	return nil
}

// headerValue finds a header field in a raw message, without <>.
func headerValue(raw []byte, name string) string {
	for _, line := range bytes.Split(raw, []byte("\r\n")) {
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(k), name) {
			return strings.Trim(strings.TrimSpace(string(v)), "<>")
		}
	}
	return ""
}

func (s *sinkServer) storedCount() (msgs, copies int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.stored {
		msgs++
		copies += n
	}
	return msgs, copies
}

// fakeAPI serves the parts of Levee's HTTP API that the load tester reads,
// backed by what the sink accepted. Each test decides what it "loses" or
// "duplicates" — the real API cannot be made to lose mail on demand; the
// load tester against the real Levee is tested in cmd/levee.
type fakeAPI struct {
	*httptest.Server
	sink *sinkServer
	// copies overrides how many stored copies the look-up reports.
	copies func(mid string, stored int) int
	// down, when it says so for the nth look-up (from 1), answers it 503.
	down func(n int) bool
	// lag makes each message found only this long after the sink took it
	// (a queue the workers drain behind the receiver), stored_at then.
	lag time.Duration
	// askedWhileDraining is the most Message-IDs one look-up asked for
	// while some message the sink took was not yet "stored".
	askedWhileDraining int
	mu                 sync.Mutex
	lookups            int
	reads              int
	// scrapes counts GET /metrics: the fake process's CPU time is half a
	// second a scrape, its RSS 90 MB at the second scrape, 60 MB otherwise.
	scrapes int
	// token, when set, is the bearer token the mail routes want (Levee's
	// http.read_token); refused counts the requests without it.
	token   string
	refused int
}

// needsToken answers 401 to a mail route's request without a.token, as
// Levee with http.read_token does.
func (a *fakeAPI) needsToken(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		token := a.token
		mail := strings.HasPrefix(r.URL.Path, "/api/v1/mailboxes") || strings.HasPrefix(r.URL.Path, "/api/v1/messages")
		refuse := token != "" && mail && r.Header.Get("Authorization") != "Bearer "+token
		if refuse {
			a.refused++
		}
		a.mu.Unlock()
		if refuse {
			w.Header().Set("WWW-Authenticate", `Bearer realm="levee"`)
			http.Error(w, `{"error":"read token missing or wrong (Authorization: Bearer <http.read_token>)"}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func startAPI(t *testing.T, sink *sinkServer) *fakeAPI {
	a := &fakeAPI{sink: sink}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/messages/lookup", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			MessageIDs []string `json:"message_ids"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.MessageIDs) > maxLookup {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		a.mu.Lock()
		a.lookups++
		n := a.lookups
		a.mu.Unlock()
		if a.down != nil && a.down(n) {
			http.Error(w, `{"error":"store unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		found := map[string][]storedSummary{}
		now := time.Now()
		sink.mu.Lock()
		for _, at := range sink.storedAt {
			if a.lag > 0 && now.Before(at.Add(a.lag)) {
				a.mu.Lock()
				a.askedWhileDraining = max(a.askedWhileDraining, len(req.MessageIDs))
				a.mu.Unlock()
				break
			}
		}
		for _, mid := range req.MessageIDs {
			n := sink.stored[mid]
			if a.copies != nil {
				n = a.copies(mid, n)
			}
			if a.lag > 0 && now.Before(sink.storedAt[mid].Add(a.lag)) {
				n = 0
			}
			for i := range n {
				at := sink.storedAt[mid].Add(a.lag + time.Duration(i)*time.Millisecond)
				found[mid] = append(found[mid], storedSummary{ID: fmt.Sprintf("%s-%d", mid, i), MessageID: mid, ReceivedAt: at.Add(-time.Millisecond), StoredAt: at})
			}
		}
		sink.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"found": found})
	})
	mux.HandleFunc("GET /api/v1/queue", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"messages": 7, "bytes": 7000, "fill": {"max": 0.07}, "consumer": {"num_pending": 5, "num_ack_pending": 2}}`)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.scrapes++
		n := a.scrapes
		a.mu.Unlock()
		rss := 60e6
		if n == 2 {
			rss = 90e6
		}
		fmt.Fprint(w, "# HELP levee_worker_concurrency x\n# TYPE levee_worker_concurrency gauge\nlevee_worker_concurrency 3\nlevee_worker_autoscale_duty 0.25\nlevee_smtp_active_sessions{x=\"y\"} 2\n")
		fmt.Fprintf(w, "process_cpu_seconds_total %g\nprocess_resident_memory_bytes %g\n", 0.5*float64(n), rss)
	})
	mux.HandleFunc("GET /api/v1/mailboxes", func(w http.ResponseWriter, r *http.Request) {
		a.read()
		fmt.Fprint(w, `{"mailboxes": []}`)
	})
	mux.HandleFunc("GET /api/v1/mailboxes/{address}/messages", func(w http.ResponseWriter, r *http.Request) {
		a.read()
		fmt.Fprint(w, `{"messages": [{"id": "m1"}]}`)
	})
	mux.HandleFunc("GET /api/v1/messages/{id}", func(w http.ResponseWriter, r *http.Request) {
		a.read()
		fmt.Fprint(w, `{"id": "m1"}`)
	})
	a.Server = httptest.NewServer(a.needsToken(mux))
	t.Cleanup(a.Close)
	return a
}

func (a *fakeAPI) read() {
	a.mu.Lock()
	a.reads++
	a.mu.Unlock()
}

// quickConfig is a run that finishes in about a second.
func quickConfig(t *testing.T, target string, sched Schedule) Config {
	t.Helper()
	return Config{
		Target:         target,
		Schedule:       sched,
		To:             "rcpt{n}@example.test",
		Mailboxes:      5,
		Connections:    4,
		Retry:          RetryPolicy{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, GiveUpAfter: 10 * time.Second},
		Audit:          AuditConfig{Timeout: 10 * time.Second, Poll: 20 * time.Millisecond, Settle: 20 * time.Millisecond},
		Interval:       250 * time.Millisecond,
		DrainTimeout:   10 * time.Second,
		CommandTimeout: 10 * time.Second,
		RunID:          "test",
	}
}

func mustConstant(t *testing.T, rate float64, d time.Duration) Schedule {
	t.Helper()
	s, err := Constant(rate, d, ArrivalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// deadAddr is a loopback address that refuses connections for the whole
// test: a socket bound to it but not listening holds the port, so no other
// socket can take it and answer (closing a listener to get a refused port
// left it free for anyone).
func deadAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
