package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/levee-mail/levee/ingest"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/store/postgres"
	"github.com/levee-mail/levee/web"
	"github.com/levee-mail/levee/worker"
)

// Config is everything `levee serve` runs with. Components own their
// defaults and validation; this struct only gathers them.
type Config struct {
	DataDir         string
	Store           string // SQLite path (default <data_dir>/levee.db)
	LogLevel        string
	ShutdownTimeout time.Duration

	Queue  queue.Config
	SMTP   ingest.Config
	HTTP   web.Config
	Worker worker.Config
}

func defaultConfig() Config {
	c := Config{
		DataDir:         "./levee-data",
		LogLevel:        "info",
		ShutdownTimeout: 30 * time.Second,
		// example.com and localhost let a newcomer deliver test mail at once;
		// a deployment names its own domains.
		SMTP: ingest.Config{Addr: "127.0.0.1:2525", Domains: []string{"example.com", "localhost"}},
		HTTP: web.Config{Addr: "127.0.0.1:8025"},
		// Autoscaling on: the drain follows the backlog and backs off when
		// the store's latency rises, which is the point of the levee.
		Worker: worker.Config{Concurrency: 4, Autoscale: worker.AutoscaleConfig{Enabled: true, Min: 1}},
	}
	c.Queue = queue.DefaultConfig() // SyncAlways on
	c.SMTP = c.SMTP.WithDefaults()
	c.HTTP = c.HTTP.WithDefaults()
	c.Worker = c.Worker.WithDefaults()
	return c
}

// finish derives dependent values and validates every component.
func (c *Config) finish() error {
	if c.DataDir == "" {
		return fmt.Errorf("data_dir: must not be empty")
	}
	if c.Queue.DataDir == "" {
		c.Queue.DataDir = filepath.Join(c.DataDir, "jetstream")
	}
	if c.Store == "" {
		c.Store = filepath.Join(c.DataDir, "levee.db")
	}
	if postgres.IsURL(c.Store) {
		if err := (postgres.Config{URL: c.Store}).WithDefaults().Validate(); err != nil {
			return err
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown_timeout: must be > 0")
	}
	// One key decides how often a message may be tried: the worker enforces it.
	c.Worker.MaxDeliver = c.Queue.MaxDeliver
	c.Worker.ProgressEvery = c.Queue.AckWait / 3
	// The queue must take the largest message SMTP accepts, plus its headers.
	if int64(c.Queue.MaxMsgSize) < c.SMTP.MaxMessageBytes+queue.SizeMargin {
		return fmt.Errorf("queue.max_msg_size: %d is smaller than smtp.max_message_bytes (%d) plus 64KiB of headers", c.Queue.MaxMsgSize, c.SMTP.MaxMessageBytes)
	}
	c.Queue = c.Queue.WithDefaults()
	c.SMTP = c.SMTP.WithDefaults()
	c.HTTP = c.HTTP.WithDefaults()
	c.Worker = c.Worker.WithDefaults()
	for _, v := range []interface{ Validate() error }{c.Queue, c.SMTP, c.HTTP, c.Worker} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func str(p func(c *Config) *string) (func(*Config) string, func(*Config, string) error) {
	return func(c *Config) string { return *p(c) }, func(c *Config, v string) error { *p(c) = v; return nil }
}

func dur(p func(c *Config) *time.Duration) (func(*Config) string, func(*Config, string) error) {
	return func(c *Config) string { return p(c).String() }, func(c *Config, v string) error {
		d, err := parseDuration(v)
		*p(c) = d
		return err
	}
}

func integer[T ~int | ~int32 | ~int64](p func(c *Config) *T) (func(*Config) string, func(*Config, string) error) {
	return func(c *Config) string { return strconv.FormatInt(int64(*p(c)), 10) }, func(c *Config, v string) error {
		n, err := parseInt(v)
		*p(c) = T(n)
		return err
	}
}

func size[T ~int32 | ~int64](p func(c *Config) *T) (func(*Config) string, func(*Config, string) error) {
	return func(c *Config) string { return formatBytes(int64(*p(c))) }, func(c *Config, v string) error {
		n, err := parseBytes(v)
		*p(c) = T(n)
		return err
	}
}

func boolean(p func(c *Config) *bool) (func(*Config) string, func(*Config, string) error) {
	return func(c *Config) string { return strconv.FormatBool(*p(c)) }, func(c *Config, v string) error {
		b, err := parseBool(v)
		*p(c) = b
		return err
	}
}

func ratio(p func(c *Config) *float64) (func(*Config) string, func(*Config, string) error) {
	return func(c *Config) string { return strconv.FormatFloat(*p(c), 'g', -1, 64) }, func(c *Config, v string) error {
		f, err := parseFloat(v)
		*p(c) = f
		return err
	}
}

func list(p func(c *Config) *[]string) (func(*Config) string, func(*Config, string) error) {
	return func(c *Config) string { return strings.Join(*p(c), ",") }, func(c *Config, v string) error { *p(c) = parseList(v); return nil }
}

func opt(key, help string, gs func() (func(*Config) string, func(*Config, string) error)) option {
	g, s := gs()
	return option{key: key, help: help, get: g, set: s}
}

// serveOptions is the single table of every configuration key.
func serveOptions() []option {
	o := []option{
		opt("data_dir", "directory for the embedded JetStream store and the SQLite database", func() (func(*Config) string, func(*Config, string) error) {
			return str(func(c *Config) *string { return &c.DataDir })
		}),
		opt("store", "mailbox store: a SQLite file path (default <data_dir>/levee.db) or a postgres:// URL", func() (func(*Config) string, func(*Config, string) error) {
			return str(func(c *Config) *string { return &c.Store })
		}),
		opt("log_level", "log level: debug, info, warn, error", func() (func(*Config) string, func(*Config, string) error) {
			return str(func(c *Config) *string { return &c.LogLevel })
		}),
		opt("shutdown_timeout", "how long SIGTERM waits for in-flight sessions and deliveries", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.ShutdownTimeout })
		}),

		opt("smtp.addr", "SMTP listen address", func() (func(*Config) string, func(*Config, string) error) {
			return str(func(c *Config) *string { return &c.SMTP.Addr })
		}),
		opt("smtp.hostname", "name in the SMTP banner and the Received header", func() (func(*Config) string, func(*Config, string) error) {
			return str(func(c *Config) *string { return &c.SMTP.Hostname })
		}),
		opt("smtp.domains", "recipient domains to accept, comma-separated (others: 550 5.7.1)", func() (func(*Config) string, func(*Config, string) error) {
			return list(func(c *Config) *[]string { return &c.SMTP.Domains })
		}),
		opt("smtp.accept_all_domains", "accept mail for every recipient domain (explicit opt-in)", func() (func(*Config) string, func(*Config, string) error) {
			return boolean(func(c *Config) *bool { return &c.SMTP.AcceptAllDomains })
		}),
		opt("smtp.max_message_bytes", "largest message accepted, advertised as SIZE (larger: 552 5.3.4)", func() (func(*Config) string, func(*Config, string) error) {
			return size(func(c *Config) *int64 { return &c.SMTP.MaxMessageBytes })
		}),
		opt("smtp.max_recipients", "recipients per message (more: 452 4.5.3)", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.SMTP.MaxRecipients })
		}),
		opt("smtp.read_timeout", "idle read deadline, renewed by every read including during DATA", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.SMTP.ReadTimeout })
		}),
		opt("smtp.write_timeout", "write deadline per reply", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.SMTP.WriteTimeout })
		}),
		opt("smtp.publish_timeout", "how long DATA waits for the queue's acknowledgement (then 451 4.3.0)", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.SMTP.PublishTimeout })
		}),
		opt("smtp.max_connections", "concurrent SMTP connections (more: 421 4.7.0)", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.SMTP.MaxConnections })
		}),
		opt("smtp.max_connections_per_ip", "concurrent SMTP connections per client IP (more: 421 4.7.0)", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.SMTP.MaxConnectionsPerIP })
		}),
		opt("smtp.high_watermark", "queue fill ratio at which MAIL FROM is deferred with 452 4.3.1", func() (func(*Config) string, func(*Config, string) error) {
			return ratio(func(c *Config) *float64 { return &c.SMTP.HighWatermark })
		}),
		opt("smtp.low_watermark", "queue fill ratio below which MAIL FROM is accepted again", func() (func(*Config) string, func(*Config, string) error) {
			return ratio(func(c *Config) *float64 { return &c.SMTP.LowWatermark })
		}),

		opt("http.addr", "HTTP listen address (API, /metrics, health)", func() (func(*Config) string, func(*Config, string) error) {
			return str(func(c *Config) *string { return &c.HTTP.Addr })
		}),

		opt("http.admin_token", "bearer token that changes over the ops API need (queue limits, dead-letter replay and purge); empty turns them off. Prefer the environment variable: flags show in ps", func() (func(*Config) string, func(*Config, string) error) {
			return str(func(c *Config) *string { return &c.HTTP.AdminToken })
		}),

		opt("queue.nats_url", "external JetStream URL; empty runs the embedded server", func() (func(*Config) string, func(*Config, string) error) {
			return str(func(c *Config) *string { return &c.Queue.URL })
		}),
		opt("queue.port", "embedded JetStream's client port on 127.0.0.1 (-1: a random free port)", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.Queue.Port })
		}),
		opt("queue.sync_always", "embedded server fsyncs every write before acknowledging (false: faster, may lose the last seconds on power loss)", func() (func(*Config) string, func(*Config, string) error) {
			return boolean(func(c *Config) *bool { return &c.Queue.SyncAlways })
		}),
		opt("queue.max_msgs", "stream limit: queued messages (then 452 4.3.1)", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int64 { return &c.Queue.MaxMsgs })
		}),
		opt("queue.max_bytes", "stream limit: queued bytes (then 452 4.3.1)", func() (func(*Config) string, func(*Config, string) error) {
			return size(func(c *Config) *int64 { return &c.Queue.MaxBytes })
		}),
		opt("queue.per_domain_max_msgs", "queued messages per recipient domain (of the first recipient), so one tenant's flood defers only its own mail; 0: no cap", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int64 { return &c.Queue.PerDomainMaxMsgs })
		}),
		opt("queue.max_age", "stream limit: age after which an undelivered message expires", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.Queue.MaxAge })
		}),
		opt("queue.max_msg_size", "stream limit: largest queued message including headers", func() (func(*Config) string, func(*Config, string) error) {
			return size(func(c *Config) *int32 { return &c.Queue.MaxMsgSize })
		}),
		opt("queue.duplicate_window", "window in which JetStream drops a re-sent message id", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.Queue.DuplicateWindow })
		}),
		opt("queue.replicas", "stream replicas (1 embedded; 3 on a JetStream cluster)", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.Queue.Replicas })
		}),
		opt("queue.ack_wait", "how long a worker may hold a message before it is redelivered", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.Queue.AckWait })
		}),
		opt("queue.max_deliver", "deliveries before a failing message is dead-lettered", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.Queue.MaxDeliver })
		}),
		opt("queue.max_ack_pending", "messages handed to workers and not yet acknowledged", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.Queue.MaxAckPending })
		}),
		opt("queue.max_batch", "messages per group commit (atomic batch) on publish; 1 disables batching", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.Queue.MaxBatch })
		}),

		opt("worker.concurrency", "concurrent delivery loops; 0 pauses draining", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.Worker.Concurrency })
		}),
		opt("worker.batch_size", "messages fetched and stored per transaction", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.Worker.BatchSize })
		}),
		opt("worker.detect_charset", "guess text parts' charsets from their bytes when storing (about 7x the parse CPU); off: trust the declared charset", func() (func(*Config) string, func(*Config, string) error) {
			return boolean(func(c *Config) *bool { return &c.Worker.ParseLimits.DetectCharset })
		}),
		opt("worker.max_writes_per_second", "ceiling on messages stored per second by this process; 0: none", func() (func(*Config) string, func(*Config, string) error) {
			return ratio(func(c *Config) *float64 { return &c.Worker.MaxWritesPerSecond })
		}),
		opt("worker.autoscale.enabled", "move concurrency with the backlog, capped by the store's write latency (worker.concurrency is the start)", func() (func(*Config) string, func(*Config, string) error) {
			return boolean(func(c *Config) *bool { return &c.Worker.Autoscale.Enabled })
		}),
		opt("worker.autoscale.min", "fewest delivery loops the autoscaler keeps", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.Worker.Autoscale.Min })
		}),
		opt("worker.autoscale.max", "most delivery loops the autoscaler runs", func() (func(*Config) string, func(*Config, string) error) {
			return integer(func(c *Config) *int { return &c.Worker.Autoscale.Max })
		}),
		opt("worker.autoscale.target_drain", "drain a backlog within this time (if the store's budget allows)", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.Worker.Autoscale.TargetDrain })
		}),
		opt("worker.autoscale.latency_budget", "store write p95 above which the concurrency limit drops multiplicatively", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.Worker.Autoscale.LatencyBudget })
		}),
		opt("worker.autoscale.latency_window", "window of the store write p95", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.Worker.Autoscale.LatencyWindow })
		}),
		opt("worker.autoscale.interval", "how often the autoscaler decides", func() (func(*Config) string, func(*Config, string) error) {
			return dur(func(c *Config) *time.Duration { return &c.Worker.Autoscale.Interval })
		}),
	}
	// The flags the README promises by their short names.
	short := map[string]string{
		"smtp.addr": "smtp-addr", "http.addr": "http-addr", "data_dir": "data-dir", "queue.nats_url": "nats-url",
		"store": "store", "smtp.domains": "domains", "queue.max_msgs": "queue-max-msgs",
		"queue.max_bytes": "queue-max-bytes", "worker.concurrency": "workers",
	}
	for i := range o {
		o[i].flagName = short[o[i].key]
	}
	return o
}
