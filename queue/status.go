package queue

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Status is the queue's state for operators (web /api/v1/queue, `levee queue
// status`). Durations are nanoseconds in JSON, as in the JetStream API.
type Status struct {
	Stream   string `json:"stream"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// FirstSeq and LastSeq are the stream's sequence range: LastSeq counts
	// every message ever accepted, and LastSeq-Messages those removed
	// (stored, or dead-lettered), which is what Rates differentiates.
	FirstSeq uint64       `json:"first_seq"`
	LastSeq  uint64       `json:"last_seq"`
	Limits   StreamLimits `json:"limits"`
	Fill     Fill         `json:"fill"`
	Consumer ConsumerStat `json:"consumer"`
	// OldestMessageAge is the age of the first message in the stream (from
	// its FirstTime); 0 when the stream is empty.
	OldestMessageAge time.Duration `json:"oldest_message_age"`
	DeadStream       string        `json:"dead_stream"`
	DeadLetters      uint64        `json:"dead_letters"`
	// TopDomains are the recipient domains with the most queued mail.
	TopDomains []DomainCount `json:"top_domains"`
	// Rates are zero unless the status came with a previous sample.
	Rates Rates `json:"rates"`
	// Workers and SMTP add up what the Levee processes that answered the
	// stats request reported (Processes).
	Workers   WorkerTotals   `json:"workers"`
	SMTP      SMTPTotals     `json:"smtp"`
	Processes []ProcessStats `json:"processes"`
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
	// PerDomainMaxMsgs is the per-recipient-domain cap; 0 means none.
	PerDomainMaxMsgs int64 `json:"per_domain_max_msgs"`
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

// Status reads the queue's own figures from the server: the stream, its
// consumer and the dead stream, without the per-domain counts and process
// stats of Admin.Status, so that it is cheap to poll (the autoscaler does).
func (q *Queue) Status(ctx context.Context) (Status, error) {
	st, _, err := q.admin.basicStatus(ctx)
	return st, err
}

func (a *Admin) statusFrom(si *jetstream.StreamInfo, ci *jetstream.ConsumerInfo, di *jetstream.StreamInfo, now time.Time) Status {
	st := Status{
		Stream:     si.Config.Name,
		Messages:   si.State.Msgs,
		Bytes:      si.State.Bytes,
		FirstSeq:   si.State.FirstSeq,
		LastSeq:    si.State.LastSeq,
		Limits:     limitsOf(si.Config),
		Fill:       fillOf(si),
		DeadStream: a.cfg.DeadStream,
		SyncAlways: a.cfg.SyncAlways,
		Embedded:   a.embedded,
		At:         now,
		TopDomains: []DomainCount{},
		Processes:  []ProcessStats{},
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
	si, err := q.admin.streamInfo(ctx, q.cfg.Stream)
	if err != nil {
		q.metrics.up.Set(0)
		q.log.Debug("queue: status refresh failed", "err", err)
		return
	}
	q.metrics.up.Set(1)
	q.liftStaleFreeze(ctx, si)
	si = q.admin.withoutFreeze(si)
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
	if ci, err := q.admin.consumerInfo(ctx); err == nil {
		m.pending.Set(float64(ci.NumPending))
		m.ackPending.Set(float64(ci.NumAckPending))
		m.redelivered.Set(float64(ci.NumRedelivered))
	}
	if di, err := q.admin.streamInfo(ctx, q.cfg.DeadStream); err == nil {
		m.deadLetters.Set(float64(di.State.Msgs))
	}
}

// UpdateLimits changes the mail stream's limits live (see
// Admin.UpdateLimits).
func (q *Queue) UpdateLimits(ctx context.Context, l Limits) (LimitsUpdate, error) {
	return q.admin.UpdateLimits(ctx, l)
}
