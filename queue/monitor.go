package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Fill is the last measured fill ratio, max(msgs/max_msgs, bytes/max_bytes)
// of the queue as a whole (its partitions' usage against their limits added
// up: hashing spreads mail evenly over them, and a message whose partition
// is full still gets its 452 from the stream), refreshed in the background (every monitorInterval and after a publish
// was refused as full); 0 before the first refresh. It costs no I/O, so the
// receiver can consult it for every connection.
func (q *Queue) Fill() float64 { return q.fill.Load() }

// Oldest is the age of the oldest queued message in any mail stream at the
// monitor's last refresh (0 when empty, or before the first): costs no I/O.
func (q *Queue) Oldest() time.Duration { return time.Duration(q.oldest.Load()) }

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

// Backlog is the mail waiting for the workers: messages their consumers
// have yet to deliver plus those delivered and not yet acknowledged, over
// every partition, and the age of the oldest queued message. Cheap enough
// for the autoscaler to poll (two info requests a partition); an error
// (a consumer is missing, the server unreachable) lets it hold concurrency
// rather than guess.
func (q *Queue) Backlog(ctx context.Context) (messages uint64, oldest time.Duration, err error) {
	now := time.Now()
	for _, p := range q.mailStreams() {
		// A stream of another layout deleted once drained holds nothing;
		// the monitor forgets it.
		deleted := func(err error) bool {
			if q.draining(p) && errors.Is(err, jetstream.ErrStreamNotFound) {
				q.kickMonitor()
				return true
			}
			return false
		}
		c, err := q.js.Consumer(ctx, p.Stream, q.cfg.Durable)
		if deleted(err) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("queue: consumer info %s on %s: %w", q.cfg.Durable, p.Stream, err)
		}
		s, err := q.js.Stream(ctx, p.Stream)
		if deleted(err) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("queue: stream info %s: %w", p.Stream, err)
		}
		ci := c.CachedInfo()
		messages += ci.NumPending + uint64(max(ci.NumAckPending, 0))
		oldest = max(oldest, oldestAge(s.CachedInfo(), now))
	}
	return messages, oldest, nil
}

// oldestAge is the age of the stream's first message, 0 when it is empty.
func oldestAge(si *jetstream.StreamInfo, now time.Time) time.Duration {
	if si.State.Msgs == 0 || si.State.FirstTime.IsZero() {
		return 0
	}
	return max(0, now.Sub(si.State.FirstTime))
}

const monitorInterval = 500 * time.Millisecond

// discoverEvery is how often the monitor looks for mail streams of another
// layout that appeared (a process started with another queue.partitions).
var discoverEvery = 5 * time.Second

// monitor refreshes Fill and the gauges.
func (q *Queue) monitor(ctx context.Context) {
	defer q.monWG.Done()
	t := time.NewTicker(monitorInterval)
	defer t.Stop()
	var discovered time.Time
	for {
		if time.Since(discovered) >= discoverEvery {
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := q.discoverStreams(dctx); err != nil {
				q.log.Debug("queue: looking for mail streams of another layout failed", "err", err)
			}
			cancel()
			discovered = time.Now()
		}
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
	m := q.metrics
	if q.srv != nil {
		q.watchStore()
	}
	var (
		msgs, bytes, pending, ackPending, redelivered uint64
		layoutMsgs, layoutBytes                       uint64
		oldest                                        time.Duration
		layout                                        []jetstream.StreamConfig
		frozen                                        bool
		now                                           = time.Now()
		gone                                          []Partition
	)
	defer func() {
		if len(gone) > 0 {
			q.forgetStreams(gone)
		}
	}()
	for i, p := range q.mailStreams() {
		s, err := q.js.Stream(ctx, p.Stream)
		if i >= len(q.layout) && errors.Is(err, jetstream.ErrStreamNotFound) {
			gone = append(gone, p) // deleted once drained
			continue
		}
		if err != nil {
			m.up.Set(0)
			q.log.Debug("queue: status refresh failed", "stream", p.Stream, "err", err)
			return
		}
		si := s.CachedInfo()
		if i >= len(q.layout) && q.removeDrained(ctx, si) {
			gone = append(gone, p)
			continue
		}
		m.partition.WithLabelValues(p.Stream).Set(float64(si.State.Msgs))
		msgs += si.State.Msgs
		bytes += si.State.Bytes
		oldest = max(oldest, oldestAge(si, now))
		if i < len(q.layout) {
			layoutMsgs += si.State.Msgs
			layoutBytes += si.State.Bytes
			layout = append(layout, si.Config)
			_, f := si.Config.Metadata[MetadataIntakeFreeze]
			frozen = frozen || f
		}
		if c, err := q.js.Consumer(ctx, p.Stream, q.cfg.Durable); err == nil {
			ci := c.CachedInfo()
			pending += ci.NumPending
			ackPending += uint64(max(ci.NumAckPending, 0))
			redelivered += uint64(max(ci.NumRedelivered, 0))
		}
	}
	m.up.Set(1)
	if q.fault.Load() != nil {
		m.up.Set(0)
	}
	m.messages.Set(float64(msgs))
	m.bytes.Set(float64(bytes))
	m.oldestAge.Set(oldest.Seconds())
	q.oldest.Store(int64(oldest))
	m.pending.Set(float64(pending))
	m.ackPending.Set(float64(ackPending))
	m.redelivered.Set(float64(redelivered))
	// A limit change's intake freeze sets max_msgs 1 for a moment: the fill
	// and the drift keep their last values through it.
	if !frozen {
		total := SumLimits(layout)
		fillMsgs, fillBytes := FillOf(&jetstream.StreamInfo{Config: total, State: jetstream.StreamState{Msgs: layoutMsgs, Bytes: layoutBytes}})
		q.fill.Store(max(fillMsgs, fillBytes))
		m.fill.WithLabelValues("messages").Set(fillMsgs)
		m.fill.WithLabelValues("bytes").Set(fillBytes)
		m.setDrift(q.cfg.Drift(total))
	}
	if d, err := q.js.Stream(ctx, q.cfg.DeadStream); err == nil {
		m.deadLetters.Set(float64(d.CachedInfo().State.Msgs))
	}
}

// removeDrained deletes a mail stream of another layout from the embedded
// server once it has been empty, with no new message, for drainedGrace as
// this monitor watched it, and says whether it did. Work-queue retention:
// empty means every message in it was stored and acknowledged. Left, an old
// layout's stream (an upgrade from Levee's earlier default of 4 partitions,
// a changed queue.partitions) would be read and listed for ever.
//
// Only a stream a start marked draining goes, and never on a cluster (a
// process of the old count may still publish there in a rolling change,
// operations.md). On the embedded server such a process could only be one
// connected to its client port; the grace lets it finish, and the delete
// cannot take mail it sent: the stream's subjects are retired first, so
// nothing more can land in it, and it is deleted only if it is still
// empty at the same sequence; otherwise its subjects come back.
func (q *Queue) removeDrained(ctx context.Context, si *jetstream.StreamInfo) bool {
	name := si.Config.Name
	if q.srv == nil || si.Config.Metadata[MetadataLayout] != layoutDraining {
		return false
	}
	if si.State.Msgs != 0 {
		delete(q.drained, name)
		return false
	}
	seen, ok := q.drained[name]
	if !ok || seen.lastSeq != si.State.LastSeq {
		q.drained[name] = drainedSince{at: time.Now(), lastSeq: si.State.LastSeq}
		return false
	}
	if time.Since(seen.at) < drainedGrace {
		return false
	}
	retired := si.Config
	retired.Subjects = []string{retiredSubject + "." + name}
	if _, err := q.js.UpdateStream(ctx, retired); err != nil {
		q.log.Debug("queue: retiring a drained mail stream of another layout failed", "stream", name, "err", err)
		return false
	}
	s, err := q.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		delete(q.drained, name)
		return true // deleted meanwhile
	}
	if err != nil {
		// Not checked, not deleted: the next refresh retires and checks
		// it again.
		q.log.Debug("queue: checking a retired mail stream of another layout failed", "stream", name, "err", err)
		return false
	}
	if now := s.CachedInfo().State; now.Msgs != 0 || now.LastSeq != seen.lastSeq {
		// Mail came in before the subjects went: keep draining it.
		delete(q.drained, name)
		if _, err := q.js.UpdateStream(ctx, si.Config); err != nil {
			q.log.Warn("queue: a mail stream of another layout got mail while being retired and could not take its subjects back; its mail is still drained", "stream", name, "err", err)
		}
		return false
	}
	if err := q.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		q.log.Debug("queue: deleting a drained mail stream of another layout failed", "stream", name, "err", err)
		return false
	}
	delete(q.drained, name)
	return true
}

// drainedSince is when a stream of another layout was first seen empty, at
// which last sequence.
type drainedSince struct {
	at      time.Time
	lastSeq uint64
}

// drainedGrace is how long a stream of another layout must stay empty,
// taking no mail, before removeDrained deletes it.
var drainedGrace = 10 * time.Minute

// retiredSubject prefixes the one subject a drained stream keeps while
// removeDrained checks it one last time: no publisher uses it.
const retiredSubject = "levee.retired"
