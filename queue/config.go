package queue

import (
	"fmt"
	"strings"
	"time"
)

// Defaults. MaxMsgSize must exceed the SMTP SIZE that ingest advertises
// (10 MiB) plus the headers Levee adds, so a message the receiver accepted is
// never refused by the stream.
const (
	DefaultStream          = "LEVEE_MAIL"
	DefaultSubjectPrefix   = "levee.mail"
	DefaultMaxMsgs         = 1_000_000
	DefaultMaxBytes        = 1 << 30
	DefaultMaxAge          = 7 * 24 * time.Hour
	DefaultMaxMsgSize      = 16<<20 + 64<<10
	DefaultDuplicateWindow = 10 * time.Minute
	DefaultDurable         = "levee-workers"
	DefaultAckWait         = 30 * time.Second
	DefaultMaxDeliver      = 8
	DefaultMaxAckPending   = 1000
	DefaultDeadStream      = "LEVEE_DEAD"
	DefaultDeadPrefix      = "levee.dead"
	DefaultDeadMaxAge      = 30 * 24 * time.Hour
	DefaultPublishTimeout  = 10 * time.Second
	DefaultMaxBatch        = 50
	DefaultPartitions      = 1 // see Config.Partitions
	maxPartitions          = 64
	DefaultMinBatch        = 16
	DefaultHost            = "127.0.0.1"

	// SizeMargin is how much larger than a receiver's SMTP SIZE the
	// stream's max_msg_size must be: the queued message carries Levee's
	// Received header and NATS headers on top of what the sender sent.
	SizeMargin = 64 << 10

	// headerRoom is what the embedded server's max_payload allows beyond
	// MaxMsgSize: the NATS payload limit counts headers and body together,
	// and a dead-lettered copy carries a few more headers than the original.
	headerRoom = 64 << 10
	// maxPayloadLimit is the server's max_pending default (64 MiB), which
	// max_payload may not exceed.
	maxPayloadLimit = 64 << 20
	// maxAtomicBatch is the server's default cap on one atomic batch.
	maxAtomicBatch = 1000
)

// DefaultBackoff is the extra delay before each redelivery once a delivery's
// ack wait has run out: 1s, 5s, 30s, then every 2m.
var DefaultBackoff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute}

// Config configures the JetStream queue. Keys in error messages are the YAML
// keys (queue.max_msgs ...).
type Config struct {
	// URL of an external JetStream (nats://...); "" starts an embedded server.
	URL string `config:"nats_url" flag:"nats-url" help:"external JetStream URL (nats://host:4222, tls://... for TLS, several comma-separated; a user:password in it is never logged); empty runs the embedded server"`
	// Security authenticates Levee to the external server and checks the
	// server's certificate (queue.nats_creds, queue.nats_tls_ca ...).
	Security Security `config:",inline"`
	// DataDir is the embedded server's JetStream store directory. Required for
	// the embedded server; it has no default here because the caller derives
	// it from its own data directory (e.g. ./levee-data/jetstream).
	DataDir string
	// Host and Port the embedded server listens on: 127.0.0.1 and a random
	// port by default (0 and -1 both mean random; never the well-known 4222).
	Host string
	Port int `config:"port" help:"embedded JetStream's client port on 127.0.0.1 (-1: a random free port)"`
	// SyncAlways makes the embedded server fsync every write before it
	// acknowledges it. The zero value is false, so callers start from
	// DefaultConfig (true). With false the server syncs every 2 minutes:
	// several times the throughput of single publishes, but a power failure
	// can lose mail that was already answered 250. Under many concurrent
	// publishes, group commit (MaxBatch) recovers much of the throughput
	// without that risk.
	SyncAlways bool `config:"sync_always" help:"embedded server fsyncs every write before acknowledging (false: faster, may lose the last seconds on power loss)"`
	// GroupSync (with SyncAlways, on the embedded server, on Linux) makes
	// the writes durable in groups: the server runs without its fsync per
	// write, and one syncfs after the PubAcks of every publish waiting makes
	// them durable before their 250 (see groupSync). Off: the server's own
	// fsync per message. Like SyncAlways, callers start from DefaultConfig.
	GroupSync bool `config:"group_sync" help:"with sync_always on the embedded server (Linux): one syncfs makes every concurrent publish durable before its 250, instead of an fsync per message"`

	// Stream receives mail on "<SubjectPrefix>.<recipient domain>"; with
	// more than one partition, its partitions do (see Partition).
	Stream        string
	SubjectPrefix string
	// Partitions is how many streams the mail queue is split into (see
	// Partition): each has its own fsync lane, and its own leader in a
	// cluster. The limits below are totals, divided among them.
	//
	// One by default: on the embedded server group sync makes the fsync
	// lanes moot (one syncfs serves every stream), and each partition
	// costs its own block cache (up to 8 MB, grown in steps that are
	// copied) and write loop. Measured with a new connection per message
	// (issue 10, docs/design.md): 1 partition took 8-20% less CPU a
	// message than 4 and peaked at 88 MB RSS against 160-200 MB; the
	// accept rate was the same within the noise. Partitions pay on a
	// cluster whose single stream leader is the limit.
	Partitions int `config:"partitions" help:"streams the mail queue is split into, each with its own fsync lane (and leader in a cluster); the limits are totals over them; 1 is a single stream named queue.stream"`

	// Stream limits. At any of them the stream refuses new mail (DiscardNew)
	// and senders get a 4xx, instead of old mail being dropped silently.
	MaxMsgs  int64 `config:"max_msgs" help:"stream limit: queued messages (then 452 4.3.1)"`
	MaxBytes int64 `config:"max_bytes" unit:"bytes" help:"stream limit: queued bytes (then 452 4.3.1)"`
	// PerDomainMaxMsgs caps the queued messages of one recipient domain
	// (one subject), so that one tenant's flood defers only its own mail
	// (discard-new per subject); 0 means no per-domain cap.
	PerDomainMaxMsgs int64         `config:"per_domain_max_msgs" help:"queued messages per recipient domain (of the first recipient), so one tenant's flood defers only its own mail; 0: no cap"`
	MaxAge           time.Duration `config:"max_age" help:"stream limit: age after which an undelivered message expires"`
	MaxMsgSize       int32         `config:"max_msg_size" unit:"bytes" help:"stream limit: largest queued message including headers"`
	DuplicateWindow  time.Duration `config:"duplicate_window" help:"window in which JetStream drops a re-sent message id"`
	Replicas         int           `config:"replicas" help:"stream replicas (1 embedded; 3 on a JetStream cluster)"`

	// Durable is the workers' pull consumer.
	Durable string
	// AckWait is how long a worker may hold a delivery before it counts as
	// failed (a worker can extend it with Delivery.Hold).
	AckWait time.Duration `config:"ack_wait" help:"how long a worker may hold a message before it is redelivered"`
	// MaxDeliver is the most deliveries a message gets: each Delivery says
	// it, and the worker gives the message up to the dead letters there. It
	// is not given to the server (whose MaxDeliver stays unlimited): see
	// consumerConfig.
	MaxDeliver int `config:"max_deliver" help:"deliveries before a failing message is dead-lettered"`
	// Backoff is the extra delay before each redelivery after AckWait ran
	// out; the last value repeats.
	Backoff       []time.Duration
	MaxAckPending int `config:"max_ack_pending" help:"messages handed to workers and not yet acknowledged"`

	// DeadStream keeps dead-lettered messages on "<DeadSubjectPrefix>.<domain>"
	// for DeadMaxAge.
	DeadStream        string
	DeadSubjectPrefix string
	DeadMaxAge        time.Duration

	// PublishTimeout bounds one Publish from enqueue to PubAck.
	PublishTimeout time.Duration
	// MaxBatch caps one group commit (an atomic batch); 1 disables batching.
	// Batching is used with an external server, or with the embedded one
	// when SyncAlways: without per-write fsyncs to share, a single-node
	// atomic batch costs more than the publishes it groups.
	MaxBatch int `config:"max_batch" help:"messages per group commit (atomic batch) on publish; 1 disables batching"`
	// MinBatch is the smallest group published as an atomic batch; smaller
	// groups go as concurrent single publishes. On a single node with file
	// storage the server stages every atomic batch in a file store of its
	// own (created, fsynced and deleted per batch), a fixed cost of several
	// fsyncs. Measured on nats-server 2.15.3 with four partitions
	// (BenchmarkPublish, BENCH_MIN_BATCH): 20 publishers go ~15% faster
	// with no batches at all than with batches from 8 up, 200 publishers
	// twice as fast with them; from 16 up a batch pays. Above MaxBatch it
	// turns batching off.
	MinBatch int
}

// DefaultConfig returns the defaults, including SyncAlways and GroupSync
// true, which WithDefaults cannot set because false is a meaningful choice.
func DefaultConfig() Config {
	return Config{SyncAlways: true, GroupSync: true}.WithDefaults()
}

// WithDefaults fills zero fields with the defaults (except DataDir, URL and
// SyncAlways, whose zero values are meaningful or caller-derived).
func (c Config) WithDefaults() Config {
	if c.URL == "" && c.Host == "" {
		c.Host = DefaultHost
	}
	if c.Port == 0 {
		c.Port = -1
	}
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.Stream, DefaultStream)
	set(&c.SubjectPrefix, DefaultSubjectPrefix)
	set(&c.Durable, DefaultDurable)
	set(&c.DeadStream, DefaultDeadStream)
	set(&c.DeadSubjectPrefix, DefaultDeadPrefix)
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.MaxMsgs == 0 {
		c.MaxMsgs = DefaultMaxMsgs
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = DefaultMaxMsgSize
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.Backoff == nil {
		c.Backoff = append([]time.Duration(nil), DefaultBackoff...)
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.DeadMaxAge == 0 {
		c.DeadMaxAge = DefaultDeadMaxAge
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MinBatch == 0 {
		c.MinBatch = DefaultMinBatch
	}
	return c
}

// Validate reports the first invalid field, named by its config key.
func (c Config) Validate() error {
	switch {
	case c.URL != "" && !strings.Contains(c.URL, "://"):
		return fmt.Errorf("queue.nats_url: must be a URL like nats://host:4222, got %q", c.URL)
	case c.URL == "" && c.DataDir == "":
		return fmt.Errorf("queue.data_dir: must be set for the embedded server")
	case c.Port < -1 || c.Port > 65535:
		return fmt.Errorf("queue.port: must be -1 (random) or 0..65535, got %d", c.Port)
	case !validName(c.Stream):
		return fmt.Errorf("queue.stream: %q is not a valid stream name", c.Stream)
	case !validPrefix(c.SubjectPrefix):
		return fmt.Errorf("queue.subject_prefix: %q is not a valid subject prefix (tokens of letters, digits, '-', '_')", c.SubjectPrefix)
	case c.MaxMsgs < 1:
		return fmt.Errorf("queue.max_msgs: must be > 0, got %d", c.MaxMsgs)
	case c.PerDomainMaxMsgs < 0:
		return fmt.Errorf("queue.per_domain_max_msgs: must be >= 0 (0: no per-domain cap), got %d", c.PerDomainMaxMsgs)
	case c.MaxBytes < 1:
		return fmt.Errorf("queue.max_bytes: must be > 0, got %d", c.MaxBytes)
	case c.MaxAge <= 0:
		return fmt.Errorf("queue.max_age: must be > 0, got %s", c.MaxAge)
	case c.MaxMsgSize < 1024 || int64(c.MaxMsgSize)+headerRoom > maxPayloadLimit:
		return fmt.Errorf("queue.max_msg_size: must be between 1KiB and %d, got %d", maxPayloadLimit-headerRoom, c.MaxMsgSize)
	case int64(c.MaxMsgSize) > Share(c.MaxBytes, c.Partitions-1, max(c.Partitions, 1)):
		// The smallest partition's share is what one message must fit in.
		return fmt.Errorf("queue.max_msg_size: must not exceed each partition's share of queue.max_bytes (%d / %d partitions = %d), got %d",
			c.MaxBytes, c.Partitions, Share(c.MaxBytes, c.Partitions-1, max(c.Partitions, 1)), c.MaxMsgSize)
	case c.DuplicateWindow <= 0 || c.DuplicateWindow > c.MaxAge:
		return fmt.Errorf("queue.duplicate_window: must be > 0 and <= queue.max_age (%s), got %s", c.MaxAge, c.DuplicateWindow)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("queue.replicas: must be between 1 and 5, got %d", c.Replicas)
	case c.URL == "" && c.Replicas != 1:
		return fmt.Errorf("queue.replicas: the embedded server is a single node, so it must be 1 (got %d); use queue.nats_url for a cluster", c.Replicas)
	case !validName(c.Durable):
		return fmt.Errorf("queue.durable: %q is not a valid consumer name", c.Durable)
	case c.AckWait < 100*time.Millisecond:
		return fmt.Errorf("queue.ack_wait: must be >= 100ms, got %s", c.AckWait)
	case c.MaxDeliver < 1:
		return fmt.Errorf("queue.max_deliver: must be >= 1, got %d", c.MaxDeliver)
	case c.MaxAckPending < 1:
		return fmt.Errorf("queue.max_ack_pending: must be >= 1, got %d", c.MaxAckPending)
	case !validName(c.DeadStream) || c.DeadStream == c.Stream:
		return fmt.Errorf("queue.dead_stream: %q is not a valid stream name distinct from queue.stream", c.DeadStream)
	case c.Partitions < 1 || c.Partitions > maxPartitions:
		return fmt.Errorf("queue.partitions: must be between 1 and %d, got %d", maxPartitions, c.Partitions)
	case c.MaxMsgs < int64(c.Partitions):
		return fmt.Errorf("queue.max_msgs: must be at least queue.partitions (%d): each partition holds its share, got %d", c.Partitions, c.MaxMsgs)
	case c.PerDomainMaxMsgs > 0 && c.PerDomainMaxMsgs < int64(c.Partitions):
		return fmt.Errorf("queue.per_domain_max_msgs: must be 0 (no cap) or at least queue.partitions (%d): each partition holds its share, got %d", c.Partitions, c.PerDomainMaxMsgs)
	case !validPrefix(c.DeadSubjectPrefix) || overlaps(c.DeadSubjectPrefix, c.SubjectPrefix) || strings.HasPrefix(c.DeadSubjectPrefix, c.SubjectPrefix+"-"):
		return fmt.Errorf("queue.dead_subject_prefix: %q is not a valid subject prefix disjoint from queue.subject_prefix and its partitions'", c.DeadSubjectPrefix)
	case c.DeadMaxAge <= 0:
		return fmt.Errorf("queue.dead_max_age: must be > 0, got %s", c.DeadMaxAge)
	case c.PublishTimeout <= 0:
		return fmt.Errorf("queue.publish_timeout: must be > 0, got %s", c.PublishTimeout)
	case c.MaxBatch < 1 || c.MaxBatch > maxAtomicBatch:
		return fmt.Errorf("queue.max_batch: must be between 1 and %d, got %d", maxAtomicBatch, c.MaxBatch)
	case c.MinBatch < 1 || c.MinBatch > maxAtomicBatch:
		return fmt.Errorf("queue.min_batch: must be between 1 and %d, got %d", maxAtomicBatch, c.MinBatch)
	}
	if err := c.Security.validate(c.URL); err != nil {
		return err
	}
	for i, b := range c.Backoff {
		if b <= 0 {
			return fmt.Errorf("queue.backoff: value %d must be > 0, got %s", i, b)
		}
	}
	return nil
}

// validName follows the JetStream rules for stream and consumer names.
func validName(s string) bool {
	return s != "" && len(s) <= 255 && !strings.ContainsAny(s, " \t\r\n.*>/\\")
}

func validPrefix(p string) bool {
	if p == "" || len(p) > 200 {
		return false
	}
	for tok := range strings.SplitSeq(p, ".") {
		if tok == "" {
			return false
		}
		for _, r := range tok {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// overlaps reports whether "<a>.>" and "<b>.>" could match one subject.
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
}
