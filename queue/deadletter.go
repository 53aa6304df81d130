package queue

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// deadLetter copies m (body and Levee headers) to the dead stream with the
// reason and returns once the copy is acknowledged; GiveUp then terminates
// the original. It is idempotent within the
// dead stream's duplicate window (DuplicateWindow): the copy's Nats-Msg-Id
// is the original's (or its stream position, for a message without one), so
// a worker that crashes between DeadLetter and Term and dead-letters the
// redelivery again leaves one copy. JetStream control headers (Nats-*) of
// the original are not copied; the original's subject, stream sequence and
// delivery count are recorded in Levee-Dead-* headers.
func (q *Queue) deadLetter(ctx context.Context, m jetstream.Msg, reason string) error {
	h := nats.Header{}
	for k, vs := range m.Headers() {
		// JetStream control headers (batch markers, expectations, rollups)
		// would be acted on again by the dead stream: keep only ours.
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		h[k] = append([]string(nil), vs...)
	}
	id := m.Headers().Get(HeaderMsgID)
	var stream, seq, delivered string
	if md, err := m.Metadata(); err == nil {
		stream = md.Stream
		seq = strconv.FormatUint(md.Sequence.Stream, 10)
		delivered = strconv.FormatUint(md.NumDelivered, 10)
		if id == "" {
			id = "seq:" + md.Stream + ":" + seq
		}
	}
	if id == "" {
		// Neither an ID nor metadata (not a JetStream message): without a
		// stable identity a retry could not be recognised.
		return fmt.Errorf("queue: dead-letter: message has neither %s nor JetStream metadata", HeaderMsgID)
	}
	h.Set(HeaderMsgID, id)
	h.Set(headerExpStream, q.cfg.DeadStream)
	h.Set(HeaderDeadReason, headerValue(reason))
	h.Set(HeaderDeadAt, time.Now().UTC().Format(time.RFC3339Nano))
	h.Set(HeaderDeadSubject, headerValue(m.Subject()))
	if stream != "" {
		h.Set(HeaderDeadStream, stream)
		h.Set(HeaderDeadSeq, seq)
		h.Set(HeaderDeadDeliveries, delivered)
	}
	subject := q.cfg.DeadSubjectPrefix + "._"
	if domain := q.cfg.DomainOf(m.Subject()); domain != "" {
		subject = q.cfg.DeadSubjectPrefix + "." + domain
	}
	ctx, cancel := context.WithTimeout(ctx, q.cfg.PublishTimeout)
	defer cancel()
	if _, err := q.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: m.Data()}); err != nil {
		return deadLetterError(id, err)
	}
	if q.groupSync != nil {
		// The original is deleted next (Term): the copy must be on disk
		// first, or a power cut could keep the deletion and lose the copy.
		if err := q.groupSync.wait(ctx); err != nil {
			return deadLetterError(id, fmt.Errorf("sync to disk: %w", err))
		}
	}
	return nil
}
