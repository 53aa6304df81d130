package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Fill is the last measured fill ratio, max(msgs/max_msgs, bytes/max_bytes),
// refreshed in the background (every monitorInterval and after a publish
// was refused as full); 0 before the first refresh. It costs no I/O, so the
// receiver can consult it for every connection.
func (q *Queue) Fill() float64 { return q.fill.Load() }

// FillOf is a stream's usage against its limits as the server has them
// (which an operator may have changed since Open), ignoring unlimited ones:
// 1 is at the limit, above 1 after a limit was lowered below usage.
func FillOf(si *jetstream.StreamInfo) (messages, bytes float64) {
	if si.Config.MaxMsgs > 0 {
		messages = float64(si.State.Msgs) / float64(si.Config.MaxMsgs)
	}
	if si.Config.MaxBytes > 0 {
		bytes = float64(si.State.Bytes) / float64(si.Config.MaxBytes)
	}
	return messages, bytes
}

// Backlog is the mail waiting for the workers: messages their consumer has
// yet to deliver plus those delivered and not yet acknowledged, and the age
// of the oldest message in the stream. Two info requests, cheap enough for
// the autoscaler to poll; an error (the consumer is missing, the server
// unreachable) lets it hold concurrency rather than guess.
func (q *Queue) Backlog(ctx context.Context) (messages uint64, oldest time.Duration, err error) {
	c, err := q.js.Consumer(ctx, q.cfg.Stream, q.cfg.Durable)
	if err != nil {
		return 0, 0, fmt.Errorf("queue: consumer info %s: %w", q.cfg.Durable, err)
	}
	s, err := q.js.Stream(ctx, q.cfg.Stream)
	if err != nil {
		return 0, 0, fmt.Errorf("queue: stream info %s: %w", q.cfg.Stream, err)
	}
	ci, si := c.CachedInfo(), s.CachedInfo()
	return ci.NumPending + uint64(max(ci.NumAckPending, 0)), oldestAge(si, time.Now()), nil
}

// oldestAge is the age of the stream's first message, 0 when it is empty.
func oldestAge(si *jetstream.StreamInfo, now time.Time) time.Duration {
	if si.State.Msgs == 0 || si.State.FirstTime.IsZero() {
		return 0
	}
	return max(0, now.Sub(si.State.FirstTime))
}

const monitorInterval = 500 * time.Millisecond

// monitor refreshes Fill and the gauges.
func (q *Queue) monitor(ctx context.Context) {
	defer q.monWG.Done()
	t := time.NewTicker(monitorInterval)
	defer t.Stop()
	for {
		q.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-q.kick:
		}
	}
}

// Refresh makes the monitor read the stream now rather than at its next
// tick: after a limit change, so that Fill (and the receiver's watermark)
// follows at once.
func (q *Queue) Refresh() { q.kickMonitor() }

func (q *Queue) kickMonitor() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *Queue) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := q.js.Stream(ctx, q.cfg.Stream)
	if err != nil {
		q.metrics.up.Set(0)
		q.log.Debug("queue: status refresh failed", "err", err)
		return
	}
	q.metrics.up.Set(1)
	si := s.CachedInfo()
	m := q.metrics
	m.messages.Set(float64(si.State.Msgs))
	m.bytes.Set(float64(si.State.Bytes))
	m.oldestAge.Set(oldestAge(si, time.Now()).Seconds())
	// A limit change's intake freeze sets max_msgs 1 for a moment: the fill
	// and the drift keep their last values through it.
	if _, frozen := si.Config.Metadata[MetadataIntakeFreeze]; !frozen {
		msgs, bytes := FillOf(si)
		q.fill.Store(max(msgs, bytes))
		m.fill.WithLabelValues("messages").Set(msgs)
		m.fill.WithLabelValues("bytes").Set(bytes)
		m.setDrift(q.cfg.Drift(si.Config))
	}
	if c, err := q.js.Consumer(ctx, q.cfg.Stream, q.cfg.Durable); err == nil {
		ci := c.CachedInfo()
		m.pending.Set(float64(ci.NumPending))
		m.ackPending.Set(float64(ci.NumAckPending))
		m.redelivered.Set(float64(ci.NumRedelivered))
	}
	if d, err := q.js.Stream(ctx, q.cfg.DeadStream); err == nil {
		m.deadLetters.Set(float64(d.CachedInfo().State.Msgs))
	}
}
