package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/store"
)

// Source is where deliveries come from: the durable pull consumer.
type Source interface {
	Fetch(batch int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error)
	FetchNoWait(batch int) (jetstream.MessageBatch, error)
}

// DeadLetterer moves a message that cannot be delivered aside, with the reason.
type DeadLetterer interface {
	DeadLetter(ctx context.Context, m jetstream.Msg, reason string) error
}

// Worker runs the delivery loops.
type Worker struct {
	cfg     Config
	src     Source
	st      store.Store
	dead    DeadLetterer
	metrics *metrics
	log     *slog.Logger

	// workCtx is cancelled only at the end of a Shutdown whose deadline passed:
	// it aborts in-flight store writes so that their messages are nak'ed.
	workCtx    context.Context
	cancelWork context.CancelFunc

	mu       sync.Mutex
	loops    []chan struct{} // one stop channel per running loop
	wg       sync.WaitGroup
	stopping bool

	// backoff is shared by every loop: when the store is down, all of them wait.
	backoffMu    sync.Mutex
	backoffUntil time.Time
	failures     int

	// stats is what the loops report for the autoscaler; writes is the
	// worker.max_writes_per_second ceiling (nil: none).
	stats  loopStats
	writes *tokenBucket
}

// New returns a worker with no loops running; call SetConcurrency (or Start) to drain.
func New(cfg Config, src Source, st store.Store, dead DeadLetterer, reg prometheus.Registerer, log *slog.Logger) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Worker{cfg: cfg, src: src, st: st, dead: dead, metrics: m, log: log, workCtx: ctx, cancelWork: cancel}
	if cfg.MaxWritesPerSecond > 0 {
		w.writes = newTokenBucket(cfg.MaxWritesPerSecond, cfg.BatchSize, nil)
	}
	return w, nil
}

// Start runs the configured number of loops.
func (w *Worker) Start() { w.SetConcurrency(w.cfg.Concurrency) }

// Concurrency is the number of loops currently running.
func (w *Worker) Concurrency() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.loops)
}

// SetConcurrency starts or stops loops until n run. A stopped loop finishes
// the batch it holds first. After Shutdown began it does nothing.
func (w *Worker) SetConcurrency(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping || n < 0 {
		return
	}
	for len(w.loops) < n {
		stop := make(chan struct{})
		w.loops = append(w.loops, stop)
		w.wg.Add(1)
		go w.loop(stop)
	}
	for len(w.loops) > n {
		last := len(w.loops) - 1
		close(w.loops[last])
		w.loops = w.loops[:last]
	}
	w.metrics.concurrency.Set(float64(len(w.loops)))
}

// Shutdown drains in two steps: every loop stops fetching and finishes the
// batch it holds; if ctx ends first, in-flight writes are cancelled and their
// messages nak'ed so that another worker takes them at once. Nothing is lost:
// a message is acked only after its commit.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	w.stopping = true
	for _, stop := range w.loops {
		close(stop)
	}
	w.loops = nil
	w.metrics.concurrency.Set(0)
	w.mu.Unlock()

	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
		w.cancelWork()
		return nil
	case <-ctx.Done():
		w.cancelWork()
		<-done
		return fmt.Errorf("worker: drain deadline passed, in-flight messages nak'ed: %w", ctx.Err())
	}
}

func (w *Worker) loop(stop <-chan struct{}) {
	defer w.wg.Done()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if wait := w.backoffRemaining(); wait > 0 {
			select {
			case <-stop:
				return
			case <-time.After(wait):
			}
			continue
		}
		if !w.waitForWrites(stop) {
			return
		}
		fetchStart := time.Now()
		msgs, waited, err := w.fetch()
		if err != nil {
			w.refundWrites(w.cfg.BatchSize)
			// JetStream unreachable: the messages are safe in the stream; wait and retry.
			w.log.Warn("worker: fetch failed", "err", err)
			select {
			case <-stop:
				return
			case <-time.After(w.cfg.RetryDelay):
			}
			continue
		}
		w.refundWrites(w.cfg.BatchSize - len(msgs))
		if len(msgs) == 0 {
			continue
		}
		// A fetch that found mail waiting is part of the work; one that
		// waited for mail to arrive is idle time.
		full := len(msgs) == w.cfg.BatchSize
		busyFrom := fetchStart
		if waited {
			busyFrom = time.Now()
		}
		if w.deliver(stop, msgs) {
			w.stats.recordBatch(len(msgs), time.Since(busyFrom), full)
		}
	}
}

// fetch takes what is queued right now, up to a batch; only when nothing is
// does it wait, up to FetchWait, for the first message to arrive. A lone
// message is therefore stored at once instead of waiting for a batch to
// fill, and a backlog is still taken in full batches.
func (w *Worker) fetch() (msgs []jetstream.Msg, waited bool, err error) {
	batch, err := w.src.FetchNoWait(w.cfg.BatchSize)
	if err != nil {
		return nil, false, err
	}
	if msgs = collect(batch); len(msgs) > 0 {
		return msgs, false, nil
	}
	batch, err = w.src.Fetch(1, jetstream.FetchMaxWait(w.cfg.FetchWait))
	if err != nil {
		return nil, true, err
	}
	return collect(batch), true, nil
}

func collect(batch jetstream.MessageBatch) []jetstream.Msg {
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	return msgs
}

// waitForWrites reserves a full batch under the write ceiling before the
// fetch; it returns false if the loop was told to stop meanwhile.
func (w *Worker) waitForWrites(stop <-chan struct{}) bool {
	if w.writes == nil {
		return true
	}
	wait := w.writes.reserve(w.cfg.BatchSize)
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-stop:
		w.writes.refund(w.cfg.BatchSize)
		return false
	case <-t.C:
		return true
	}
}

func (w *Worker) refundWrites(n int) {
	if w.writes != nil {
		w.writes.refund(n)
	}
}

// pending is one fetched message on its way to the store.
type pending struct {
	jsm       jetstream.Msg
	msg       *mail.Message
	delivered uint64
}

// deliver stores a fetched batch and settles every message in it: ack after
// commit, nak with a delay, or dead-letter. It returns false if the batch
// met a store outage or a shutdown, whose time says nothing about how fast
// a loop works.
func (w *Worker) deliver(stop <-chan struct{}, msgs []jetstream.Msg) bool {
	batch := make([]pending, 0, len(msgs))
	for _, m := range msgs {
		var delivered uint64 = 1
		if md, err := m.Metadata(); err == nil {
			delivered = md.NumDelivered
		}
		qm, err := queue.Decode(m)
		if err != nil {
			w.deadLetter(m, "malformed queue message: "+err.Error())
			continue
		}
		if delivered > uint64(w.cfg.MaxDeliver) {
			w.deadLetter(m, fmt.Sprintf("delivered %d times without being acknowledged (a worker may have crashed on it)", delivered-1))
			continue
		}
		parsed, err := mail.Parse(qm.Raw, w.cfg.ParseLimits)
		if err != nil {
			parsed = &mail.Parsed{Headers: map[string][]string{}, Warnings: []string{err.Error()}}
		}
		qm.Parsed = parsed
		batch = append(batch, pending{jsm: m, msg: qm, delivered: delivered})
	}
	if len(batch) == 0 {
		return true
	}
	clean := true
	for {
		err := w.store(batch)
		if err == nil {
			w.clearBackoff()
			return clean
		}
		if w.workCtx.Err() != nil {
			// Shutdown deadline: hand the messages back at once.
			w.nakAll(batch, 0, "shutdown")
			return false
		}
		pingCtx, cancel := context.WithTimeout(w.workCtx, 5*time.Second)
		pingErr := w.st.Ping(pingCtx)
		cancel()
		if pingErr != nil {
			// A store outage is nobody's fault but the store's: keep the
			// batch (and its ack deadlines) rather than nak it, so that the
			// outage burns none of the messages' delivery attempts.
			clean = false
			delay := w.storeDown()
			w.log.Warn("worker: store unavailable, holding the batch and retrying", "err", err, "ping", pingErr, "retry_in", delay, "messages", len(batch))
			if !w.hold(stop, batch, delay) {
				w.nakAll(batch, 0, "stopped during a store outage")
				return false
			}
			continue
		}
		if len(batch) > 1 {
			// The store is healthy, so one message broke the transaction: isolate it.
			for _, p := range batch {
				if err := w.store([]pending{p}); err != nil {
					w.failed(p, err)
				}
			}
			return clean
		}
		w.failed(batch[0], err)
		return clean
	}
}

// hold waits for delay while telling JetStream that the batch is still being
// worked on, so that it is not redelivered to another worker meanwhile. It
// returns false if the loop was told to stop.
func (w *Worker) hold(stop <-chan struct{}, batch []pending, delay time.Duration) bool {
	timer := time.NewTimer(delay)
	defer timer.Stop()
	tick := time.NewTicker(w.cfg.ProgressEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return false
		case <-w.workCtx.Done():
			return false
		case <-timer.C:
			return true
		case <-tick.C:
			for _, p := range batch {
				_ = p.jsm.InProgress()
			}
		}
	}
}

// store writes a batch in one transaction and acks each message after the commit.
func (w *Worker) store(batch []pending) error {
	msgs := make([]*mail.Message, len(batch))
	for i, p := range batch {
		msgs[i] = p.msg
	}
	ctx, cancel := context.WithTimeout(w.workCtx, w.cfg.StoreTimeout)
	defer cancel()
	start := time.Now()
	results, err := w.st.Deliver(ctx, msgs)
	took := time.Since(start)
	w.metrics.storeWrite.WithLabelValues(resultLabel(err)).Observe(took.Seconds())
	w.stats.recordWrite(took, len(msgs), err)
	if err != nil {
		return err
	}
	w.metrics.batchSize.Observe(float64(len(batch)))
	dup := make(map[string]bool, len(results))
	for _, r := range results {
		dup[r.ID] = r.Duplicate
	}
	now := time.Now()
	for _, p := range batch {
		// A lost ack only means a redelivery, which the store's unique key absorbs.
		if err := p.jsm.Ack(); err != nil {
			w.log.Warn("worker: ack failed after commit; the redelivery will be a duplicate", "id", p.msg.ID, "err", err)
		}
		if dup[p.msg.ID] {
			w.metrics.deliveries.WithLabelValues("duplicate").Inc()
			continue
		}
		w.metrics.deliveries.WithLabelValues("stored").Inc()
		if !p.msg.Envelope.ReceivedAt.IsZero() {
			w.metrics.endToEnd.Observe(now.Sub(p.msg.Envelope.ReceivedAt).Seconds())
		}
	}
	return nil
}

// failed settles a message the healthy store refused.
func (w *Worker) failed(p pending, err error) {
	if p.delivered >= uint64(w.cfg.MaxDeliver) {
		w.deadLetter(p.jsm, fmt.Sprintf("store refused the message %d times; last error: %v", p.delivered, err))
		return
	}
	delay := w.retryDelay(int(p.delivered))
	w.log.Warn("worker: store refused message, will retry", "id", p.msg.ID, "delivery", p.delivered, "retry_in", delay, "err", err)
	if nerr := p.jsm.NakWithDelay(delay); nerr != nil {
		w.log.Warn("worker: nak failed; ack wait will redeliver", "err", nerr)
	}
	w.metrics.deliveries.WithLabelValues("retry").Inc()
}

func (w *Worker) deadLetter(m jetstream.Msg, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.dead.DeadLetter(ctx, m, reason); err != nil {
		// Not moved aside: keep it in the queue rather than lose it.
		w.log.Error("worker: dead-letter failed, message stays queued", "err", err, "reason", reason)
		_ = m.NakWithDelay(w.cfg.MaxRetryDelay)
		w.metrics.deliveries.WithLabelValues("retry").Inc()
		return
	}
	if err := m.TermWithReason(reason); err != nil {
		w.log.Warn("worker: term after dead-letter failed; the copy in the dead-letter stream is deduplicated", "err", err)
	}
	w.log.Warn("worker: message dead-lettered", "reason", reason)
	w.metrics.deliveries.WithLabelValues("dead_lettered").Inc()
}

func (w *Worker) nakAll(batch []pending, delay time.Duration, why string) {
	for _, p := range batch {
		if err := p.jsm.NakWithDelay(delay); err != nil {
			w.log.Debug("worker: nak failed; ack wait will redeliver", "err", err)
		}
	}
	w.metrics.deliveries.WithLabelValues("retry").Add(float64(len(batch)))
	w.log.Debug("worker: batch handed back", "why", why, "messages", len(batch))
}

func (w *Worker) retryDelay(attempt int) time.Duration {
	d := w.cfg.RetryDelay
	for i := 1; i < attempt && d < w.cfg.MaxRetryDelay; i++ {
		d *= 2
	}
	return min(d, w.cfg.MaxRetryDelay)
}

// storeDown records one more consecutive store outage and returns how long
// every loop should wait before fetching again.
func (w *Worker) storeDown() time.Duration {
	w.backoffMu.Lock()
	defer w.backoffMu.Unlock()
	w.failures++
	d := w.retryDelay(w.failures)
	w.backoffUntil = time.Now().Add(d)
	w.metrics.storeAvailable.Set(0)
	return d
}

func (w *Worker) clearBackoff() {
	w.backoffMu.Lock()
	defer w.backoffMu.Unlock()
	if w.failures != 0 {
		w.log.Info("worker: store available again, resuming deliveries")
	}
	w.failures = 0
	w.backoffUntil = time.Time{}
	w.metrics.storeAvailable.Set(1)
}

func (w *Worker) backoffRemaining() time.Duration {
	w.backoffMu.Lock()
	defer w.backoffMu.Unlock()
	return time.Until(w.backoffUntil)
}

func resultLabel(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
