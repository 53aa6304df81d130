package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// deliverSQL stores a whole batch in one statement. Each input is an
// array with one element per message (or per link, per attachment); unnest
// turns the arrays back into rows.
//
//   - new inserts the messages in id order (encode sorts the arrays; ORDER
//     BY the ordinality keeps that order without sorting wide rows), so
//     that concurrent batches holding overlapping ids wait for each other
//     in one order and cannot deadlock. ON CONFLICT DO NOTHING leaves a
//     stored message as it is, and RETURNING names only the messages this
//     statement inserted. A message another transaction is inserting at the
//     same moment makes this one wait for that commit, so exactly one of
//     them reports it new.
//   - stored_at is one clock reading per statement (at least the floor
//     $1 + 1µs) plus the message's position in the call ($19), in
//     microseconds: strictly increasing within a batch, in the batch's (the
//     queue's) order.
//   - links, counters and attachments are written for new messages only;
//     the counters in address order, the second lock order every batch
//     follows. PostgreSQL runs the data-modifying CTEs to completion even
//     though the final SELECT reads only new.
const deliverSQL = `
WITH clock AS MATERIALIZED (
	SELECT GREATEST(clock_timestamp(), $1::timestamptz + interval '1 microsecond') AS base
), input AS (
	SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
		$8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::text[], $13::text[], $14::text[],
		$15::text[], $16::integer[], $17::bigint[], $18::bytea[], $19::integer[]) WITH ORDINALITY
		AS u(id, envelope_from, envelope_to, remote_addr, helo, received_at, subject, from_header, message_id,
			date, text_body, html_body, headers, warnings, attachment_count, size, raw, pos, ord)
), new AS (
	INSERT INTO messages (id, envelope_from, envelope_to, remote_addr, helo, received_at, subject, from_header,
		message_id, date, text_body, html_body, headers, warnings, attachment_count, size, raw, stored_at)
	SELECT i.id, i.envelope_from, i.envelope_to::jsonb, i.remote_addr, i.helo, i.received_at, i.subject,
		i.from_header, i.message_id, i.date, i.text_body, i.html_body, i.headers::jsonb, i.warnings::jsonb,
		i.attachment_count, i.size, i.raw, c.base + i.pos * interval '1 microsecond'
	FROM input AS i CROSS JOIN clock AS c
	ORDER BY i.ord
	ON CONFLICT (id) DO NOTHING
	RETURNING id, stored_at
), links AS MATERIALIZED (
	SELECT l.address, n.stored_at, n.id
	FROM unnest($20::text[], $21::text[]) AS l(address, message_id)
	JOIN new AS n ON n.id = l.message_id
), counters AS (
	INSERT INTO mailboxes (address, messages, latest_at)
	SELECT address, count(*), max(stored_at) FROM links GROUP BY address ORDER BY address
	ON CONFLICT (address) DO UPDATE
	SET messages = mailboxes.messages + excluded.messages,
		latest_at = GREATEST(mailboxes.latest_at, excluded.latest_at)
), linked AS (
	INSERT INTO mailbox_messages (address, stored_at, message_id)
	SELECT address, stored_at, id FROM links
), attached AS (
	INSERT INTO attachments (message_id, idx, filename, content_type, content_id, size, content)
	SELECT a.message_id, a.idx, a.filename, a.content_type, a.content_id, a.size, a.content
	FROM unnest($22::text[], $23::integer[], $24::text[], $25::text[], $26::text[], $27::bigint[], $28::bytea[])
		AS a(message_id, idx, filename, content_type, content_id, size, content)
	JOIN new AS n ON n.id = a.message_id
)
SELECT id, stored_at FROM new`

// batch holds a Deliver call's messages as deliverSQL's column arrays.
type batch struct {
	// Messages: the first occurrence of each id, sorted by id.
	id, envFrom, envTo, remoteAddr, helo []string
	receivedAt                           []pgtype.Timestamptz
	subject, from, messageID             []string
	date                                 []pgtype.Timestamptz
	text, html, headers, warnings        []string
	attachments                          []int32
	size                                 []int64
	raw                                  [][]byte
	pos                                  []int32 // position in the call
	// Links: one per message and distinct case-folded address.
	linkAddr, linkID []string
	// Attachments' metadata and content.
	attID                    []string
	attIdx                   []int32
	attName, attType, attCID []string
	attSize                  []int64
	attContent               [][]byte

	firstAt map[string]int // id -> position of its first occurrence
}

// encode validates the whole batch first (nothing is written if one message
// is unusable) and cleans text for storage before any connection is taken.
func encode(msgs []*mail.Message) (*batch, error) {
	b := &batch{firstAt: make(map[string]int, len(msgs))}
	var unique []int
	for i, m := range msgs {
		switch {
		case m == nil:
			return nil, fmt.Errorf("postgres: deliver: message %d is nil: %w", i, store.ErrInvalid)
		case m.ID == "":
			return nil, fmt.Errorf("postgres: deliver: message %d has no ID: %w", i, store.ErrInvalid)
		case !storable(m.ID):
			return nil, fmt.Errorf("postgres: deliver: message %d: ID %q is not UTF-8 text without NUL bytes: %w", i, m.ID, store.ErrInvalid)
		case m.Parsed == nil:
			return nil, fmt.Errorf("postgres: deliver: message %s is not parsed: %w", m.ID, store.ErrInvalid)
		}
		if _, dup := b.firstAt[m.ID]; !dup {
			b.firstAt[m.ID] = i
			unique = append(unique, i)
		}
	}
	slices.SortFunc(unique, func(x, y int) int { return strings.Compare(msgs[x].ID, msgs[y].ID) })

	for _, i := range unique {
		m := msgs[i]
		p := m.Parsed
		b.id = append(b.id, m.ID)
		b.envFrom = append(b.envFrom, clean(m.Envelope.From))
		b.envTo = append(b.envTo, jsonStrings(m.Envelope.To))
		b.remoteAddr = append(b.remoteAddr, clean(m.Envelope.RemoteAddr))
		b.helo = append(b.helo, clean(m.Envelope.Helo))
		b.receivedAt = append(b.receivedAt, timestamp(m.Envelope.ReceivedAt))
		b.subject = append(b.subject, clean(p.Subject))
		b.from = append(b.from, clean(p.From))
		b.messageID = append(b.messageID, clean(p.MessageID))
		b.date = append(b.date, timestamp(p.Date))
		b.text = append(b.text, clean(p.Text))
		b.html = append(b.html, clean(p.HTML))
		b.headers = append(b.headers, jsonHeaders(p.Headers))
		b.warnings = append(b.warnings, jsonStrings(p.Warnings))
		b.attachments = append(b.attachments, int32(len(p.Attachments)))
		b.size = append(b.size, int64(len(m.Raw)))
		b.raw = append(b.raw, nonNil(m.Raw))
		b.pos = append(b.pos, int32(i))

		seen := map[string]bool{}
		for _, to := range m.Envelope.To {
			addr := addressKey(to)
			if addr != "" && !seen[addr] {
				seen[addr] = true
				b.linkAddr = append(b.linkAddr, addr)
				b.linkID = append(b.linkID, m.ID)
			}
		}
		for j, a := range p.Attachments {
			b.attID = append(b.attID, m.ID)
			b.attIdx = append(b.attIdx, int32(j))
			b.attName = append(b.attName, clean(a.Filename))
			b.attType = append(b.attType, clean(a.ContentType))
			b.attCID = append(b.attCID, clean(a.ContentID))
			b.attSize = append(b.attSize, a.Size)
			b.attContent = append(b.attContent, nonNil(a.Content))
		}
	}
	return b, nil
}

// args are deliverSQL's parameters.
func (b *batch) args(floor int64) []any {
	return []any{time.UnixMicro(floor),
		b.id, b.envFrom, b.envTo, b.remoteAddr, b.helo, b.receivedAt, b.subject, b.from, b.messageID, b.date,
		b.text, b.html, b.headers, b.warnings, b.attachments, b.size, b.raw, b.pos,
		b.linkAddr, b.linkID,
		b.attID, b.attIdx, b.attName, b.attType, b.attCID, b.attSize, b.attContent}
}

// durableSQL makes this transaction's commit wait for the WAL flush if the
// session would not (synchronous_commit = off as a server, database or role
// default): the worker acks a message to JetStream once Deliver returns,
// and JetStream then forgets it, so a commit a crash could undo would lose
// acknowledged mail. Stronger levels (remote_apply, ...) are kept. SET LOCAL
// rather than a connection parameter, which PgBouncer would refuse.
const durableSQL = `SELECT set_config('synchronous_commit', 'on', true) WHERE current_setting('synchronous_commit') = 'off'`

// Deliver stores msgs in one transaction, sent with its BEGIN and COMMIT
// as one pipelined batch: one round trip per call, whatever its size. It
// returns once the commit is flushed.
func (s *Store) Deliver(ctx context.Context, msgs []*mail.Message) ([]store.DeliveryResult, error) {
	if len(msgs) == 0 {
		return []store.DeliveryResult{}, nil
	}
	b, err := encode(msgs)
	if err != nil {
		return nil, err
	}
	inserted, latest, err := s.deliverTx(ctx, b)
	if err != nil {
		return nil, wrap(ctx, "deliver", err)
	}
	s.raiseFloor(latest)

	results := make([]store.DeliveryResult, len(msgs))
	for i, m := range msgs {
		results[i] = store.DeliveryResult{ID: m.ID, Duplicate: !inserted[m.ID] || b.firstAt[m.ID] != i}
	}
	return results, nil
}

// deliverTx runs the batch and returns the ids it inserted and their latest
// stored_at (µs). A failure anywhere skips the rest of the pipeline, COMMIT
// included, and the server rolls the transaction back; pgxpool closes a
// connection it gets back inside a transaction.
func (s *Store) deliverTx(ctx context.Context, b *batch) (inserted map[string]bool, latest int64, err error) {
	pb := &pgx.Batch{}
	pb.Queue("BEGIN")
	pb.Queue(durableSQL)
	pb.Queue(deliverSQL, b.args(s.floor.Load())...)
	pb.Queue("COMMIT")
	br := s.pool.SendBatch(ctx, pb)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for range 2 { // BEGIN, durableSQL
		if _, err := br.Exec(); err != nil {
			return nil, 0, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, 0, err
	}
	inserted = make(map[string]bool, len(b.id))
	var id string
	var at time.Time
	for rows.Next() {
		if err := rows.Scan(&id, &at); err != nil {
			rows.Close()
			return nil, 0, err
		}
		inserted[id] = true
		latest = max(latest, at.UnixMicro())
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	if _, err := br.Exec(); err != nil { // COMMIT
		return nil, 0, fmt.Errorf("commit: %w", err)
	}
	return inserted, latest, nil
}
