package web

import (
	"fmt"
	"net"
	"time"
)

// DefaultAddr keeps the API on loopback until an operator decides to expose it.
const DefaultAddr = "127.0.0.1:8025"

// Config tunes the HTTP server.
type Config struct {
	// Addr is the listen address (host:port); port 0 picks a free port.
	Addr string `config:"addr" help:"HTTP listen address (API, /metrics, health)"`
	// ReadHeaderTimeout bounds how long a client may take to send its
	// headers, so that slow clients cannot hold connections open (Slowloris).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. The API takes no bodies,
	// so this can be short.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling and writing one response; it must cover
	// sending the largest raw message to a slow reader.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections left idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps the request header size.
	MaxHeaderBytes int
	// ReadyTimeout bounds each readiness check in /readyz; probes must answer
	// quickly even when a dependency hangs.
	ReadyTimeout time.Duration
	// QueueStatusTimeout bounds gathering the queue status for /api/v1/queue
	// and each other queue operation of the ops API.
	QueueStatusTimeout time.Duration
	// Pprof serves Go's profiler under /debug/pprof/, behind AdminToken:
	// where a process spends its CPU, memory and goroutines, measured in
	// production rather than guessed.
	Pprof bool `config:"pprof" help:"serve Go's profiler at /debug/pprof/ (needs http.admin_token): CPU, heap and goroutine profiles of this process"`
	// AdminToken is the bearer token that the ops API's changes (limits,
	// dead-letter replay and purge) require; empty turns them off.
	AdminToken string `config:"admin_token" help:"bearer token that changes over the ops API need (queue limits, dead-letter replay and purge); empty turns them off. Prefer the environment variable: flags show in ps"`
	// ReadToken, when set, is the bearer token that reading mail needs: the
	// mailbox API and the dead letters (AdminToken is accepted too). The
	// dashboard, queue figures, health and metrics stay open.
	ReadToken string `config:"read_token" help:"bearer token that reading mail over HTTP needs (mailbox API, dead letters; http.admin_token works too); empty leaves them open. Dashboard, queue figures, /healthz, /readyz, /metrics stay open. Prefer the environment variable: flags show in ps"`
	// AllowedHosts are the Host names the server answers to (not
	// /healthz, /readyz, /metrics); IP literals and localhost always pass.
	// Empty: only those on a loopback address, any name elsewhere. See
	// newHostPolicy.
	AllowedHosts []string `config:"allowed_hosts" help:"comma-separated Host names the HTTP server answers to, against DNS rebinding (others get 421; IP literals, localhost, /healthz, /readyz and /metrics always pass); * for any. Empty: only those when http.addr is loopback, any name otherwise"`
}

// WithDefaults fills in the zero fields.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 5 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 60 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 2 * time.Second
	}
	if c.QueueStatusTimeout == 0 {
		c.QueueStatusTimeout = 5 * time.Second
	}
	return c
}

// Validate reports the first invalid field by its config key.
func (c Config) Validate() error {
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || port == "" {
		return fmt.Errorf("http.addr: must be host:port, got %q", c.Addr)
	}
	switch {
	case c.ReadHeaderTimeout <= 0:
		return fmt.Errorf("http.read_header_timeout: must be > 0, got %s", c.ReadHeaderTimeout)
	case c.ReadTimeout <= 0:
		return fmt.Errorf("http.read_timeout: must be > 0, got %s", c.ReadTimeout)
	case c.ReadTimeout < c.ReadHeaderTimeout:
		return fmt.Errorf("http.read_timeout: must be >= http.read_header_timeout (%s), got %s", c.ReadHeaderTimeout, c.ReadTimeout)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("http.write_timeout: must be > 0, got %s", c.WriteTimeout)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("http.idle_timeout: must be > 0, got %s", c.IdleTimeout)
	case c.MaxHeaderBytes < 4<<10:
		return fmt.Errorf("http.max_header_bytes: must be >= 4096, got %d", c.MaxHeaderBytes)
	case c.ReadyTimeout <= 0:
		return fmt.Errorf("http.ready_timeout: must be > 0, got %s", c.ReadyTimeout)
	case c.ReadyTimeout >= c.WriteTimeout:
		return fmt.Errorf("http.ready_timeout: must be < http.write_timeout (%s), got %s", c.WriteTimeout, c.ReadyTimeout)
	case c.QueueStatusTimeout <= 0:
		return fmt.Errorf("http.queue_status_timeout: must be > 0, got %s", c.QueueStatusTimeout)
	case c.QueueStatusTimeout >= c.WriteTimeout:
		return fmt.Errorf("http.queue_status_timeout: must be < http.write_timeout (%s), got %s", c.WriteTimeout, c.QueueStatusTimeout)
	}
	return checkAllowedHosts(c.AllowedHosts)
}
