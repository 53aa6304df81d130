package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
	"github.com/prometheus/client_golang/prometheus"
)

// MailReader is the read half of store.Store; store.Store satisfies it.
// Unknown mailboxes and messages must give an error wrapping store.ErrNotFound.
type MailReader interface {
	Mailboxes(ctx context.Context) ([]store.Mailbox, error)
	Messages(ctx context.Context, address string, page store.Page) (store.MessagePage, error)
	Message(ctx context.Context, id string) (*mail.Message, error)
	Raw(ctx context.Context, id string) ([]byte, error)
	// FindByMessageID serves the audit look-up (store.Finder).
	FindByMessageID(ctx context.Context, messageIDs []string) (map[string][]store.Summary, error)
}

// Check is one readiness check (store ping, queue connected). It should
// return promptly once ctx is done.
type Check func(ctx context.Context) error

var (
	// ErrStarted is returned by Start on a server that was already started
	// (a Server runs once, even after Shutdown).
	ErrStarted = errors.New("web: server already started")
	// ErrInvalid is wrapped by New when an argument or the config is invalid.
	ErrInvalid = errors.New("web: invalid argument")
)

// Server is Levee's HTTP API. Handler can be used on its own (tests, another
// server); Start and Shutdown run it on Config.Addr.
type Server struct {
	cfg      Config
	reader   MailReader
	queue    QueueOps
	ready    map[string]Check
	log      *slog.Logger
	metrics  *metrics
	mux      *http.ServeMux
	handler  http.Handler
	patterns []string
	hosts    hostPolicy
	// reads is the mailbox API's read latency (see ReadLatency), fed by
	// the routes in readRoutes.
	reads      *readLatency
	readRoutes map[string]bool

	mu      sync.Mutex
	srv     *http.Server
	ln      net.Listener
	done    chan struct{}
	stopped bool
}

// Deps is what a Server serves and reports to. Every field may be left
// zero except as noted.
type Deps struct {
	// Reader serves the mailbox API. Nil for a process that serves no
	// mailboxes (`levee smtpd`, `levee worker`): the mailbox routes are then
	// not registered, and only the ops endpoints answer.
	Reader MailReader
	// Queue serves the ops API; nil answers its routes with 503. With a
	// Reader, Start asks it for its history once, which starts an
	// admin.Ops's sampling: the dashboard's charts begin with the process.
	Queue QueueOps
	// Gatherer serves /metrics; nil uses Registerer if that is also a
	// Gatherer (a *prometheus.Registry), and one of the two is required.
	Gatherer prometheus.Gatherer
	// Ready are the readiness checks of /readyz, by name.
	Ready map[string]Check
	// Registerer takes the HTTP metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Log nil means slog.Default().
	Log *slog.Logger
}

// New builds the server.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	gatherer := deps.Gatherer
	if gatherer == nil {
		g, ok := deps.Registerer.(prometheus.Gatherer)
		if !ok {
			return nil, fmt.Errorf("%w: nil gatherer and the registerer is not a Gatherer", ErrInvalid)
		}
		gatherer = g
	}
	checks := make(map[string]Check, len(deps.Ready))
	for name, c := range deps.Ready {
		if c == nil || name == "" {
			return nil, fmt.Errorf("%w: readiness check %q is nil or unnamed", ErrInvalid, name)
		}
		checks[name] = c
	}
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, reader: deps.Reader, queue: deps.Queue, ready: checks, log: log, mux: http.NewServeMux(),
		reads: newReadLatency(time.Now), readRoutes: map[string]bool{}, hosts: newHostPolicy(cfg)}
	s.routes(gatherer)
	routes := make([]string, len(s.patterns))
	for i, p := range s.patterns {
		routes[i] = routeLabel(p)
	}
	m, err := newMetrics(deps.Registerer, routes, s.readGauges())
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

// Handler returns the whole API: routing, JSON errors and request metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on Config.Addr and serves in the background. It returns once
// the listener is open, so Addr is valid and connections are accepted; ctx
// bounds only the listen itself. Stop the server with Shutdown.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil { // an http.Server cannot serve again after Shutdown
		return ErrStarted
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("web: listen on %s: %w", s.cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	s.srv, s.ln, s.done = srv, ln, done
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	s.log.Info("http server listening", "addr", ln.Addr().String())
	if s.reader != nil && s.queue != nil {
		// The queue samples its history only once asked (admin.Ops: most
		// smtpd and worker processes never serve a dashboard). The process
		// the web app and its operators open asks now, before SMTP
		// listens, so that the charts hold the mail of the first seconds
		// too rather than starting at the dashboard's first poll.
		s.queue.History(time.Now())
	}
	if s.reader != nil && s.cfg.ReadToken == "" && !listensOnLoopback(s.cfg.Addr) {
		s.log.Warn("the mailbox API answers anyone who reaches this address: set http.read_token (LEVEE_HTTP_READ_TOKEN) and http.allowed_hosts unless a network policy or proxy guards it",
			"addr", ln.Addr().String())
	}
	return nil
}

// Addr is the address the server listens on, nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx is done; then it closes the remaining connections and returns
// ctx's error. It returns only after the serving goroutine has exited.
// Calling it before Start or a second time is a no-op.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.srv == nil || s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	srv, done := s.srv, s.done
	s.mu.Unlock()
	err := srv.Shutdown(ctx)
	if err != nil {
		// Draining ran out of time: cut the stragglers so that nothing
		// outlives the caller's deadline.
		_ = srv.Close()
		err = fmt.Errorf("web: shutdown: %w", err)
	}
	<-done
	return err
}

// ReadLatency is the mailbox API's read p99 over its last 5 s window and
// its idle baseline (the 10th percentile of such p99s over the last 30
// minutes), and when that window started; ok is
// false until enough reads were seen. The workers' autoscaler holds the
// drain so that recent stays within worker.autoscale.reader_budget times
// idle.
func (s *Server) ReadLatency() (recent, idle time.Duration, since time.Time, ok bool) {
	return s.reads.ReadLatency()
}

// readGauges export ReadLatency, for a process that serves mailboxes.
func (s *Server) readGauges() []prometheus.Collector {
	if s.reader == nil {
		return nil
	}
	get := func(idle bool) func() float64 {
		return func() float64 {
			recent, base, _, ok := s.ReadLatency()
			switch {
			case !ok:
				return 0
			case idle:
				return base.Seconds()
			}
			return recent.Seconds()
		}
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "levee_web_read_p99_seconds",
			Help: "Mailbox API reads: p99 over the last 5 s window (0 until 20 reads in a window)."}, get(false)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "levee_web_read_idle_p99_seconds",
			Help: "Mailbox API reads: the idle baseline, the 10th percentile of the 5 s p99s of the last 30 minutes, which worker.autoscale.reader_budget multiplies."}, get(true)),
	}
}
