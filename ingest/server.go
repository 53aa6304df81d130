package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
)

// shutdownGrace bounds how long Shutdown waits for go-smtp's connection
// goroutines after it closed every connection. It only matters if a
// Publisher ignores its context.
const shutdownGrace = 5 * time.Second

// Server is Levee's SMTP receiver.
type Server struct {
	cfg     Config
	pub     Publisher
	log     *slog.Logger
	metrics *metrics
	wm      *watermark
	domains map[string]struct{}
	smtp    *smtp.Server
	conns   *connRegistry
	// pressure is the transactions waiting on the queue (see Pressure).
	pressure *pressure
	// sizeAdvert corrects the SIZE go-smtp advertises in the EHLO reply.
	sizeAdvert sizeAdvert
	// budget bounds the message bytes sessions hold (smtp.max_bytes_in_flight).
	budget *memoryBudget
	// rates limits the messages per client and network (smtp.max_messages_per_*).
	rates *clientRates
	// proxies are the peers trusted to send a PROXY protocol header.
	proxies proxySources
	// now is the clock of ReceivedAt (a test's own clock in tests).
	now func() time.Time
	// readsData: a plaintext DATA body is read by Levee, not go-smtp
	// (readahead.go); tests turn it off to compare the two.
	readsData bool
	// dataRead counts the DATA bodies Levee read itself (for tests).
	dataRead atomic.Int64
	// tlsEnabled: STARTTLS is offered, so a STARTTLS line starts a handshake.
	tlsEnabled bool

	// ctx is the server's lifetime context. go-smtp gives sessions no
	// context, so every Publish derives its context from this one (bounded
	// by PublishTimeout). Shutdown cancels it when its own ctx expires,
	// aborting publishes in flight: they answer 451 4.3.0 and the sender
	// retries.
	ctx    context.Context
	cancel context.CancelFunc

	// draining is set when Shutdown begins: no new connection or
	// transaction is taken from then on.
	draining atomic.Bool

	mu        sync.Mutex
	shut      bool
	ln        *listener
	serveDone chan struct{} // closed when Start's Serve goroutine returns
}

// New builds a Server from cfg (defaults applied, then validated). pub is
// required. fill may be nil (no watermark). reg may be nil (metrics are then
// kept in a private registry); log may be nil (slog.Default()).
func New(cfg Config, pub Publisher, fill FillGauge, reg prometheus.Registerer, log *slog.Logger) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pub == nil {
		return nil, errors.New("ingest: New: nil Publisher")
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		pub:      pub,
		log:      log,
		metrics:  m,
		wm:       &watermark{fill: fill, high: cfg.HighWatermark, low: cfg.LowWatermark, gauge: m.watermark},
		domains:  map[string]struct{}{},
		pressure: newPressure(time.Now),
	}
	for _, d := range cfg.Domains {
		s.domains[d] = struct{}{}
	}
	s.budget = newMemoryBudget(cfg.MaxBytesInFlight)
	s.now = time.Now
	s.readsData = true
	s.rates = newClientRates(cfg.MaxMessagesPerClient, cfg.MaxMessagesPerNetwork)
	s.proxies, _ = parseProxySources(cfg.ProxyProtocolFrom) // checked by Validate
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "levee_smtp_bytes_in_flight",
		Help: "Message bytes SMTP sessions hold in memory, read but not yet queued; at smtp.max_bytes_in_flight new mail gets 452 4.3.1.",
	}, func() float64 { return float64(s.budget.inFlight()) })); err != nil {
		return nil, fmt.Errorf("ingest: metrics: %w", err)
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "levee_smtp_intake_pressure",
		Help: "SMTP transactions waiting on the queue (message read, publish not yet answered), averaged over about a quarter second: near 0 while the receiver keeps up.",
	}, s.Pressure)); err != nil {
		return nil, fmt.Errorf("ingest: metrics: %w", err)
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "levee_smtp_intake_rate",
		Help: "SMTP publishes answered per second (whatever the answer), averaged over about a second: what worker.intake_first compares with its usual (levee_worker_intake_usual_rate).",
	}, s.IntakeRate)); err != nil {
		return nil, fmt.Errorf("ingest: metrics: %w", err)
	}
	s.conns = newConnRegistry(cfg.MaxConnections, cfg.MaxConnectionsPerIP, func(n int) { m.active.Set(float64(n)); m.sessionsOpen.Store(int64(n)) })
	s.ctx, s.cancel = context.WithCancel(context.Background())

	ss := smtp.NewServer(backend{s})
	ss.Domain = cfg.Hostname
	// 0: Levee enforces smtp.max_message_bytes itself (readBody, Mail) and
	// advertises it (sizeAdvert): go-smtp's reader refused a message of
	// exactly its limit.
	ss.MaxMessageBytes = 0
	s.sizeAdvert = newSizeAdvert(cfg.MaxMessageBytes)
	ss.MaxLineLength = cfg.MaxLineLength
	// 0: Levee counts recipients itself, so the 452 4.5.3 is decided in
	// codes.go (the price: no LIMITS RCPTMAX= in the EHLO reply).
	ss.MaxRecipients = 0
	// 0: trackedConn owns the read deadline as a renewing idle timeout.
	ss.ReadTimeout = 0
	ss.WriteTimeout = cfg.WriteTimeout
	ss.EnableSMTPUTF8 = true
	if cfg.TLSCert != "" {
		certs, err := loadCertFiles(cfg.TLSCert, cfg.TLSKey, log)
		if err != nil {
			return nil, err
		}
		ss.TLSConfig = s.tlsConfig(certs)
		s.tlsEnabled = true
	}
	ss.ErrorLog = smtpLogger{log}
	s.smtp = ss
	return s, nil
}

// Config returns the effective configuration (defaults applied).
func (s *Server) Config() Config { return s.cfg }

// Start listens on the configured address and serves in the background. It
// returns once the listener is open, so Addr is valid afterwards; ctx bounds
// only the listen itself.
func (s *Server) Start(ctx context.Context) error {
	// No TCP keepalive: smtp.read_timeout already ends a session whose peer
	// went away, and Go's keepalive costs four setsockopt calls on every
	// accepted connection (about 1% of levee serve's CPU profile, with a
	// connection per message from smtp-source).
	lc := net.ListenConfig{KeepAlive: -1}
	l, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("ingest: listen on %s (smtp.addr): %w", s.cfg.Addr, err)
	}
	done := make(chan struct{})
	ln, err := s.register(l, done)
	if err != nil {
		_ = l.Close()
		return err
	}
	go func() {
		defer close(done)
		if err := s.serve(ln); err != nil {
			s.log.Error("smtp server stopped", "err", err)
		}
	}()
	return nil
}

// Serve accepts connections on l until Shutdown, then returns nil.
func (s *Server) Serve(l net.Listener) error {
	ln, err := s.register(l, nil)
	if err != nil {
		return err
	}
	return s.serve(ln)
}

func (s *Server) register(l net.Listener, serveDone chan struct{}) (*listener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return nil, ErrServerClosed
	}
	if s.ln != nil {
		return nil, errors.New("ingest: already serving")
	}
	s.ln = newListener(l, s)
	s.serveDone = serveDone
	return s.ln, nil
}

func (s *Server) serve(ln *listener) error {
	err := s.smtp.Serve(ln)
	s.mu.Lock()
	shut := s.shut
	s.mu.Unlock()
	if shut {
		return nil
	}
	return fmt.Errorf("ingest: serve: %w", err)
}

// Addr is the listening address, or nil before Serve or Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops the server in two steps.
//
// First it stops taking work: a new connection is greeted with 421 4.3.2 and
// closed, a session idle at a command prompt gets 421 4.3.2 and is closed, a
// new MAIL gets 421 4.3.2; sessions inside a transaction finish it (their
// DATA is published and answered) and are closed at their next command.
//
// When every connection is closed, Shutdown returns nil. If ctx ends first,
// it cancels the lifetime context (pending publishes answer 451 4.3.0),
// closes the remaining connections and returns an error wrapping ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.shut = true
	ln, serveDone := s.ln, s.serveDone
	s.mu.Unlock()

	s.draining.Store(true)
	for _, c := range s.conns.snapshot() {
		if !c.busy.Load() {
			c.interrupt()
		}
	}
	var result error
	if err := s.conns.waitEmpty(ctx); err != nil {
		left := s.conns.snapshot()
		result = fmt.Errorf("ingest: shutdown: closed %d connections at the deadline: %w", len(left), err)
		s.log.Warn("smtp shutdown deadline: closing connections", "connections", len(left))
		s.cancel()
		for _, c := range left {
			c.forceClose()
		}
	}
	s.cancel()

	// Only now stop listening: until here new connections got a 421
	// instead of a refused TCP connect.
	if ln != nil {
		_ = ln.Close()
	}
	grace, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := s.smtp.Shutdown(grace); err != nil && result == nil && !errors.Is(err, net.ErrClosed) {
		result = fmt.Errorf("ingest: shutdown: %w", err)
	}
	// A connection accepted in the instant before the listener closed is
	// told 421 at its first read; wait for it too.
	if err := s.conns.waitEmpty(grace); err != nil && result == nil {
		result = fmt.Errorf("ingest: shutdown: %w", err)
	}
	if serveDone != nil {
		select {
		case <-serveDone:
		case <-grace.Done():
		}
	}
	return result
}

func (s *Server) acceptsDomain(d string) bool {
	if s.cfg.AcceptAllDomains {
		return true
	}
	_, ok := s.domains[strings.ToLower(d)]
	return ok
}

// backend is go-smtp's Backend: one session per connection, made at HELO.
type backend struct{ srv *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	nc := c.Conn()
	if t, ok := nc.(*tls.Conn); ok {
		// After STARTTLS go-smtp starts a new session on the TLS connection.
		nc = t.NetConn()
		if tc, ok := nc.(*trackedConn); ok {
			tc.wmu.Lock()
			tc.tlsConn = t
			tc.wmu.Unlock()
		}
	}
	tc, _ := nc.(*trackedConn)
	remote := ""
	if a := c.Conn().RemoteAddr(); a != nil {
		remote = a.String()
	}
	return &session{srv: b.srv, conn: tc, smtpConn: c, remote: remote}, nil
}

// smtpLogger routes go-smtp's internal log lines to slog: panics (which
// Levee recovers itself first, so they are bugs) at error level, connection
// errors at debug level.
type smtpLogger struct{ log *slog.Logger }

func (l smtpLogger) Printf(format string, v ...any) { l.emit(fmt.Sprintf(format, v...)) }
func (l smtpLogger) Println(v ...any)               { l.emit(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }

func (l smtpLogger) emit(msg string) {
	if strings.Contains(msg, "panic") {
		l.log.Error("smtp: "+msg, "component", "go-smtp")
		return
	}
	l.log.Debug("smtp: "+msg, "component", "go-smtp")
}

// Pressure is how many SMTP transactions are waiting on the queue (message
// read, publish not yet answered), averaged over about a quarter second: the accept
// rate times the publish latency. It is near 0 while the receiver keeps up
// and rises when a surge makes senders wait on Levee; workers sharing the
// machine step back from draining above worker.intake_first.above.
func (srv *Server) Pressure() float64 { return srv.pressure.value() }

// IntakeRate is how many publishes the receiver has answered per second
// (whatever the answer), averaged over about a second. Workers sharing the
// machine compare it with its usual to tell a surge of senders from their
// own drain slowing the publishes.
func (srv *Server) IntakeRate() float64 { return srv.pressure.perSecond() }
