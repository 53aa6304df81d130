package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Status is the queue's state for operators (web /api/v1/queue, `levee queue
// status`). Durations are nanoseconds in JSON, as in the JetStream API.
type Status struct {
	Stream   string       `json:"stream"`
	Messages uint64       `json:"messages"`
	Bytes    uint64       `json:"bytes"`
	Limits   StreamLimits `json:"limits"`
	Fill     Fill         `json:"fill"`
	Consumer ConsumerStat `json:"consumer"`
	// OldestMessageAge is the age of the first message in the stream (from
	// its FirstTime); 0 when the stream is empty.
	OldestMessageAge time.Duration `json:"oldest_message_age"`
	DeadStream       string        `json:"dead_stream"`
	DeadLetters      uint64        `json:"dead_letters"`
	// SyncAlways is the configured fsync policy; it describes the embedded
	// server (Embedded), an external one has its own.
	SyncAlways bool      `json:"sync_always"`
	Embedded   bool      `json:"embedded"`
	At         time.Time `json:"at"`
}

// StreamLimits are the mail stream's limits as the server has them.
type StreamLimits struct {
	MaxMsgs         int64         `json:"max_msgs"`
	MaxBytes        int64         `json:"max_bytes"`
	MaxAge          time.Duration `json:"max_age"`
	MaxMsgSize      int32         `json:"max_msg_size"`
	Discard         string        `json:"discard"`
	DuplicateWindow time.Duration `json:"duplicate_window"`
	Replicas        int           `json:"replicas"`
}

// Fill is usage against each limit (0..1, or above 1 after a limit was
// lowered below current usage); Max is the larger, the one that refuses mail.
type Fill struct {
	Messages float64 `json:"messages"`
	Bytes    float64 `json:"bytes"`
	Max      float64 `json:"max"`
}

// ConsumerStat is the workers' consumer.
type ConsumerStat struct {
	Name           string `json:"name"`
	NumPending     uint64 `json:"num_pending"`
	NumAckPending  int    `json:"num_ack_pending"`
	NumRedelivered int    `json:"num_redelivered"`
	NumWaiting     int    `json:"num_waiting"`
}

// Status reads fresh figures from the server (StreamInfo, ConsumerInfo and
// the dead stream's StreamInfo).
func (q *Queue) Status(ctx context.Context) (Status, error) {
	si, err := q.streamInfo(ctx, q.cfg.Stream)
	if err != nil {
		return Status{}, err
	}
	ci, err := q.consumerInfo(ctx)
	if err != nil {
		return Status{}, err
	}
	di, err := q.streamInfo(ctx, q.cfg.DeadStream)
	if err != nil {
		return Status{}, err
	}
	return q.statusFrom(si, ci, di, time.Now()), nil
}

func (q *Queue) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	s, err := q.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("queue: stream info %s: %w", name, err)
	}
	// Stream() already fetched the info; CachedInfo is that fresh copy.
	return s.CachedInfo(), nil
}

func (q *Queue) consumerInfo(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	c, err := q.js.Consumer(ctx, q.cfg.Stream, q.cfg.Durable)
	if err != nil {
		return nil, fmt.Errorf("queue: consumer info %s: %w", q.cfg.Durable, err)
	}
	return c.CachedInfo(), nil
}

func (q *Queue) statusFrom(si *jetstream.StreamInfo, ci *jetstream.ConsumerInfo, di *jetstream.StreamInfo, now time.Time) Status {
	sc := si.Config
	st := Status{
		Stream:   sc.Name,
		Messages: si.State.Msgs,
		Bytes:    si.State.Bytes,
		Limits: StreamLimits{
			MaxMsgs:         sc.MaxMsgs,
			MaxBytes:        sc.MaxBytes,
			MaxAge:          sc.MaxAge,
			MaxMsgSize:      sc.MaxMsgSize,
			Discard:         discardName(sc.Discard),
			DuplicateWindow: sc.Duplicates,
			Replicas:        sc.Replicas,
		},
		Fill:       fillOf(si),
		DeadStream: q.cfg.DeadStream,
		SyncAlways: q.cfg.SyncAlways,
		Embedded:   q.srv != nil,
		At:         now,
	}
	if si.State.Msgs > 0 && !si.State.FirstTime.IsZero() {
		st.OldestMessageAge = max(0, now.Sub(si.State.FirstTime))
	}
	if ci != nil {
		st.Consumer = ConsumerStat{
			Name:           ci.Name,
			NumPending:     ci.NumPending,
			NumAckPending:  ci.NumAckPending,
			NumRedelivered: ci.NumRedelivered,
			NumWaiting:     ci.NumWaiting,
		}
	}
	if di != nil {
		st.DeadLetters = di.State.Msgs
	}
	return st
}

// fillOf computes usage against the limits the server has (which an
// operator may have changed since Open), ignoring unlimited ones.
func fillOf(si *jetstream.StreamInfo) Fill {
	var f Fill
	if si.Config.MaxMsgs > 0 {
		f.Messages = float64(si.State.Msgs) / float64(si.Config.MaxMsgs)
	}
	if si.Config.MaxBytes > 0 {
		f.Bytes = float64(si.State.Bytes) / float64(si.Config.MaxBytes)
	}
	f.Max = max(f.Messages, f.Bytes)
	return f
}

// Fill is the last measured fill ratio, max(msgs/max_msgs, bytes/max_bytes),
// refreshed in the background (every monitorInterval and after a publish
// was refused as full); 0 before the first refresh. It costs no I/O, so the
// receiver can consult it for every connection.
func (q *Queue) Fill() float64 { return q.fill.Load() }

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

func (q *Queue) kickMonitor() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *Queue) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	si, err := q.streamInfo(ctx, q.cfg.Stream)
	if err != nil {
		if ctx.Err() == nil {
			q.log.Debug("queue: status refresh failed", "err", err)
		}
		return
	}
	f := fillOf(si)
	q.fill.Store(f.Max)
	m := q.metrics
	m.messages.Set(float64(si.State.Msgs))
	m.bytes.Set(float64(si.State.Bytes))
	m.fill.WithLabelValues("messages").Set(f.Messages)
	m.fill.WithLabelValues("bytes").Set(f.Bytes)
	age := 0.0
	if si.State.Msgs > 0 && !si.State.FirstTime.IsZero() {
		age = max(0, time.Since(si.State.FirstTime).Seconds())
	}
	m.oldestAge.Set(age)
	if ci, err := q.consumerInfo(ctx); err == nil {
		m.pending.Set(float64(ci.NumPending))
		m.ackPending.Set(float64(ci.NumAckPending))
		m.redelivered.Set(float64(ci.NumRedelivered))
	}
	if di, err := q.streamInfo(ctx, q.cfg.DeadStream); err == nil {
		m.deadLetters.Set(float64(di.State.Msgs))
	}
}

// Limits are the stream limits an operator may change while Levee runs.
// A zero field leaves that limit as it is.
type Limits struct {
	MaxMsgs    int64         `json:"max_msgs,omitempty"`
	MaxBytes   int64         `json:"max_bytes,omitempty"`
	MaxAge     time.Duration `json:"max_age,omitempty"`
	MaxMsgSize int32         `json:"max_msg_size,omitempty"`
}

// UpdateLimits changes the mail stream's limits live: no restart, no
// message lost. Lowering a limit below current usage refuses new mail (4xx)
// until the workers drained below it; nothing queued is deleted, because the
// stream discards new mail, not old. It returns the limits now in force.
//
// The change is made on the server; the next Open applies the configured
// values again, so a permanent change belongs in the config as well.
func (q *Queue) UpdateLimits(ctx context.Context, l Limits) (StreamLimits, error) {
	s, err := q.js.Stream(ctx, q.cfg.Stream)
	if err != nil {
		return StreamLimits{}, fmt.Errorf("queue: update limits: %w", err)
	}
	sc := s.CachedInfo().Config
	if l.MaxMsgs != 0 {
		sc.MaxMsgs = l.MaxMsgs
	}
	if l.MaxBytes != 0 {
		sc.MaxBytes = l.MaxBytes
	}
	if l.MaxAge != 0 {
		sc.MaxAge = l.MaxAge
	}
	if l.MaxMsgSize != 0 {
		sc.MaxMsgSize = l.MaxMsgSize
	}
	switch {
	case sc.MaxMsgs < 1:
		return StreamLimits{}, fmt.Errorf("queue.max_msgs: must be > 0, got %d", sc.MaxMsgs)
	case sc.MaxBytes < 1:
		return StreamLimits{}, fmt.Errorf("queue.max_bytes: must be > 0, got %d", sc.MaxBytes)
	case sc.MaxAge <= 0 || sc.MaxAge < sc.Duplicates:
		return StreamLimits{}, fmt.Errorf("queue.max_age: must be >= queue.duplicate_window (%s), got %s", sc.Duplicates, sc.MaxAge)
	case sc.MaxMsgSize < 1024 || int64(sc.MaxMsgSize) > q.nc.MaxPayload():
		return StreamLimits{}, fmt.Errorf("queue.max_msg_size: must be between 1KiB and the server's max_payload (%d), got %d", q.nc.MaxPayload(), sc.MaxMsgSize)
	}
	s, err = q.js.UpdateStream(ctx, sc)
	if err != nil {
		return StreamLimits{}, fmt.Errorf("queue: update limits: %w", err)
	}
	q.log.Info("queue: limits updated", "max_msgs", sc.MaxMsgs, "max_bytes", sc.MaxBytes, "max_age", sc.MaxAge, "max_msg_size", sc.MaxMsgSize)
	q.kickMonitor()
	nc := s.CachedInfo().Config
	return StreamLimits{
		MaxMsgs: nc.MaxMsgs, MaxBytes: nc.MaxBytes, MaxAge: nc.MaxAge, MaxMsgSize: nc.MaxMsgSize,
		Discard: discardName(nc.Discard), DuplicateWindow: nc.Duplicates, Replicas: nc.Replicas,
	}, nil
}

// discardName spells the policy as the JetStream API does ("new", "old").
func discardName(d jetstream.DiscardPolicy) string {
	if d == jetstream.DiscardNew {
		return "new"
	}
	return "old"
}
