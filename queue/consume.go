package queue

import (
	"context"
	"fmt"
	"time"

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

// Consumer hands out the messages of the workers' durable consumer as
// Deliveries. It is safe for concurrent use by many delivery loops.
type Consumer struct {
	q *Queue
	c jetstream.Consumer
}

// Consumer returns the workers' consumer.
func (q *Queue) Consumer(ctx context.Context) (*Consumer, error) {
	c, err := q.js.Consumer(ctx, q.cfg.Stream, q.cfg.Durable)
	if err != nil {
		return nil, fmt.Errorf("queue: consumer %s: %w", q.cfg.Durable, err)
	}
	return &Consumer{q: q, c: c}, nil
}

// Fetch takes what is queued right now, up to max; only when nothing is
// does it wait, up to wait, for the first message to arrive, and then says
// it waited (that time was idle, not work). A lone message is therefore
// handed out at once instead of waiting for a batch to fill, and a backlog
// is still taken in full batches.
func (c *Consumer) Fetch(max int, wait time.Duration) (ds []Delivery, waited bool, err error) {
	batch, err := c.c.FetchNoWait(max)
	if err != nil {
		return nil, false, fmt.Errorf("queue: fetch: %w", err)
	}
	if ds = c.collect(batch); len(ds) > 0 {
		return ds, false, nil
	}
	batch, err = c.c.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, true, fmt.Errorf("queue: fetch: %w", err)
	}
	return c.collect(batch), true, nil
}

func (c *Consumer) collect(batch jetstream.MessageBatch) []Delivery {
	var ds []Delivery
	for m := range batch.Messages() {
		ds = append(ds, c.q.delivery(m))
	}
	return ds
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
