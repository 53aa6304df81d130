package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	neturl "net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/levee-mail/levee/queue/natsserver"
)

// maxSingles caps how many single publishes one flush sends at once when
// batching is off.
const maxSingles = 64

// Queue is Levee's JetStream: the stream mail is published to, its durable
// pull consumer, the dead-letter stream, and (by default) the embedded
// server they live on.
type Queue struct {
	cfg Config
	log *slog.Logger
	srv *natsserver.Server // nil with an external URL
	// groupSync makes the embedded server's writes durable before a
	// publish returns; nil without (see Config.GroupSync).
	groupSync *groupSync
	nc        *nats.Conn
	js        jetstream.JetStream
	metrics   *metrics
	// layout is the partitions mail is published to (Config.Layout).
	layout []Partition
	// parts are the mail streams the workers drain: the layout's, then any
	// other there is (see ensure). The monitor keeps it current (streams
	// of another layout appear and get deleted while Levee runs); read it
	// with mailStreams. A new slice replaces it, never changed in place.
	partsMu sync.Mutex
	parts   []Partition
	// batching: publishes are grouped into atomic batches. Off with
	// MaxBatch 1, on the embedded server without SyncAlways (see Open),
	// and when the server does not keep AllowAtomicPublish (older than
	// 2.12): every publish is then a single one. Each lane keeps its own
	// copy from Open on.
	batching bool
	// minBatch is the smallest group worth an atomic batch (see MinBatch).
	minBatch int
	// gather caps the requests one flush takes: MaxBatch, or maxSingles
	// when batching is off.
	gather int

	// Publisher: a lane per partition of the layout. Publish holds mu
	// (read) while it enqueues, so that Close, holding it for writing,
	// knows no send is in progress when it closes the lanes.
	mu          sync.RWMutex
	closed      bool
	closing     chan struct{}
	lanes       []*lane
	flushCtx    context.Context // cancelled to abort in-flight batches on a hard close
	flushCancel context.CancelFunc
	flushWG     sync.WaitGroup

	// Monitor.
	monCancel context.CancelFunc
	monWG     sync.WaitGroup
	kick      chan struct{}
	fill      atomicFloat
	oldest    atomic.Int64 // nanoseconds; see Oldest

	// The embedded server's store fault (see storefault.go): set and
	// cleared by the monitor, read by Publish; the restart schedule is the
	// monitor's alone.
	fault                atomic.Pointer[storeFaultError]
	unhealthySince       time.Time
	restartAt, restarted time.Time
	restartWait          time.Duration
	// drained is when the monitor first saw each stream of another layout
	// empty at its last sequence (see removeDrained); the monitor's alone.
	drained map[string]drainedSince

	// connCtx lives as long as the current connection to the server: it
	// is cancelled on disconnect, so that publishes waiting for a reply
	// that can no longer come fail at once instead of at their deadline.
	connMu     sync.Mutex
	connCtx    context.Context
	connCancel context.CancelFunc

	ncClosed  chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open connects to JetStream (starting the embedded server when cfg.URL is
// empty), creates the streams and the consumer or brings them in line with
// the config (see ensure), and starts the publisher and the status
// monitor. reg may be nil.
func Open(ctx context.Context, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Queue, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	q := &Queue{
		cfg:      cfg,
		log:      log,
		closing:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		ncClosed: make(chan struct{}),
		drained:  map[string]drainedSince{},
		// On one node with file storage every atomic batch costs a staging
		// store of its own, created, fsynced and deleted (~7ms here): worth
		// it only to share the fsyncs that SyncAlways demands. Without
		// them a single publish costs far less (see BenchmarkPublish).
		// Group sync shares the fsyncs without them.
		batching: cfg.MaxBatch > 1 && (cfg.URL != "" || cfg.SyncAlways && !cfg.groupSync()),
		minBatch: max(2, cfg.MinBatch),
	}
	q.connCtx, q.connCancel = context.WithCancel(context.Background())
	q.layout = cfg.Layout()
	q.gather = maxSingles
	if q.batching {
		q.gather = cfg.MaxBatch
	}
	if err := q.open(ctx, reg); err != nil {
		q.abandon()
		return nil, err
	}
	q.startBackground()
	log.Info("queue: open", "url", q.nc.ConnectedUrlRedacted(), "server_version", q.nc.ConnectedServerVersion(), "embedded", q.srv != nil, "stream", cfg.Stream,
		"partitions", len(q.layout), "old_streams_draining", len(q.mailStreams())-len(q.layout), "sync_always", cfg.SyncAlways, "group_sync", cfg.groupSync(), "max_batch", cfg.MaxBatch, "atomic_batches", q.batching)
	return q, nil
}

// open starts the embedded server (unless cfg.URL names one), connects,
// and sets up the streams, the consumer and the metrics.
func (q *Queue) open(ctx context.Context, reg prometheus.Registerer) error {
	cfg := q.cfg
	url := cfg.URL
	if url == "" {
		if !cfg.SyncAlways {
			q.log.Warn("queue: queue.sync_always is false: the embedded server syncs to disk every 2m, so a power failure can lose mail already answered 250")
		}
		srv, err := natsserver.Start(natsserver.Config{
			DataDir:    cfg.DataDir,
			Host:       cfg.Host,
			Port:       cfg.Port,
			SyncAlways: cfg.SyncAlways && !cfg.groupSync(),
			// With group sync, what no publish waits for (acks, deletions,
			// the tools' writes) is synced by the server this often.
			SyncInterval: groupSyncInterval(cfg),
			MaxPayload:   cfg.MaxMsgSize + headerRoom,
			ServerName:   "levee",
			Log:          q.log,
		})
		if err != nil {
			return fmt.Errorf("queue: embedded server: %w", err)
		}
		q.srv = srv
		url = srv.ClientURL()
		if cfg.groupSync() {
			gs, err := newGroupSync(cfg.DataDir, reg)
			if err != nil {
				return fmt.Errorf("queue: group sync: %w", err)
			}
			q.groupSync = gs
		}
	}
	if err := q.connect(url); err != nil {
		return err
	}
	if mp := q.nc.MaxPayload(); mp < int64(cfg.MaxMsgSize) {
		return fmt.Errorf("queue.max_msg_size: %d exceeds the server's max_payload (%d); raise max_payload on the NATS servers or lower queue.max_msg_size", cfg.MaxMsgSize, mp)
	}
	js, err := jetstream.New(q.nc)
	if err != nil {
		return fmt.Errorf("queue: jetstream: %w", err)
	}
	q.js = js
	if err := q.ensure(ctx); err != nil {
		return err
	}
	q.metrics, err = newMetrics(reg)
	return err
}

// startBackground starts the publisher's flusher and the status monitor.
func (q *Queue) startBackground() {
	q.flushCtx, q.flushCancel = context.WithCancel(context.Background())
	// One flusher per partition: the server applies a stream's batches one
	// at a time, so a second commit in flight would only split the waiting
	// publishes into smaller batches, each paying the fixed cost of a
	// batch; the partitions' streams commit in parallel.
	// No flusher where Publish sends each message itself (see direct).
	for _, p := range q.layout {
		l := &lane{part: p, pubCh: make(chan *pubReq, q.gather), batching: q.batching}
		q.lanes = append(q.lanes, l)
		if !q.direct() {
			q.flushWG.Add(1)
			go q.flusher(l)
		}
	}
	monCtx, monCancel := context.WithCancel(context.Background())
	q.monCancel = monCancel
	q.monWG.Add(1)
	go q.monitor(monCtx)
}

func (q *Queue) connect(url string) error {
	opts := []nats.Option{
		nats.Name("levee"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// No reconnect buffer: while disconnected a publish fails at once
		// (ErrUnavailable, 451) instead of waiting for PublishTimeout, and
		// no half-sent batch is replayed behind the caller's back.
		nats.ReconnectBufSize(-1),
		nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			q.connMu.Lock()
			q.connCancel()
			q.connMu.Unlock()
			if err != nil { // nil: our own Close
				q.log.Warn("queue: disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			q.connMu.Lock()
			q.connCancel()
			q.connCtx, q.connCancel = context.WithCancel(context.Background())
			q.connMu.Unlock()
			q.log.Info("queue: reconnected to NATS", "url", c.ConnectedUrlRedacted())
			if err := CheckServerVersion(c); err != nil {
				// A cluster mid-downgrade, or an old server in the URL list:
				// the streams already exist, so say what will fail.
				q.log.Error("queue: reconnected to a server Levee does not support", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			q.log.Warn("queue: NATS async error", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(q.ncClosed) }),
	}
	if q.srv != nil {
		// The embedded server is in this process: talk to it through a
		// pipe instead of loopback TCP (measured: +40% acknowledged
		// publishes). Its client port stays open for the CLI and tools.
		opts = append(opts, nats.InProcessServer(inProcess{srv: q.srv, url: url}))
	}
	nc, err := Dial(url, q.cfg.Security, opts...)
	if err != nil {
		return err
	}
	q.nc = nc
	return nil
}

// inProcess connects to the embedded server through a pipe while it runs,
// and over TCP to its address once it stopped: a server started again on
// the same port (a test's outage) is then reached as any other.
type inProcess struct {
	srv *natsserver.Server
	url string
}

func (p inProcess) InProcessConn() (net.Conn, error) {
	if c, err := p.srv.NATS().InProcessConn(); err == nil {
		return c, nil
	}
	u, err := neturl.Parse(p.url)
	if err != nil {
		return nil, err
	}
	return net.DialTimeout("tcp", u.Host, 5*time.Second)
}

// connDone is closed when the current connection is lost.
func (q *Queue) connDone() context.Context {
	q.connMu.Lock()
	defer q.connMu.Unlock()
	return q.connCtx
}

// Conn is the NATS connection (shared with the workers' consumer).
func (q *Queue) Conn() *nats.Conn { return q.nc }

// JetStream is the JetStream context on Conn.
func (q *Queue) JetStream() jetstream.JetStream { return q.js }

// Config is the configuration in effect (defaults applied).
func (q *Queue) Config() Config { return q.cfg }

// Server is the embedded server, nil with an external URL.
func (q *Queue) Server() *natsserver.Server { return q.srv }

// Close stops the publisher (queued publishes fail with ErrUnavailable, a
// batch in flight finishes), drains the connection and stops an embedded
// server. When ctx ends first, in-flight work is aborted and the connection
// closed at once.
func (q *Queue) Close(ctx context.Context) error {
	q.closeOnce.Do(func() { q.closeErr = q.close(ctx) })
	return q.closeErr
}

func (q *Queue) close(ctx context.Context) error {
	q.mu.Lock()
	q.closed = true
	close(q.closing)
	for _, l := range q.lanes {
		close(l.pubCh) // no sender holds mu.RLock now, so none is mid-send
	}
	q.mu.Unlock()

	var errs []error
	if !waitGroup(ctx, &q.flushWG) {
		q.flushCancel()
		q.flushWG.Wait() // everything in flight now ends promptly
		errs = append(errs, fmt.Errorf("queue: close: publisher aborted: %w", ctx.Err()))
	}
	q.flushCancel()
	q.monCancel()
	defer func() {
		q.connMu.Lock()
		q.connCancel()
		q.connMu.Unlock()
	}()
	q.monWG.Wait()

	if err := q.nc.Drain(); err != nil {
		q.nc.Close()
	}
	select {
	case <-q.ncClosed:
	case <-ctx.Done():
		q.nc.Close()
		<-q.ncClosed
	}
	if q.groupSync != nil {
		q.groupSync.close()
	}
	if q.srv != nil {
		q.srv.Shutdown()
	}
	q.log.Info("queue: closed")
	return errors.Join(errs...)
}

// abandon releases what a failed Open had acquired.
func (q *Queue) abandon() {
	defer q.connCancel()
	if q.nc != nil {
		q.nc.Close()
	}
	if q.groupSync != nil {
		q.groupSync.close()
	}
	if q.srv != nil {
		q.srv.Shutdown()
	}
}

// waitGroup waits for wg or ctx, reporting whether wg finished.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
