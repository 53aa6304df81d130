package natsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultHost keeps the embedded server on loopback: it serves only the
// process that embeds it (and tests, and an operator on the same host).
const DefaultHost = "127.0.0.1"

// Config configures an embedded nats-server with JetStream.
type Config struct {
	// DataDir holds the JetStream file store.
	DataDir string
	// Host and Port to listen on; Port 0 or -1 picks a free port (nats-server
	// itself would read 0 as its default 4222, which Levee never wants).
	Host string
	Port int
	// SyncAlways fsyncs every JetStream write before it is acknowledged
	// (the server's sync_interval: always). Off, the server syncs every 2m.
	SyncAlways bool
	// SyncInterval, without SyncAlways, is how often the server syncs its
	// stores itself; 0 keeps its default (2m).
	SyncInterval time.Duration
	// MaxPayload is the largest NATS message (headers and body); 0 keeps the
	// server's 1 MB default.
	MaxPayload int32
	// ServerName names the node (distinct per node in a cluster).
	ServerName string

	// Clustering, all optional: a route listener and the other nodes'
	// route URLs (nats-route://host:port). JetStream clustering needs
	// ClusterName and a distinct ServerName per node.
	ClusterName string
	ClusterHost string
	ClusterPort int
	Routes      []string

	// Log receives the server's warnings and errors (notices at debug);
	// nil discards them.
	Log *slog.Logger

	// maxStore is the JetStream store limit a Restart keeps (0: the
	// server's default, 75% of the free disk space at start).
	maxStore int64
}

// ErrShutdown: the server was shut down (Shutdown), so Health has nothing
// to say and Restart will not start it again.
var ErrShutdown = errors.New("natsserver: the server was shut down")

// Server is a running embedded nats-server.
type Server struct {
	cfg Config
	// ns is the running server; Restart replaces it.
	ns atomic.Pointer[server.Server]
	// mu serialises Restart and Shutdown.
	mu      sync.Mutex
	stopped bool
}

// Start starts a nats-server with JetStream and waits until it takes
// connections.
func Start(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("natsserver: data dir is required")
	}
	ns, err := start(cfg)
	if err != nil {
		return nil, err
	}
	// A restart takes the same ports, not new random ones: clients and
	// routes know these.
	if a, ok := ns.Addr().(*net.TCPAddr); ok {
		cfg.Port = a.Port
	}
	if a := ns.ClusterAddr(); a != nil {
		cfg.ClusterPort = a.Port
	}
	s := &Server{cfg: cfg}
	s.ns.Store(ns)
	return s, nil
}

// start starts one server as cfg says and waits until it takes connections.
func start(cfg Config) (*server.Server, error) {
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	host := cfg.Host
	if host == "" {
		host = DefaultHost
	}
	opts := &server.Options{
		ServerName:   cfg.ServerName,
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     cfg.DataDir,
		SyncAlways:   cfg.SyncAlways,
		SyncInterval: cfg.SyncInterval,
		MaxPayload:   cfg.MaxPayload,
		NoSigs:       true,
		// No monitoring port, no pid file: the embedding process has its own.
		JetStreamMaxStore: cfg.maxStore, // 0: the server's default
	}
	if cfg.ClusterName != "" || cfg.ClusterPort != 0 {
		cport := cfg.ClusterPort
		if cport == 0 {
			cport = server.RANDOM_PORT
		}
		chost := cfg.ClusterHost
		if chost == "" {
			chost = host
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: chost, Port: cport}
		if len(cfg.Routes) > 0 {
			opts.Routes = server.RoutesFromStr(strings.Join(cfg.Routes, ","))
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	logger := &serverLog{log: cfg.Log}
	ns.SetLoggerV2(logger, false, false, false)
	ns.Start()
	stop := func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	// The server reports start-up failures (port in use, store unusable)
	// through Fatalf and keeps running half-started, so check both.
	ready := false
	for deadline := time.Now().Add(10 * time.Second); !ready && logger.fatal() == "" && time.Now().Before(deadline); {
		ready = ns.ReadyForConnections(100 * time.Millisecond)
	}
	if !ready {
		stop()
		return nil, fmt.Errorf("natsserver: server on %s did not start: %s", net.JoinHostPort(host, strconv.Itoa(cfg.Port)), logger.fatal())
	}
	if msg := logger.fatal(); msg != "" || !ns.JetStreamEnabled() {
		stop()
		return nil, fmt.Errorf("natsserver: JetStream did not start: %s", msg)
	}
	return ns, nil
}

// Restart stops the server and starts it again on the same data directory
// and ports, as a process restart would, for what only that clears: a
// stream whose store met a write error (a full disk) refuses every write
// until it is opened again, and nats-server reopens streams only at start
// (see Health). Clients reconnect as after any outage. On error the server
// stays stopped; Restart may be called again.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrShutdown
	}
	old := s.ns.Load()
	// The store limit it had, not 75% of the space free now: after a
	// restart on a disk that has only just room again, the limit would be
	// below what the queue holds, and every publish refused as over it
	// (insufficient storage) until the queue drained below it.
	if jsc := old.JetStreamConfig(); jsc != nil && jsc.MaxStore > 0 {
		s.cfg.maxStore = jsc.MaxStore
	}
	old.Shutdown()
	old.WaitForShutdown()
	ns, err := start(s.cfg)
	if err != nil {
		return fmt.Errorf("natsserver: restart: %w", err)
	}
	s.ns.Store(ns)
	return nil
}

// Health is nil while the server's JetStream is healthy, else the reason
// its health check gives: above all a stream or consumer whose store met a
// write error, which nats-server keeps (refusing, or leaving unanswered,
// every later write to it) until the stream is opened again by Restart.
// Cheap enough to poll every second: it reads the store's directory
// listing, not its data.
func (s *Server) Health() error {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return ErrShutdown
	}
	h := s.ns.Load().Healthz(&server.HealthzOptions{})
	if h.StatusCode == http.StatusOK {
		return nil
	}
	return fmt.Errorf("nats-server: %s", h.Error)
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.Load().ClientURL() }

// Port is the client port actually bound (useful after a random port); 0
// once the server has stopped.
func (s *Server) Port() int {
	if a, ok := s.ns.Load().Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// ClusterURL is the nats-route:// URL other nodes route to ("" without clustering).
func (s *Server) ClusterURL() string {
	addr := s.ns.Load().ClusterAddr()
	if addr == nil {
		return ""
	}
	return "nats-route://" + addr.String()
}

// NATS exposes the underlying server for tests and diagnostics: the one
// running now (Restart replaces it).
func (s *Server) NATS() *server.Server { return s.ns.Load() }

// Shutdown stops the server and waits until it has stopped; safe to call twice.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	ns := s.ns.Load()
	ns.Shutdown()
	ns.WaitForShutdown()
}

// serverLog routes the server's log to slog: warnings and errors stay
// visible, its start-up notices go to debug so an embedded queue is quiet.
type serverLog struct {
	log *slog.Logger
	mu  sync.Mutex
	// fatalMsg keeps the last Fatalf: the library would exit the process
	// there; Start reports it instead.
	fatalMsg string
}

func (l *serverLog) emit(level slog.Level, format string, v []any) {
	if l.log == nil {
		return
	}
	l.log.Log(context.Background(), level, "nats-server: "+fmt.Sprintf(format, v...))
}

func (l *serverLog) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalMsg
}

func (l *serverLog) Noticef(format string, v ...any) { l.emit(slog.LevelDebug, format, v) }

func (l *serverLog) Warnf(format string, v ...any) {
	// Levee raises max_payload above 8 MB on purpose (whole mail messages),
	// so the server's generic advice against it is noise here.
	if strings.HasPrefix(format, "Maximum payloads over") {
		l.emit(slog.LevelDebug, format, v)
		return
	}
	l.emit(slog.LevelWarn, format, v)
}

func (l *serverLog) Fatalf(format string, v ...any) {
	l.mu.Lock()
	l.fatalMsg = fmt.Sprintf(format, v...)
	l.mu.Unlock()
	l.emit(slog.LevelError, format, v)
}

func (l *serverLog) Errorf(format string, v ...any) { l.emit(slog.LevelError, format, v) }
func (l *serverLog) Debugf(format string, v ...any) {}
func (l *serverLog) Tracef(format string, v ...any) {}
