package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// groupSync makes the embedded server's writes durable in groups: one
// syncfs(2) of the data directory's filesystem after the PubAcks of every
// publish waiting, instead of the server's fsync per message (SyncAlways).
//
// The server runs without SyncAlways, so a message is written to its block
// file (the page cache) before it is acknowledged (a single-node file store
// flushes each write in place), but not synced. A publish that got its
// PubAck then waits here for a sync that began after it, and only then is
// the sender answered 250. Twenty sessions publishing at once share one
// sync where they needed twenty fsyncs in a row on one stream's lane: the
// receiver was bound by them (issue 10).
//
// A failed sync fails the publishes that waited on it (451 4.3.0), and every
// publish after it, until the process is restarted: Linux reports a failed
// writeback once and then marks the pages clean ("fsyncgate"), so a later
// sync that succeeds proves nothing about them, and a sender's retry would
// be answered 250 as a duplicate of a message that may never reach the
// disk. The senders keep their mail meanwhile; StoreFault (readiness) says
// why. This is PostgreSQL's answer to the same problem, without the panic.
type groupSync struct {
	dir  *os.File
	sync func(*os.File) error // syncfs on Linux

	mu      sync.Mutex
	waiting []chan error
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}

	closeOnce sync.Once
	// failed is the first sync error, for good (see above).
	failed atomic.Pointer[error]

	seconds  prometheus.Histogram
	messages prometheus.Counter
}

func newGroupSync(dir string, reg prometheus.Registerer) (*groupSync, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	g := &groupSync{
		dir: f, sync: syncFilesystem,
		kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "levee_queue_group_sync_seconds",
			Help:    "Group syncs of the embedded server's writes (one syncfs makes every waiting publish durable before its 250): duration; the count is the number of syncs.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "levee_queue_group_sync_messages_total",
			Help: "Publishes made durable by group syncs; divided by the syncs' count, the messages one sync serves.",
		}),
	}
	for _, c := range []prometheus.Collector{g.seconds, g.messages} {
		if err := reg.Register(c); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	go g.loop()
	return g, nil
}

// wait returns once a sync that began after the call has completed, with
// its error, or ctx's.
func (g *groupSync) wait(ctx context.Context) error {
	if err := g.failure(); err != nil {
		return err
	}
	ch := make(chan error, 1)
	g.mu.Lock()
	g.waiting = append(g.waiting, ch)
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default: // a round is due already
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-g.stopped:
		return errClosed
	}
}

// loop runs one sync at a time for everyone waiting when it starts; those
// who arrive during a sync wait for the next.
func (g *groupSync) loop() {
	defer close(g.stopped)
	for {
		select {
		case <-g.kick:
		case <-g.done:
			return
		}
		g.mu.Lock()
		batch := g.waiting
		g.waiting = nil
		g.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		start := time.Now()
		err := g.sync(g.dir)
		if err != nil {
			err = fmt.Errorf("%w: syncing %s: %w", errSyncFailed, g.dir.Name(), err)
			g.failed.CompareAndSwap(nil, &err)
		}
		g.seconds.Observe(time.Since(start).Seconds())
		g.messages.Add(float64(len(batch)))
		for _, ch := range batch {
			ch <- err
		}
	}
}

// failure is the sync error that stopped intake, or nil.
func (g *groupSync) failure() error {
	if p := g.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// errSyncFailed marks a failed group sync: the disk did not take writes
// already acknowledged; intake stops until a restart.
var errSyncFailed = errors.New("the disk failed a sync of acknowledged writes; restart Levee once the disk is checked")

// close stops the loop; publishes still waiting fail with errClosed.
// Idempotent (Close and an abandoned Open both call it).
func (g *groupSync) close() {
	g.closeOnce.Do(func() {
		close(g.done)
		<-g.stopped
		_ = g.dir.Close()
	})
}

// groupSync says whether the queue syncs the embedded server's writes in
// groups (Config.GroupSync).
func (c Config) groupSync() bool {
	return c.URL == "" && c.SyncAlways && c.GroupSync && groupSyncSupported
}

// serverSyncInterval is how often the embedded server syncs by itself under
// group sync: the writes no publish waits for (acknowledgements, deletions,
// dead-letter replays by the CLI over NATS) are on disk within it. Losing
// those costs a redelivery (the store is idempotent), never mail.
const serverSyncInterval = 10 * time.Second

func groupSyncInterval(c Config) time.Duration {
	if c.groupSync() {
		return serverSyncInterval
	}
	return 0
}

// WaitDurable returns once everything the embedded server acknowledged
// before the call is on disk: at once without group sync (the server then
// syncs each write before acknowledging it, or the operator chose not to).
// For writes that delete something only after another is made (a
// dead-letter replay).
func (q *Queue) WaitDurable(ctx context.Context) error {
	if q.groupSync == nil {
		return nil
	}
	return q.groupSync.wait(ctx)
}
