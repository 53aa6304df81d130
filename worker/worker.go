package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/store"
)

// Source is where deliveries come from: the queue's consumer
// (*queue.Consumer). Fetch takes what is queued now, up to max; only when
// nothing is does it wait, up to wait, for the first message, and says it
// waited.
type Source interface {
	Fetch(max int, wait time.Duration) (ds []queue.Delivery, waited bool, err error)
}

// Worker runs the delivery loops.
type Worker struct {
	cfg     Config
	batch   *batchSizer
	src     Source
	st      store.Store
	metrics *metrics
	log     *slog.Logger

	// workCtx is cancelled only at the end of a Shutdown whose deadline passed:
	// it aborts in-flight store writes so that their messages are handed back.
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
	outageErr    error // the last outage's cause while failures > 0

	// stats is what the loops report for the autoscaler; writes is the
	// worker.max_writes_per_second ceiling (nil: none).
	stats  loopStats
	writes *tokenBucket
	// duty is the share of time a loop works (float64 bits; 0 means 1),
	// set by the autoscaler below one loop (see pace.go).
	duty atomic.Uint64
	// first steps the loops back for the receiver on this machine (nil:
	// never; see PutIntakeFirst).
	first *intakeFirst
}

// New returns a worker draining src into st, with no loops running; call
// SetConcurrency (or Start) to drain. reg may be nil (a registry of its
// own), log too (slog.Default()).
func New(cfg Config, src Source, st store.Store, reg prometheus.Registerer, log *slog.Logger) (*Worker, error) {
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
	w := &Worker{cfg: cfg, batch: &batchSizer{max: cfg.BatchSize, maxBytes: cfg.BatchMaxBytes}, src: src, st: st, metrics: m, log: log, workCtx: ctx, cancelWork: cancel}
	if cfg.MaxWritesPerSecond > 0 {
		w.writes = newTokenBucket(cfg.MaxWritesPerSecond, cfg.BatchSize, nil)
	}
	return w, nil
}

// PutIntakeFirst makes the loops step back while intake, the receiver on
// the same machine, has senders waiting, within the bounds of
// worker.intake_first and q's fill and age. Call it before Start.
func (w *Worker) PutIntakeFirst(intake Intake, q QueueLevel) {
	w.first = &intakeFirst{cfg: w.cfg.IntakeFirst, intake: intake, queue: q, gauge: w.metrics.steppedBack, usualRate: w.metrics.usualRate, now: time.Now}
}

// stepBackPoll is how often a loop that stepped back looks again.
const stepBackPoll = 50 * time.Millisecond

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
// messages handed back so that another worker takes them at once. Nothing is lost:
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
		return fmt.Errorf("worker: drain deadline passed, in-flight messages handed back to the queue: %w", ctx.Err())
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
		if w.first.stepBack() {
			select {
			case <-stop:
				return
			case <-time.After(stepBackPoll):
			}
			continue
		}
		if !w.waitForWrites(stop) {
			return
		}
		fetchStart := time.Now()
		want := w.batch.count()
		ds, waited, err := w.src.Fetch(want, w.cfg.FetchWait)
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
		w.refundWrites(w.cfg.BatchSize - len(ds))
		if len(ds) == 0 {
			continue
		}
		w.batch.observe(ds)
		// A fetch that found mail waiting is part of the work; one that
		// waited for mail to arrive is idle time.
		full := len(ds) == want
		busyFrom := fetchStart
		if waited {
			busyFrom = time.Now()
		}
		busy := time.Since(busyFrom)
		if w.deliver(stop, ds) {
			busy = time.Since(busyFrom)
			w.stats.recordBatch(len(ds), busy, full)
		}
		if !w.rest(stop, busy) {
			return
		}
	}
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
	d       queue.Delivery
	msg     *mail.Message
	attempt int // this delivery's number, 1 for the first
	last    int // the last attempt the queue allows
}

// deliver stores a fetched batch and settles every message in it: ack after
// commit, retry after a delay, or give up to the dead letters. It returns
// false if the batch met a store outage or a shutdown, whose time says
// nothing about how fast a loop works.
func (w *Worker) deliver(stop <-chan struct{}, ds []queue.Delivery) bool {
	batch := make([]pending, 0, len(ds))
	for _, d := range ds {
		qm, err := d.Message()
		if err != nil {
			w.giveUp(d, "malformed queue message: "+err.Error())
			continue
		}
		attempt, last := d.Attempt()
		if attempt > last {
			w.giveUp(d, fmt.Sprintf("delivered %d times without being acknowledged (a worker may have crashed on it)", attempt-1))
			continue
		}
		qm.Parsed = w.parse(qm.Raw)
		batch = append(batch, pending{d: d, msg: qm, attempt: attempt, last: last})
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
			w.retryAll(batch, 0, "shutdown")
			return false
		}
		outage := w.outage(err)
		if outage == nil {
			if len(batch) == 1 {
				w.failed(batch[0], err)
				return clean
			}
			// The store is healthy, so one message broke the transaction: isolate it.
			if batch, outage = w.isolate(batch); outage == nil {
				return clean
			}
			if w.workCtx.Err() != nil {
				w.retryAll(batch, 0, "shutdown")
				return false
			}
		}
		// A store outage is nobody's fault but the store's: keep the
		// batch (and its ack deadlines) rather than hand it back, so that the
		// outage burns none of the messages' delivery attempts.
		clean = false
		delay := w.storeDown(outage)
		w.log.Warn("worker: store unavailable, holding the batch and retrying", "err", outage, "retry_in", delay, "messages", len(batch))
		if !w.hold(stop, batch, delay) {
			w.retryAll(batch, 0, "stopped during a store outage")
			return false
		}
	}
}

// isolate stores a batch's messages one by one and settles each. If the
// store fails on the way (or the worker shuts down), it stops there and
// returns the messages not yet settled with the cause.
func (w *Worker) isolate(batch []pending) (rest []pending, outage error) {
	for i, p := range batch {
		err := w.store([]pending{p})
		if err == nil {
			continue
		}
		if err := w.workCtx.Err(); err != nil {
			return batch[i:], err
		}
		if outage := w.outage(err); outage != nil {
			return batch[i:], outage
		}
		w.failed(p, err)
	}
	return nil, nil
}

// outage tells a failed write that the store is to blame for (returned,
// with the cause) from one a message is: the store says it cannot take
// writes now (store.ErrUnavailable: a full disk, which a read such as Ping
// does not notice), or it does not answer Ping.
func (w *Worker) outage(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return err
	}
	ctx, cancel := context.WithTimeout(w.workCtx, 5*time.Second)
	defer cancel()
	if pingErr := w.st.Ping(ctx); pingErr != nil {
		return fmt.Errorf("%w (ping: %w)", err, pingErr)
	}
	return nil
}

// parse reads a message's content for the store: the one MIME parse a
// message gets on its way. Messy mail is stored with its warnings; mail the
// parser cannot read, with its headers.
func (w *Worker) parse(raw []byte) *mail.Parsed {
	p, err := mail.Parse(raw, w.cfg.ParseLimits)
	if err != nil {
		p = &mail.Parsed{Headers: map[string][]string{}, Warnings: []string{err.Error()}, HeadersOnly: true}
	}
	switch {
	case p.HeadersOnly:
		w.metrics.parse.WithLabelValues(parseHeaders).Inc()
	case len(p.Warnings) > 0:
		w.metrics.parse.WithLabelValues(parseWarnings).Inc()
	default:
		w.metrics.parse.WithLabelValues(parseOK).Inc()
	}
	return p
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
				_ = p.d.Hold()
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
	// Half of what a loop fetches now (fewer when messages are large)
	// makes a full batch, whose write the autoscaler judges apart.
	w.stats.recordWrite(took, len(msgs), 2*len(msgs) >= w.batch.count(), err)
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
		if err := p.d.Ack(); err != nil {
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

// failed settles a message the healthy store refused: retried later, or
// given up on its last attempt.
func (w *Worker) failed(p pending, err error) {
	if p.attempt >= p.last {
		w.giveUp(p.d, fmt.Sprintf("store refused the message %d times; last error: %v", p.attempt, err))
		return
	}
	delay := w.retryDelay(p.attempt)
	w.log.Warn("worker: store refused message, will retry", "id", p.msg.ID, "delivery", p.attempt, "retry_in", delay, "err", err)
	if nerr := p.d.Retry(delay); nerr != nil {
		w.log.Warn("worker: retry failed; ack wait will redeliver", "err", nerr)
	}
	w.metrics.deliveries.WithLabelValues("retry").Inc()
}

// giveUp moves a message to the dead letters with the reason; if that
// cannot be done, it stays queued and comes back later rather than be lost.
func (w *Worker) giveUp(d queue.Delivery, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.GiveUp(ctx, reason); err != nil {
		w.log.Error("worker: dead-letter failed, message stays queued", "err", err, "reason", reason)
		_ = d.Retry(w.cfg.MaxRetryDelay)
		w.metrics.deliveries.WithLabelValues("retry").Inc()
		return
	}
	w.log.Warn("worker: message dead-lettered", "reason", reason)
	w.metrics.deliveries.WithLabelValues("dead_lettered").Inc()
}

// retryAll hands a batch back to the queue, to be delivered again after delay.
func (w *Worker) retryAll(batch []pending, delay time.Duration, why string) {
	for _, p := range batch {
		if err := p.d.Retry(delay); err != nil {
			w.log.Debug("worker: retry failed; ack wait will redeliver", "err", err)
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

// storeDown records one more consecutive store outage, caused by cause,
// and returns how long every loop should wait before fetching again.
func (w *Worker) storeDown(cause error) time.Duration {
	w.backoffMu.Lock()
	defer w.backoffMu.Unlock()
	w.failures++
	w.outageErr = cause
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
	w.outageErr = nil
	w.backoffUntil = time.Time{}
	w.metrics.storeAvailable.Set(1)
}

// StoreOutage is the cause of the store outage the loops are waiting out
// (a full disk, a database that does not answer), or nil while the store
// takes writes: for readiness, since a full disk still answers the store's
// Ping. It is cleared by the first write that succeeds after it.
func (w *Worker) StoreOutage() error {
	w.backoffMu.Lock()
	defer w.backoffMu.Unlock()
	if w.outageErr == nil {
		return nil
	}
	return fmt.Errorf("worker: store unavailable: %w", w.outageErr)
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
