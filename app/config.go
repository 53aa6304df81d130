package app

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/levee-mail/levee/ingest"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/store/postgres"
	"github.com/levee-mail/levee/web"
	"github.com/levee-mail/levee/worker"
)

// Config is everything a Levee process runs with. Components own their
// keys (the config tags of their Config), defaults and validation; this
// struct gathers them under their sections and derives what one component
// needs from another (Finish).
type Config struct {
	DataDir         string        `config:"data_dir" help:"directory for the embedded JetStream store and the SQLite database"`
	Store           string        `config:"store" help:"mailbox store: a SQLite file path (default <data_dir>/levee.db) or a postgres:// URL"`
	LogLevel        string        `config:"log_level" help:"log level: debug, info, warn, error"`
	ShutdownTimeout time.Duration `config:"shutdown_timeout" help:"how long SIGTERM waits for in-flight sessions and deliveries"`
	// DataMinFree is the free-space floor under the embedded JetStream
	// store and the SQLite store (see diskFloor).
	DataMinFree int64 `config:"data_min_free" unit:"bytes" help:"free space the embedded JetStream's and the SQLite store's filesystems keep: below it MAIL FROM gets 452 4.3.1 until space is back (Postfix's queue_minfree); 0: off"`

	Queue  queue.Config  `config:"queue"`
	SMTP   ingest.Config `config:"smtp"`
	HTTP   web.Config    `config:"http"`
	Worker worker.Config `config:"worker"`
}

// DefaultConfig is what `levee serve` runs with when nothing is set.
func DefaultConfig() Config {
	c := Config{
		DataDir:         "./levee-data",
		LogLevel:        "info",
		ShutdownTimeout: 30 * time.Second,
		DataMinFree:     DefaultDataMinFree,
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

// Finish derives what one component needs from another (paths under
// DataDir, the worker's progress interval from the ack wait) and validates
// every component; Start calls it.
func (c *Config) Finish() error {
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
	} else if scheme, _, ok := strings.Cut(c.Store, "://"); ok {
		// Anything else with a scheme would become a SQLite file named
		// after the URL. Only the scheme is shown: the rest may hold a password.
		return fmt.Errorf("store: %q is not a store Levee can open: use a postgres:// or postgresql:// URL, or a SQLite file path", scheme+"://")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: must be debug, info, warn or error, got %q", c.LogLevel)
	}
	if c.DataMinFree < 0 {
		return fmt.Errorf("data_min_free: must be >= 0 (0: off), got %d", c.DataMinFree)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown_timeout: must be > 0")
	}
	// A batch held through a store outage must be reported held well within
	// the ack wait, or it would be handed to another worker.
	c.Worker.ProgressEvery = c.Queue.WithDefaults().AckWait / 3
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

// checkIntakeFirst: workers that step back for waiting senders in the same
// process must drain before the receiver starts deferring them at the
// watermark. Only a process with both roles steps back.
func (c *Config) checkIntakeFirst() error {
	if c.Worker.IntakeFirst.Above > 0 && c.Worker.IntakeFirst.MaxFill >= c.SMTP.LowWatermark {
		return fmt.Errorf("worker.intake_first.max_fill: must be below smtp.low_watermark (%g), got %g: lower it, or turn stepping back off with worker.intake_first.above -1", c.SMTP.LowWatermark, c.Worker.IntakeFirst.MaxFill)
	}
	return nil
}
