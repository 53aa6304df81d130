package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/levee-mail/levee/mail"
)

// Delivery is one queued message handed to a worker, and the ways to
// settle it, in the worker's terms. JetStream's are behind it: ack, nak
// with a delay, in progress, terminate. A delivery not settled within the
// consumer's ack wait is handed out again.
type Delivery interface {
	// Message is the queued message, or an error wrapping ErrMalformed
	// when it cannot be read (the worker gives such a delivery up at once).
	Message() (*mail.Message, error)
	// Attempt is this delivery's number, 1 for the first, and last the
	// most a message gets (queue.max_deliver): the worker gives up a
	// message on its last attempt rather than try it again, and one past
	// it (deliveries that workers crashed on) before trying it at all.
	Attempt() (n, last int)
	// Ack removes the message from the queue: call it after the store
	// committed it.
	Ack() error
	// Retry hands the message back, to be delivered again after delay.
	Retry(delay time.Duration) error
	// Hold says the message is still being worked on (the store is down
	// and the worker keeps the batch), so that it is not handed to another
	// worker meanwhile. Call it well within the ack wait.
	Hold() error
	// GiveUp moves the message to the dead-letter stream with the reason
	// and removes it from the queue. When the copy cannot be made it
	// returns the error and the message stays queued, untouched: nothing is
	// dropped. Safe to repeat: a retry after a crash leaves one copy.
	GiveUp(ctx context.Context, reason string) error
}

// Consumer hands out the messages of the workers' durable consumers, one
// on every mail stream (partition) there is, as Deliveries: the layout's
// and those of other layouts, as the queue's monitor finds them appear
// and go. It is safe for concurrent use by many delivery loops.
type Consumer struct {
	q *Queue
	// handles are the consumers looked up so far, by stream.
	handlesMu sync.Mutex
	handles   map[string]jetstream.Consumer
	// next is where the following Fetch starts, so that every partition
	// is served first in turn and none starves while another is deep.
	next atomic.Uint32
	// spare holds what a wait on every partition at once brought beyond
	// the max asked for; the next Fetch hands it out first. Handing it
	// back instead would count a delivery attempt against each message.
	mu    sync.Mutex
	spare []Delivery
}

// Consumer returns the workers' consumer.
func (q *Queue) Consumer(ctx context.Context) (*Consumer, error) {
	c := &Consumer{q: q, handles: map[string]jetstream.Consumer{}}
	for _, p := range q.mailStreams() {
		jc, err := q.js.Consumer(ctx, p.Stream, q.cfg.Durable)
		if err != nil {
			return nil, fmt.Errorf("queue: consumer %s on %s: %w", q.cfg.Durable, p.Stream, err)
		}
		c.handles[p.Stream] = jc
	}
	return c, nil
}

// parts is the consumers on the mail streams there are now. A stream that
// appeared gets its consumer looked up; one that fails (deleted again) is
// left out until the next call.
func (c *Consumer) parts() []jetstream.Consumer {
	streams := c.q.mailStreams()
	c.handlesMu.Lock()
	defer c.handlesMu.Unlock()
	out := make([]jetstream.Consumer, 0, len(streams))
	for _, p := range streams {
		jc, ok := c.handles[p.Stream]
		if !ok {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var err error
			jc, err = c.q.js.Consumer(ctx, p.Stream, c.q.cfg.Durable)
			cancel()
			if err != nil {
				c.q.log.Debug("queue: consumer of a new mail stream not ready", "stream", p.Stream, "err", err)
				continue
			}
			c.handles[p.Stream] = jc
		}
		out = append(out, jc)
	}
	return out
}

// lenient says whether a fetch error from jc may be passed over: the
// stream is of another layout and was deleted once drained (the monitor
// forgets it), while the other partitions serve.
func (c *Consumer) lenient(jc jetstream.Consumer, err error) bool {
	if !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrConsumerNotFound) &&
		!errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	p := Partition{Stream: jc.CachedInfo().Stream}
	if !c.q.draining(p) {
		return false
	}
	c.q.kickMonitor()
	return true
}

// waitRound bounds one round of waiting on every partition at once: a
// message in any of them is handed out within it.
const waitRound = 100 * time.Millisecond

// Fetch takes what is queued right now, up to max, from the partitions in
// turn; only when nothing is does it wait, up to wait, for the first
// messages to arrive, and then says it waited (that time was idle, not
// work). A lone message is therefore handed out at once instead of waiting
// for a batch to fill, and a backlog is still taken in full batches.
func (c *Consumer) Fetch(max int, wait time.Duration) (ds []Delivery, waited bool, err error) {
	ds = c.takeSpare(max)
	parts := c.parts()
	n := len(parts)
	if n == 0 {
		if len(ds) > 0 {
			return ds, false, nil // never deliveries and an error: the caller would drop them
		}
		return nil, false, fmt.Errorf("queue: fetch: no mail stream's consumer can be reached")
	}
	start := int(c.next.Add(1)) % n
	for i := 0; i < n && len(ds) < max; i++ {
		jc := parts[(start+i)%n]
		batch, err := jc.FetchNoWait(max - len(ds))
		if err == nil {
			var got []Delivery
			got, err = c.collect(batch)
			ds = append(ds, got...)
		}
		if err != nil && len(ds) == 0 && !c.lenient(jc, err) {
			return nil, false, fmt.Errorf("queue: fetch: %w", err)
		}
		// With some mail in hand, an error waits for the next fetch.
	}
	if len(ds) > 0 {
		return ds, false, nil
	}
	if n == 1 {
		batch, err := parts[0].Fetch(1, jetstream.FetchMaxWait(wait))
		if err != nil {
			return nil, true, fmt.Errorf("queue: fetch: %w", err)
		}
		ds, err := c.collect(batch)
		if err != nil && len(ds) == 0 {
			return nil, true, fmt.Errorf("queue: fetch: %w", err)
		}
		return ds, true, nil
	}
	ds, waited, err = c.await(parts, wait)
	if len(ds) > max {
		c.mu.Lock()
		c.spare = append(c.spare, ds[max:]...)
		c.mu.Unlock()
		ds = ds[:max]
	}
	return ds, waited, err
}

// takeSpare takes up to max of the deliveries an earlier wait brought
// beyond its max.
func (c *Consumer) takeSpare(max int) []Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := min(max, len(c.spare))
	ds := slices.Clone(c.spare[:k])
	c.spare = slices.Delete(c.spare, 0, k)
	return ds
}

// await waits for mail on every partition at once, in rounds of at most
// waitRound, until some arrived or wait has passed. A round ends only when
// every partition's pull has: a message delivered to a pull nobody reads
// any more would sit out its ack wait before it came again.
func (c *Consumer) await(parts []jetstream.Consumer, wait time.Duration) ([]Delivery, bool, error) {
	deadline := time.Now().Add(wait)
	for {
		round := min(waitRound, time.Until(deadline))
		if round <= 0 {
			return nil, true, nil
		}
		var (
			mu   sync.Mutex
			ds   []Delivery
			errs []error
			wg   sync.WaitGroup
		)
		for _, jc := range parts {
			wg.Go(func() {
				batch, err := jc.Fetch(1, jetstream.FetchMaxWait(round))
				var got []Delivery
				if err == nil {
					got, err = c.collect(batch)
				}
				mu.Lock()
				defer mu.Unlock()
				ds = append(ds, got...)
				if err != nil && !c.lenient(jc, err) {
					errs = append(errs, err)
				}
			})
		}
		wg.Wait()
		if len(ds) > 0 {
			return ds, true, nil
		}
		if len(errs) > 0 {
			return nil, true, fmt.Errorf("queue: fetch: %w", errors.Join(errs...))
		}
	}
}

// collect reads a pull's messages, and the error that ended it early (the
// consumer or its leader gone, heartbeats missed): a pull that ends with no
// messages and an error is not an idle queue.
func (c *Consumer) collect(batch jetstream.MessageBatch) ([]Delivery, error) {
	var ds []Delivery
	for m := range batch.Messages() {
		ds = append(ds, c.q.delivery(m))
	}
	return ds, batch.Error()
}

// delivery is a Delivery on a JetStream message.
type delivery struct {
	q      *Queue
	m      jetstream.Msg
	msg    *mail.Message
	err    error
	n      uint64
	cutoff int
}

func (q *Queue) delivery(m jetstream.Msg) *delivery {
	d := &delivery{q: q, m: m, n: 1, cutoff: q.cfg.MaxDeliver}
	if md, err := m.Metadata(); err == nil {
		d.n = md.NumDelivered
	}
	d.msg, d.err = decode(m)
	return d
}

func (d *delivery) Message() (*mail.Message, error) { return d.msg, d.err }

func (d *delivery) Attempt() (n, last int) { return int(min(d.n, 1<<31-1)), d.cutoff }

func (d *delivery) Ack() error { return d.m.Ack() }

func (d *delivery) Retry(delay time.Duration) error { return d.m.NakWithDelay(delay) }

func (d *delivery) Hold() error { return d.m.InProgress() }

func (d *delivery) GiveUp(ctx context.Context, reason string) error {
	if err := d.q.deadLetter(ctx, d.m, reason); err != nil {
		return err
	}
	if err := d.m.TermWithReason(reason); err != nil {
		// The copy is made; the original comes back after the ack wait,
		// and giving it up again leaves one copy (the dead stream's
		// duplicate window).
		d.q.log.Warn("queue: terminate after dead-letter failed; the copy in the dead-letter stream is deduplicated", "err", err)
	}
	return nil
}
