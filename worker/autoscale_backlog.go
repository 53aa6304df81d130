package worker

import (
	"context"
	"time"

	"github.com/levee-mail/levee/queue"
)

// StatusReader is the part of *queue.Queue that QueueBacklog reads.
type StatusReader interface {
	Status(ctx context.Context) (queue.Status, error)
}

// QueueBacklog reads the backlog from the queue's status: messages the
// workers' consumer has yet to deliver plus those delivered and not yet
// acknowledged, and the age of the oldest message in the stream. An error
// (the consumer is missing, the server unreachable) reaches the autoscaler,
// which then holds concurrency rather than guess.
func QueueBacklog(q StatusReader) Backlog { return queueBacklog{q} }

type queueBacklog struct{ q StatusReader }

func (b queueBacklog) Backlog(ctx context.Context) (uint64, time.Duration, error) {
	st, err := b.q.Status(ctx)
	if err != nil {
		return 0, 0, err
	}
	return st.Consumer.NumPending + uint64(max(st.Consumer.NumAckPending, 0)), st.OldestMessageAge, nil
}
