package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/levee-mail/levee/mail"
)

// PublishResult is JetStream's acknowledgement of one message.
type PublishResult struct {
	// Seq is the message's stream sequence (the original's for a duplicate).
	Seq uint64 `json:"seq"`
	// Duplicate: a message with this ID was already in the stream within the
	// duplicate window. The message is durable, so this is a success: it is
	// what an MTA's retransmission after a lost 250 looks like.
	Duplicate bool `json:"duplicate"`
}

var errClosed = errors.New("queue is closed")

// lane is one partition's publisher: the publishes waiting for it and the
// flusher that commits them (none where publishes are direct).
type lane struct {
	part  Partition
	pubCh chan *pubReq
	// batching is the Queue's, until the stream says it does not allow
	// atomic publish; only the lane's flusher reads it after Open.
	batching bool
}

// pubReq is one Publish waiting for its group commit.
type pubReq struct {
	ctx      context.Context // the caller's, bounded by PublishTimeout
	deadline time.Time
	msg      *nats.Msg // without batch headers
	id       string
	size     int
	out      pubOutcome
	dups     []*pubReq // same ID in the same batch: answered from this one
	res      chan pubOutcome
}

type pubOutcome struct {
	res PublishResult
	err error
}

func (r *pubReq) reply(o pubOutcome) { r.res <- o } // buffered: never blocks

// Publish makes m durable on the stream and returns only after JetStream
// acknowledged it (or failed). The publish uses m.ID as Nats-Msg-Id, the
// envelope as headers and m.Raw as body.
//
// Concurrent calls are group-committed. With atomic batches, one flusher
// a partition takes every request waiting (up to MaxBatch) the moment its
// previous commit is done, without lingering, and publishes them as one
// batch, which the server persists with one fsync instead of one per
// message. Groups smaller than MinBatch go as concurrent single publishes,
// since a batch has a fixed cost. A failed batch is republished one message
// at a time, so every caller gets the answer about its own message. Under
// group sync the caller publishes alone and the sync is what is shared
// (see direct).
//
// On failure the error wraps exactly one of ErrQueueFull, ErrTooLarge,
// ErrUnavailable (or ErrInvalidMessage). Publish never blocks longer than
// PublishTimeout or ctx; after ErrUnavailable the message may still have
// been stored, and publishing it again is then reported as a duplicate.
func (q *Queue) Publish(ctx context.Context, m *mail.Message) (PublishResult, error) {
	start := time.Now()
	res, err := q.publish(ctx, m)
	q.metrics.observePublish(start, res, err)
	if err != nil && !errors.Is(err, ErrInvalidMessage) && !isStoreFault(err) {
		q.kickMonitor() // let Fill catch up with a full (or vanished) stream now
	}
	return res, err
}

func (q *Queue) publish(ctx context.Context, m *mail.Message) (PublishResult, error) {
	switch {
	case m == nil:
		return PublishResult{}, invalidMessage("", "nil message")
	case m.ID == "":
		return PublishResult{}, invalidMessage("", "no ID")
	case len(m.Envelope.To) == 0:
		return PublishResult{}, invalidMessage(m.ID, "no recipient")
	}
	ctx, cancel := context.WithTimeout(ctx, q.cfg.PublishTimeout)
	defer cancel()
	l := q.lanes[routeIndex(m.ID, len(q.lanes))]
	msg := encode(l.part, m)
	r := &pubReq{ctx: ctx, msg: msg, id: m.ID, size: msgSize(msg)}
	r.deadline, _ = ctx.Deadline()

	q.mu.RLock()
	if err := q.refusal(); err != nil {
		q.mu.RUnlock()
		return PublishResult{}, err
	}
	var o pubOutcome
	if q.direct() {
		q.flushWG.Add(1)
		q.mu.RUnlock()
		func() {
			defer q.flushWG.Done()
			q.publishOne(r)
		}()
		o = r.out
	} else {
		r.res = make(chan pubOutcome, 1)
		select {
		case l.pubCh <- r:
			q.mu.RUnlock()
		case <-ctx.Done():
			q.mu.RUnlock()
			return PublishResult{}, publishError(ctx.Err())
		}
		select {
		case o = <-r.res:
		case <-ctx.Done():
			select {
			case o = <-r.res: // answered just in time
			default:
				return PublishResult{}, publishError(ctx.Err())
			}
		}
	}
	if o.err == nil && q.groupSync != nil {
		// Acknowledged means written, not yet synced. A duplicate waits
		// too: its original's publish may still be waiting for the sync.
		if err := q.groupSync.wait(ctx); err != nil {
			return PublishResult{}, publishError(fmt.Errorf("sync to disk: %w", err))
		}
	}
	return o.res, o.err
}

// direct says whether each caller sends its own publish, sparing the
// flusher's two goroutine hops a message: on the embedded server without
// atomic batches (group sync, or max_batch 1), where there is nothing to
// group and the stream itself answers a repeated id as a duplicate. On a
// cluster the flusher still gathers singles: it answers a repeat of an id
// in flight from the first, which a replicated stream would refuse while
// the first is being proposed (10158: a 451 instead of a 250).
// flushWG lets Close wait for a direct publish as for a flush.
func (q *Queue) direct() bool { return !q.batching && q.srv != nil }

// refusal is why a publish cannot be sent now, or nil. q.mu is held.
func (q *Queue) refusal() error {
	if q.closed {
		return publishError(errClosed)
	}
	if f := q.fault.Load(); f != nil && f.full {
		// The server would leave it unanswered (see storefault.go).
		return publishError(f)
	}
	if !q.nc.IsConnected() {
		// Fail fast: while reconnecting nothing can be acknowledged.
		return publishError(fmt.Errorf("%w (%s)", nats.ErrConnectionReconnecting, q.nc.Status()))
	}
	return nil
}

// msgSize approximates what the server counts against max_msg_size.
func msgSize(m *nats.Msg) int {
	n := len(m.Data) + len("NATS/1.0\r\n\r\n")
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// flusher runs a lane's group commits until Close closes its channel.
func (q *Queue) flusher(l *lane) {
	defer q.flushWG.Done()
	batch := make([]*pubReq, 0, q.gather)
	for {
		r, ok := <-l.pubCh
		if !ok {
			return
		}
		// No linger: take what is waiting now. Under load the queue fills
		// while the previous commit is in flight, so batches grow by
		// themselves; an idle queue publishes a lone message at once.
		batch = append(batch[:0], r)
	fill:
		for len(batch) < q.gather {
			select {
			case r, ok := <-l.pubCh:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			default:
				break fill
			}
		}
		select {
		case <-q.closing:
			for _, r := range batch {
				r.reply(pubOutcome{err: publishError(errClosed)})
			}
		default:
			q.flush(l, batch)
		}
		clear(batch)
	}
}

// flush publishes a lane's reqs and answers every one of them.
func (q *Queue) flush(l *lane, reqs []*pubReq) {
	// Requests whose caller has given up are dropped, not published.
	// Requests with an ID already in this batch ride on the first one:
	// JetStream would refuse the whole batch for the repeat (10201).
	live := make([]*pubReq, 0, len(reqs))
	first := make(map[string]*pubReq, len(reqs))
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.reply(pubOutcome{err: publishError(err)})
			continue
		}
		if f, ok := first[r.id]; ok {
			f.dups = append(f.dups, r)
			continue
		}
		first[r.id] = r
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}

	var batch, singles []*pubReq
	for _, r := range live {
		// An oversized message would fail its whole batch; alone it gets
		// its own ErrTooLarge from the server.
		if l.batching && r.size <= int(q.cfg.MaxMsgSize) {
			batch = append(batch, r)
		} else {
			singles = append(singles, r)
		}
	}
	if len(batch) < q.minBatch {
		singles, batch = append(singles, batch...), nil
	}
	if len(batch) > 0 {
		if err := q.publishBatch(batch); err != nil {
			// Any failure of the batch (a duplicate ID, a limit, a lost
			// reply) says nothing certain about a single message: publish
			// them one by one for per-message answers. If the batch did
			// land, each single now comes back as a duplicate: correct.
			q.metrics.fallbacks.WithLabelValues(fallbackReason(err)).Inc()
			q.log.Debug("queue: atomic batch failed, publishing its messages singly", "size", len(batch), "err", err)
			if apiCode(err) == codeAtomicPubDisabled {
				// The stream was changed behind our back; only the
				// lane's flusher reads batching, so no lock is needed.
				l.batching = false
				q.log.Warn("queue: the stream no longer allows atomic publish; publishing one message at a time until the next Open")
			}
			singles = append(singles, batch...)
		} else {
			q.metrics.batchSize.Observe(float64(len(batch)))
		}
	}
	q.publishSingles(singles)
	for _, r := range live {
		r.reply(r.out)
		for _, d := range r.dups {
			o := r.out
			if o.err == nil {
				o.res.Duplicate = true
			}
			d.reply(o)
		}
	}
}

// publishSingles publishes each request on its own, all at once: the
// server still syncs each one, but the round trips overlap.
func (q *Queue) publishSingles(reqs []*pubReq) {
	switch len(reqs) {
	case 0:
		return
	case 1:
		q.publishOne(reqs[0])
		return
	}
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Go(func() { q.publishOne(r) })
	}
	wg.Wait()
}

// publishOne is a plain JetStream publish awaiting its PubAck.
func (q *Queue) publishOne(r *pubReq) {
	if err := r.ctx.Err(); err != nil {
		r.out = pubOutcome{err: publishError(err)}
		return
	}
	ctx, cancel := q.sendContext(r.deadline)
	defer cancel()
	stop := context.AfterFunc(r.ctx, cancel)
	defer stop()
	q.metrics.batchSize.Observe(1)
	ack, err := q.js.PublishMsg(ctx, r.msg)
	if err != nil {
		r.out = pubOutcome{err: publishError(err)}
		return
	}
	r.out = pubOutcome{res: PublishResult{Seq: ack.Sequence, Duplicate: ack.Duplicate}}
}

// sendContext bounds a send by deadline, a hard Close and the connection:
// once the connection is lost the reply cannot come, so the wait ends at
// once (ErrUnavailable) rather than at the deadline.
func (q *Queue) sendContext(deadline time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(q.flushCtx, deadline)
	stop := context.AfterFunc(q.connDone(), cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// batchReplyWait is the least wait for an atomic batch's commit reply (a
// fifth of PublishTimeout when that is longer). A healthy commit takes
// milliseconds (about 7 ms with SyncAlways on one node).
const batchReplyWait = time.Second

// batchAck is the reply to an atomic batch's commit message.
type batchAck struct {
	Error  *jetstream.APIError `json:"error,omitempty"`
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  int                 `json:"count"`
}

// publishBatch publishes reqs as one atomic batch (nats-server >= 2.12):
// every message carries Nats-Batch-Id and Nats-Batch-Sequence; all but the
// last go without a reply subject (the server stages them silently), the
// last adds Nats-Batch-Commit: 1 and is a request whose reply is the PubAck
// of the whole batch, naming the batch and its count. The batch is stored
// all or nothing. On success every request's out is set; on error none is.
func (q *Queue) publishBatch(reqs []*pubReq) error {
	deadline := reqs[0].deadline
	for _, r := range reqs[1:] {
		if r.deadline.After(deadline) {
			deadline = r.deadline
		}
	}
	// The commit's reply gets batchReplyWait or a fifth of PublishTimeout,
	// not the callers' whole deadline: a batch the server dropped without a reply (seen while the
	// stream's config was being updated) then costs a second, and the
	// fallback to single publishes still has time to answer each caller.
	if d := time.Now().Add(max(batchReplyWait, q.cfg.PublishTimeout/5)); d.Before(deadline) {
		deadline = d
	}
	ctx, cancel := q.sendContext(deadline)
	defer cancel()

	id := nuid.Next()
	n := len(reqs)
	var resp *nats.Msg
	for i, r := range reqs {
		h := make(nats.Header, len(r.msg.Header)+3)
		maps.Copy(h, r.msg.Header)
		h.Set(headerBatchID, id)
		h.Set(headerBatchSeq, strconv.Itoa(i+1))
		m := &nats.Msg{Subject: r.msg.Subject, Header: h, Data: r.msg.Data}
		if i < n-1 {
			if err := q.nc.PublishMsg(m); err != nil {
				return fmt.Errorf("batch message %d/%d: %w", i+1, n, err)
			}
			continue
		}
		h.Set(headerBatchCommit, "1")
		var err error
		if resp, err = q.nc.RequestMsgWithContext(ctx, m); err != nil {
			return fmt.Errorf("batch commit: %w", err)
		}
	}
	var ack batchAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return fmt.Errorf("batch commit: %w: %v", jetstream.ErrInvalidJSAck, err)
	}
	if ack.Error != nil {
		return fmt.Errorf("batch commit: %w", ack.Error)
	}
	if ack.Batch != id || ack.Count != n || ack.Seq < uint64(n) {
		return fmt.Errorf("batch commit: %w: %q", jetstream.ErrInvalidJSAck, resp.Data)
	}
	// The batch is applied in order and isolated, so its sequences are
	// contiguous and end at the acknowledged one.
	for i, r := range reqs {
		r.out = pubOutcome{res: PublishResult{Seq: ack.Seq - uint64(n-1-i)}}
	}
	return nil
}
