package worker

import (
	"fmt"
	"time"

	"github.com/levee-mail/levee/mail"
)

// Config tunes the delivery loops.
type Config struct {
	// Concurrency is the number of delivery loops; 0 pauses draining.
	Concurrency int `config:"concurrency" flag:"workers" help:"concurrent delivery loops; 0 pauses draining"`
	// BatchSize is how many messages one loop fetches and stores per transaction.
	BatchSize int `config:"batch_size" help:"messages fetched and stored per transaction"`
	// BatchMaxBytes bounds a batch's bytes: with large messages a loop
	// fetches fewer (at least one), sized by the largest message of the
	// last batch fetched, so that memory does not grow with batch_size x
	// message size (see batchSizer).
	BatchMaxBytes int64 `config:"batch_max_bytes" unit:"bytes" help:"bytes of mail one loop fetches at once: fewer messages per batch when they are large (at least one)"`
	// FetchWait bounds how long one fetch waits for messages to arrive.
	FetchWait time.Duration
	// RetryDelay is the first retry's delay; it doubles with each delivery,
	// up to MaxRetryDelay. (How many deliveries a message gets is the
	// queue's queue.max_deliver: each Delivery says its attempt and the
	// last.)
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// ProgressEvery is how often a batch held through a store outage is
	// reported held to the queue (Delivery.Hold); keep it well under the
	// consumer's ack wait (a third of it is the usual choice).
	ProgressEvery time.Duration
	// StoreTimeout bounds one store write.
	StoreTimeout time.Duration
	// ParseLimits bound the MIME parser per message.
	ParseLimits mail.ParseLimits `config:",inline"`
	// MaxWritesPerSecond caps the messages all loops together take for
	// store writes per second, whatever the concurrency; 0 means no cap.
	MaxWritesPerSecond float64 `config:"max_writes_per_second" help:"ceiling on messages stored per second by this process; 0: none"`
	// Autoscale moves Concurrency with the backlog and the store's latency
	// (see Autoscaler).
	Autoscale AutoscaleConfig `config:"autoscale"`
	// IntakeFirst steps the loops back while the receiver on the same
	// machine has senders waiting (see IntakeFirstConfig and
	// Worker.PutIntakeFirst).
	IntakeFirst IntakeFirstConfig `config:"intake_first"`
}

// WithDefaults fills in the zero fields other than Concurrency (whose zero
// value means paused).
func (c Config) WithDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = 32
	}
	if c.BatchMaxBytes == 0 {
		c.BatchMaxBytes = 16 << 20
	}
	if c.FetchWait == 0 {
		c.FetchWait = time.Second
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Second
	}
	if c.MaxRetryDelay == 0 {
		c.MaxRetryDelay = 2 * time.Minute
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = 10 * time.Second
	}
	if c.StoreTimeout == 0 {
		c.StoreTimeout = 30 * time.Second
	}
	c.ParseLimits = c.ParseLimits.WithDefaults()
	c.Autoscale = c.Autoscale.WithDefaults()
	c.IntakeFirst = c.IntakeFirst.WithDefaults()
	return c
}

// Validate reports the first invalid field by its config key.
func (c Config) Validate() error {
	switch {
	case c.Concurrency < 0:
		return fmt.Errorf("worker.concurrency: must be >= 0, got %d", c.Concurrency)
	case c.BatchSize < 1 || c.BatchSize > 1000:
		return fmt.Errorf("worker.batch_size: must be between 1 and 1000, got %d", c.BatchSize)
	case c.BatchMaxBytes < 0:
		return fmt.Errorf("worker.batch_max_bytes: must be > 0, got %d", c.BatchMaxBytes)
	case c.FetchWait < 10*time.Millisecond:
		return fmt.Errorf("worker.fetch_wait: must be >= 10ms, got %s", c.FetchWait)
	case c.RetryDelay <= 0 || c.MaxRetryDelay < c.RetryDelay:
		return fmt.Errorf("worker.retry_delay: must be > 0 and <= worker.max_retry_delay")
	case c.ProgressEvery <= 0:
		return fmt.Errorf("worker.progress_every: must be > 0")
	case c.StoreTimeout <= 0:
		return fmt.Errorf("worker.store_timeout: must be > 0")
	case !(c.MaxWritesPerSecond >= 0):
		return fmt.Errorf("worker.max_writes_per_second: must be >= 0 (0: no cap), got %g", c.MaxWritesPerSecond)
	}
	if err := c.IntakeFirst.Validate(); err != nil {
		return err
	}
	if c.Autoscale.Enabled {
		return c.Autoscale.Validate()
	}
	return nil
}
