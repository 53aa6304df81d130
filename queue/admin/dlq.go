package admin

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetterInfo describes one message in the dead stream. Seq, its
// position there, is how an operator names it (`levee dlq show 7`).
type DeadLetterInfo struct {
	Seq            uint64    `json:"seq"`
	ID             string    `json:"id"`
	Subject        string    `json:"subject"`
	Reason         string    `json:"reason"`
	DeadAt         time.Time `json:"dead_at"`
	Deliveries     int       `json:"deliveries"`
	OriginalStream string    `json:"original_stream,omitempty"`
	OriginalSeq    uint64    `json:"original_seq,omitempty"`
	From           string    `json:"from"`
	To             []string  `json:"to"`
	ReceivedAt     time.Time `json:"received_at"`
	Size           int       `json:"size"`
}

// maxDeadList caps one DeadLetters page.
const maxDeadList = 1000

func (a *Admin) deadStream(ctx context.Context) (jetstream.Stream, error) {
	s, err := a.js.Stream(ctx, a.cfg.DeadStream)
	if err != nil {
		return nil, fmt.Errorf("admin: dead stream %s: %w", a.cfg.DeadStream, err)
	}
	return s, nil
}

// DeadLetters lists up to limit dead letters with a sequence above after,
// oldest first, and the number of dead letters in all.
func (a *Admin) DeadLetters(ctx context.Context, after uint64, limit int) ([]DeadLetterInfo, uint64, error) {
	if limit <= 0 || limit > maxDeadList {
		limit = maxDeadList
	}
	s, err := a.deadStream(ctx)
	if err != nil {
		return nil, 0, err
	}
	total := s.CachedInfo().State.Msgs
	out := []DeadLetterInfo{}
	if after >= s.CachedInfo().State.LastSeq {
		return out, total, nil
	}
	next := max(after+1, s.CachedInfo().State.FirstSeq)
	for len(out) < limit {
		// "Next for subject" from a sequence skips the holes that replays
		// and purges leave.
		m, err := s.GetMsg(ctx, next, jetstream.WithGetMsgSubject(a.cfg.DeadSubjectPrefix+".>"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("admin: dead letters: %w", err)
		}
		out = append(out, deadInfo(m))
		next = m.Sequence + 1
	}
	return out, total, nil
}

// DeadLetter returns one dead letter and its raw message.
func (a *Admin) DeadLetter(ctx context.Context, seq uint64) (DeadLetterInfo, []byte, error) {
	s, err := a.deadStream(ctx)
	if err != nil {
		return DeadLetterInfo{}, nil, err
	}
	m, err := a.getDead(ctx, s, seq)
	if err != nil {
		return DeadLetterInfo{}, nil, err
	}
	return deadInfo(m), m.Data, nil
}

func (a *Admin) getDead(ctx context.Context, s jetstream.Stream, seq uint64) (*jetstream.RawStreamMsg, error) {
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: no dead letter %d in %s", ErrNotFound, seq, a.cfg.DeadStream)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: dead letter %d: %w", seq, err)
	}
	return m, nil
}

func deadInfo(m *jetstream.RawStreamMsg) DeadLetterInfo {
	h := m.Header
	d := DeadLetterInfo{
		Seq:            m.Sequence,
		ID:             h.Get(queue.HeaderID),
		Subject:        h.Get(queue.HeaderDeadSubject),
		Reason:         h.Get(queue.HeaderDeadReason),
		OriginalStream: h.Get(queue.HeaderDeadStream),
		From:           h.Get(queue.HeaderMailFrom),
		To:             append([]string{}, h.Values(queue.HeaderRcptTo)...),
		Size:           len(m.Data),
	}
	if d.ID == "" {
		d.ID = h.Get(queue.HeaderMsgID)
	}
	d.DeadAt, _ = time.Parse(time.RFC3339Nano, h.Get(queue.HeaderDeadAt))
	d.ReceivedAt, _ = time.Parse(time.RFC3339Nano, h.Get(queue.HeaderReceivedAt))
	d.Deliveries, _ = strconv.Atoi(h.Get(queue.HeaderDeadDeliveries))
	d.OriginalSeq, _ = strconv.ParseUint(h.Get(queue.HeaderDeadSeq), 10, 64)
	return d
}

// Replay puts dead letter seq back on the mail stream for the workers and
// then removes it from the dead stream. It is delivered exactly once: the
// replay's Nats-Msg-Id is derived from seq, so a replay retried after a
// failure between the publish and the removal is a JetStream duplicate, and
// the store is idempotent by message ID (a message that was in fact stored
// before it was dead-lettered stays one row). A full queue refuses the
// replay with ErrQueueFull and the dead letter stays.
func (a *Admin) Replay(ctx context.Context, seq uint64) error {
	s, err := a.deadStream(ctx)
	if err != nil {
		return err
	}
	m, err := a.getDead(ctx, s, seq)
	if err != nil {
		return err
	}
	route, err := a.routing(ctx)
	if err != nil {
		return err
	}
	msg, err := a.replayMsg(route, m)
	if err != nil {
		return err
	}
	if _, err := a.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("admin: replay %d: %w: %w", seq, queue.Classify(err), err)
	}
	if a.durable != nil {
		// On disk before the dead letter goes: a power cut must not keep
		// the removal and lose the copy put back.
		if err := a.durable(ctx); err != nil {
			return fmt.Errorf("admin: replay %d: queued again, not yet on disk; the dead letter stays (a second replay is harmless): %w", seq, err)
		}
	}
	// A concurrent replay or purge may have removed it first: that is done.
	if err := a.deleteDead(ctx, s, seq); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("admin: replay %d: queued again, but not removed from %s (a second replay is harmless): %w", seq, a.cfg.DeadStream, err)
	}
	a.log.Info("admin: dead letter replayed", "seq", seq, "id", msg.Header.Get(queue.HeaderID))
	return nil
}

// replayMsg rebuilds the mail stream message from a dead letter: Levee's
// envelope headers, none of the dead-letter ones, and the original subject.
func (a *Admin) replayMsg(route queue.Config, m *jetstream.RawStreamMsg) (*nats.Msg, error) {
	id := m.Header.Get(queue.HeaderID)
	if id == "" {
		id = m.Header.Get(queue.HeaderMsgID)
	}
	if id == "" {
		return nil, fmt.Errorf("%w: dead letter %d has no message id", queue.ErrMalformed, m.Sequence)
	}
	h := nats.Header{}
	for k, vs := range m.Header {
		if strings.HasPrefix(k, "Levee-Dead-") || strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		h[k] = append([]string(nil), vs...)
	}
	h.Set(queue.HeaderID, id)
	h.Set(queue.HeaderMsgID, fmt.Sprintf("replay:%s:%d:%s", a.cfg.DeadStream, m.Sequence, id))
	// Back to the partition its id belongs to now (the layout may have
	// changed since it was queued), on its recipient domain's subject.
	p := route.Route(id)
	h.Set(jetstream.ExpectedStreamHeader, p.Stream)
	subject := p.Prefix + "._"
	if rest, ok := strings.CutPrefix(m.Subject, a.cfg.DeadSubjectPrefix+"."); ok && rest != "" {
		subject = p.Prefix + "." + rest
	}
	return &nats.Msg{Subject: subject, Header: h, Data: m.Data}, nil
}

// deleteDead removes dead letter seq; ErrNotFound when it is gone already.
// nats.go keeps only the text of the server's error for a failed delete, so
// "gone" is asked of the stream rather than read from the error.
func (a *Admin) deleteDead(ctx context.Context, s jetstream.Stream, seq uint64) error {
	err := s.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	if _, gerr := s.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("%w: no dead letter %d in %s", ErrNotFound, seq, a.cfg.DeadStream)
	}
	return err
}

// ReplayAll replays the dead letters there are when it starts, oldest
// first, and returns how many it replayed. Letters dead-lettered again
// while it runs (they get new sequences) wait for the next call, so that a
// message that fails at once cannot keep it going. A letter that cannot be
// replayed (no message id) is skipped and reported at the end; any other
// failure (a full queue, say) stops it.
func (a *Admin) ReplayAll(ctx context.Context) (int, error) {
	s, err := a.deadStream(ctx)
	if err != nil {
		return 0, err
	}
	last := s.CachedInfo().State.LastSeq
	n := 0
	var skipped []string
	var after uint64
	for after < last {
		page, _, err := a.DeadLetters(ctx, after, 100)
		if err != nil {
			return n, err
		}
		if len(page) == 0 {
			break
		}
		for _, d := range page {
			if d.Seq > last {
				break
			}
			after = d.Seq
			switch err := a.Replay(ctx, d.Seq); {
			case err == nil:
				n++
			case errors.Is(err, queue.ErrMalformed):
				skipped = append(skipped, strconv.FormatUint(d.Seq, 10))
			case errors.Is(err, ErrNotFound): // replayed or purged meanwhile
			default:
				return n, err
			}
		}
		if page[len(page)-1].Seq > last {
			break
		}
	}
	if len(skipped) > 0 {
		return n, fmt.Errorf("%w: %d dead letters cannot be replayed, they have no message id (seq %s); inspect them with levee dlq show",
			queue.ErrMalformed, len(skipped), strings.Join(skipped, ", "))
	}
	return n, nil
}

// Purge deletes dead letter seq for good.
func (a *Admin) Purge(ctx context.Context, seq uint64) error {
	s, err := a.deadStream(ctx)
	if err != nil {
		return err
	}
	// Asked first: deleting a sequence past the end fails with a store
	// error, not "not found".
	if _, err := a.getDead(ctx, s, seq); err != nil {
		return err
	}
	if err := a.deleteDead(ctx, s, seq); err != nil {
		if errors.Is(err, ErrNotFound) {
			return err
		}
		return fmt.Errorf("admin: purge dead letter %d: %w", seq, err)
	}
	a.log.Warn("admin: dead letter purged", "seq", seq)
	return nil
}

// PurgeAll deletes the dead letters there are when it is called and returns
// how many there were; letters dead-lettered meanwhile, which nobody has
// seen yet, stay.
func (a *Admin) PurgeAll(ctx context.Context) (uint64, error) {
	s, err := a.deadStream(ctx)
	if err != nil {
		return 0, err
	}
	st := s.CachedInfo().State
	n := st.Msgs
	if n == 0 {
		return 0, nil
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(st.LastSeq+1)); err != nil {
		return 0, fmt.Errorf("admin: purge dead letters: %w", err)
	}
	a.log.Warn("admin: dead letters purged", "count", n)
	return n, nil
}
