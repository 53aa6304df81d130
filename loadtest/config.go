package loadtest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Config is one run. Errors from Validate name the `levee loadtest` flag
// that sets the field, since the command line is where a run is configured.
type Config struct {
	// Target is the SMTP server, host:port.
	Target string
	// API is Levee's HTTP base URL (http://127.0.0.1:8025). Empty disables
	// the audit, the reader probe and the queue figures: the run then works
	// against any SMTP server.
	API string
	// APIToken, when set, is sent to API as "Authorization: Bearer": the
	// server's http.read_token (or its admin token), which the audit and
	// the reader probe need once the server has one.
	APIToken string

	// Schedule says when messages arrive. Required.
	Schedule Schedule
	// Source makes the messages; nil is a Generator of DefaultSize messages.
	Source Source

	// From is the envelope sender.
	From string
	// To is the recipient address; "{n}" in it is replaced by a number
	// from 0 to Mailboxes-1 that varies from message to message, spreading
	// the mail over that many mailboxes.
	To string
	// Mailboxes is the number of values {n} takes (ignored without {n}).
	Mailboxes int

	// Connections bounds the SMTP sessions open at once.
	Connections int
	// NoPipelining sends one command per round trip even when the server
	// offers PIPELINING.
	NoPipelining bool
	// StartTLS upgrades every session (the server must offer STARTTLS);
	// TLS configures it (nil: verify against the system roots).
	StartTLS bool
	TLS      *tls.Config
	// Helo is the name in EHLO.
	Helo string
	// MessagesPerConnection closes a session after this many transactions,
	// as MTAs cap connection reuse; 0 reuses sessions without limit.
	MessagesPerConnection int
	// IdleProbe: a session idle this long starts its next transaction with
	// RSET, as an MTA does before reusing a cached connection.
	IdleProbe      time.Duration
	DialTimeout    time.Duration
	CommandTimeout time.Duration

	// Retry is how 4xx replies and connection failures are retried.
	Retry RetryPolicy
	// DrainTimeout bounds how long after the last arrival the backlog and
	// the retries may still be sent; what is left then counts as unsent.
	DrainTimeout time.Duration

	// Readers is the number of reader-probe loops (0: none); each waits
	// ReaderThink between page views.
	Readers     int
	ReaderThink time.Duration

	Audit AuditConfig

	// Interval is the time series' resolution (0: chosen from the
	// schedule's duration, 500ms for a minute-long run).
	Interval time.Duration
	// ScrapeEvery is how often the queue figures are read (0: Interval).
	ScrapeEvery time.Duration

	// RunID goes into every Message-ID (default: from the clock and
	// randomness, so that runs against the same Levee never collide).
	RunID string
	// Seed drives message sizes and reader choices.
	Seed uint64

	// Progress receives the live progress line (nil: none). Live rewrites
	// one line with \r, for a terminal; otherwise a line is written every
	// ProgressEvery.
	Progress      io.Writer
	ProgressLive  bool
	ProgressEvery time.Duration

	// HTTPClient is used for the API (nil: one with sensible timeouts).
	HTTPClient *http.Client
}

// RetryPolicy is exponential backoff with jitter, as MTAs do for 4xx.
type RetryPolicy struct {
	// Initial is the wait before the first retry, doubled (Multiplier)
	// after each further refusal up to Max.
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
	// Jitter spreads each wait by ±this fraction so that deferred senders
	// do not come back in lockstep.
	Jitter float64
	// GiveUpAfter ends the retries of a message this long after its
	// arrival; it then counts as expired.
	GiveUpAfter time.Duration
}

// AuditConfig shapes the delivery audit.
type AuditConfig struct {
	// Disabled skips the audit even when API is set.
	Disabled bool
	// Timeout is how long after the load the audit waits for every
	// accepted message to be stored; those still missing then are lost.
	Timeout time.Duration
	// Poll is the pause between look-up rounds.
	Poll time.Duration
	// Settle is how long the audit waits after the last message was found
	// before a final pass that catches duplicates stored late.
	Settle time.Duration
	// LateAfter: a message stored more than this after its 250 is late.
	LateAfter time.Duration
	// Concurrency is the number of look-up requests in flight.
	Concurrency int
	// Unanswered is how long the audit goes on asking an API that answers
	// none of its look-ups before it gives up and fails the run.
	Unanswered time.Duration
}

// Defaults for the fields a zero Config leaves open.
const (
	DefaultFrom        = "loadtest@loadtest.levee.test"
	DefaultTo          = "loadtest{n}@example.com"
	DefaultMailboxes   = 50
	DefaultConnections = 20
	DefaultHelo        = "loadtest.levee.test"
)

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.From == "" {
		c.From = DefaultFrom
	}
	if c.To == "" {
		c.To = DefaultTo
	}
	if c.Mailboxes == 0 {
		c.Mailboxes = DefaultMailboxes
	}
	if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	if c.Helo == "" {
		c.Helo = DefaultHelo
	}
	if c.IdleProbe == 0 {
		c.IdleProbe = 5 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = 5 * time.Minute
	}
	c.Retry = c.Retry.WithDefaults()
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Minute
	}
	if c.ReaderThink == 0 {
		c.ReaderThink = 100 * time.Millisecond
	}
	c.Audit = c.Audit.WithDefaults()
	if c.Interval == 0 {
		c.Interval = autoInterval(c.Schedule)
	}
	if c.ScrapeEvery == 0 {
		c.ScrapeEvery = c.Interval
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = 10 * time.Second
	}
	if c.TLS == nil {
		c.TLS = &tls.Config{}
	}
	return c
}

// autoInterval gives a plot about 120 points, between 100ms and 10s:
// finer, and the rates of a few messages per interval are mostly noise.
func autoInterval(s Schedule) time.Duration {
	if s == nil || s.Duration() <= 0 {
		return time.Second
	}
	iv := s.Duration() / 120
	for _, step := range []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second} {
		if iv <= step {
			return step
		}
	}
	return 10 * time.Second
}

// WithDefaults fills the zero fields: retries after 1s, 2s, 4s ... up to
// 5 minutes apart, given up after an hour. Real MTAs retry for days; a load
// test needs an answer today, and a tiny Initial makes tests fast.
func (r RetryPolicy) WithDefaults() RetryPolicy {
	if r.Initial == 0 {
		r.Initial = time.Second
	}
	if r.Max == 0 {
		r.Max = max(5*time.Minute, r.Initial)
	}
	if r.Multiplier == 0 {
		r.Multiplier = 2
	}
	if r.Jitter == 0 {
		r.Jitter = 0.2
	}
	if r.GiveUpAfter == 0 {
		r.GiveUpAfter = time.Hour
	}
	return r
}

// WithDefaults fills the zero fields.
func (a AuditConfig) WithDefaults() AuditConfig {
	if a.Timeout == 0 {
		a.Timeout = 5 * time.Minute
	}
	if a.Poll == 0 {
		a.Poll = 500 * time.Millisecond
	}
	if a.Settle == 0 {
		a.Settle = time.Second
	}
	if a.LateAfter == 0 {
		a.LateAfter = time.Minute
	}
	if a.Concurrency == 0 {
		a.Concurrency = 4
	}
	if a.Unanswered == 0 {
		a.Unanswered = 30 * time.Second
	}
	return a
}

// Validate reports the first invalid field by its flag.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Target); err != nil {
		return fmt.Errorf("--target: want host:port, got %q", c.Target)
	}
	if c.API != "" {
		u, err := url.Parse(c.API)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--api: want an http:// or https:// base URL, got %q", c.API)
		}
	}
	if c.Schedule == nil {
		return errors.New("loadtest: no schedule: give --rate, --ramp, --baseline with --surge, or --trace")
	}
	if err := checkAddress(c.From); err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	if err := checkAddress(strings.ReplaceAll(c.To, "{n}", "0")); err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	switch {
	case c.Mailboxes < 1:
		return fmt.Errorf("--mailboxes: must be > 0, got %d", c.Mailboxes)
	case c.Connections < 1:
		return fmt.Errorf("--connections: must be > 0, got %d", c.Connections)
	case c.MessagesPerConnection < 0:
		return fmt.Errorf("--messages-per-connection: must be >= 0, got %d", c.MessagesPerConnection)
	case c.IdleProbe < 0, c.DialTimeout < 0, c.CommandTimeout <= 0:
		return errors.New("--command-timeout: timeouts must be > 0")
	case c.Retry.Initial < 0 || c.Retry.Max < c.Retry.Initial:
		return fmt.Errorf("--retry-initial, --retry-max: want 0 < initial (%s) <= max (%s)", c.Retry.Initial, c.Retry.Max)
	case c.Retry.Multiplier < 1:
		return fmt.Errorf("--retry-multiplier: must be >= 1, got %v", c.Retry.Multiplier)
	case c.Retry.Jitter < 0 || c.Retry.Jitter >= 1:
		return fmt.Errorf("--retry-jitter: must be in [0, 1), got %v", c.Retry.Jitter)
	case c.Retry.GiveUpAfter < 0:
		return fmt.Errorf("--retry-for: must be > 0, got %s", c.Retry.GiveUpAfter)
	case c.DrainTimeout < 0:
		return fmt.Errorf("--drain-timeout: must be >= 0, got %s", c.DrainTimeout)
	case c.Readers < 0:
		return fmt.Errorf("--readers: must be >= 0, got %d", c.Readers)
	case c.Readers > 0 && c.API == "":
		return errors.New("--readers: the reader probe needs --api")
	case c.ReaderThink < 0:
		return fmt.Errorf("--reader-think: must be >= 0, got %s", c.ReaderThink)
	case c.Audit.Timeout < 0 || c.Audit.Poll <= 0 || c.Audit.Settle < 0 || c.Audit.LateAfter <= 0 || c.Audit.Unanswered < 0:
		return errors.New("--audit-timeout, --late-after: must be > 0")
	case c.Audit.Concurrency < 1:
		return fmt.Errorf("audit concurrency: must be > 0, got %d", c.Audit.Concurrency)
	case c.Interval <= 0:
		return fmt.Errorf("--interval: must be > 0, got %s", c.Interval)
	case c.ScrapeEvery <= 0:
		return fmt.Errorf("--scrape-every: must be > 0, got %s", c.ScrapeEvery)
	case strings.ContainsAny(c.Helo, " \r\n<>"):
		return fmt.Errorf("--helo: %q is not a host name", c.Helo)
	case strings.ContainsAny(c.RunID, " \r\n<>@"):
		return fmt.Errorf("run id: %q must not contain spaces, <, > or @", c.RunID)
	}
	return nil
}

// checkAddress keeps an address from breaking the SMTP command it goes in.
func checkAddress(a string) error {
	local, domain, ok := strings.Cut(a, "@")
	if !ok || local == "" || domain == "" || strings.ContainsAny(a, " \t\r\n<>") {
		return fmt.Errorf("%q is not an address like user@example.com", a)
	}
	return nil
}
