package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// Mailboxes reads the counters Deliver keeps, ordered by address.
func (s *Store) Mailboxes(ctx context.Context) ([]store.Mailbox, error) {
	rows, err := s.read.Query(ctx, `SELECT address, messages, latest_at FROM mailboxes ORDER BY address`)
	if err != nil {
		return nil, wrap(ctx, "mailboxes", err)
	}
	defer rows.Close()
	out := []store.Mailbox{}
	for rows.Next() {
		var b store.Mailbox
		var latest pgtype.Timestamptz
		if err := rows.Scan(&b.Address, &b.Messages, &latest); err != nil {
			return nil, wrap(ctx, "mailboxes", err)
		}
		b.LatestAt = fromTimestamp(latest)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(ctx, "mailboxes", err)
	}
	return out, nil
}

// The first page starts below (infinity, ”), above every stored_at, so that
// one statement (and one backward range scan of mailbox_messages' key)
// serves every page, and a prepared statement's generic plan stays good.
const listSQL = `SELECT l.stored_at, m.id, m.from_header, m.subject, m.date, m.message_id, m.size,
		m.attachment_count, m.received_at
	FROM mailbox_messages AS l JOIN messages AS m ON m.id = l.message_id
	WHERE l.address = $1 AND (l.stored_at, l.message_id) < ($2, $3)
	ORDER BY l.stored_at DESC, l.message_id DESC
	LIMIT $4`

// Messages lists a mailbox newest first. It asks for one summary more than
// the page holds, so that NextCursor is empty exactly on the last page.
func (s *Store) Messages(ctx context.Context, address string, page store.Page) (store.MessagePage, error) {
	addr := addressKey(address)
	after := pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}
	afterID := ""
	if page.Cursor != "" {
		c, err := decodeCursor(page.Cursor)
		if err != nil {
			return store.MessagePage{}, fmt.Errorf("postgres: messages: %w", err)
		}
		after = pgtype.Timestamptz{Time: time.UnixMicro(c.StoredAt), Valid: true}
		afterID = c.ID
	}
	limit := page.EffectiveLimit()
	rows, err := s.read.Query(ctx, listSQL, addr, after, afterID, limit+1)
	if err != nil {
		return store.MessagePage{}, wrap(ctx, "messages", err)
	}
	defer rows.Close()
	out := store.MessagePage{Messages: make([]store.Summary, 0, min(limit, 64))}
	var last store.Cursor
	for rows.Next() {
		if len(out.Messages) == limit {
			out.NextCursor = last.Encode()
			break
		}
		sum, err := scanSummary(rows)
		if err != nil {
			return store.MessagePage{}, wrap(ctx, "messages", err)
		}
		last = store.Cursor{StoredAt: sum.StoredAt.UnixMicro(), ID: sum.ID}
		out.Messages = append(out.Messages, sum)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return store.MessagePage{}, wrap(ctx, "messages", err)
	}
	if len(out.Messages) == 0 {
		// Empty: either past the end of a mailbox, or no such mailbox.
		var one int
		err := s.read.QueryRow(ctx, `SELECT 1 FROM mailboxes WHERE address = $1`, addr).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.MessagePage{}, fmt.Errorf("postgres: mailbox %q: %w", address, store.ErrNotFound)
		}
		if err != nil {
			return store.MessagePage{}, wrap(ctx, "messages", err)
		}
	}
	return out, nil
}

// scanSummary reads the columns listSQL and findSQL select, in their order.
func scanSummary(rows pgx.Rows) (store.Summary, error) {
	var sum store.Summary
	var stored, date, received pgtype.Timestamptz
	var attachments int32
	if err := rows.Scan(&stored, &sum.ID, &sum.From, &sum.Subject, &date, &sum.MessageID, &sum.Size,
		&attachments, &received); err != nil {
		return sum, err
	}
	sum.Attachments = int(attachments)
	sum.StoredAt, sum.Date, sum.ReceivedAt = fromTimestamp(stored), fromTimestamp(date), fromTimestamp(received)
	return sum, nil
}

// Message reads a message and its attachments' metadata in one round trip
// (a pipelined batch).
func (s *Store) Message(ctx context.Context, id string) (*mail.Message, error) {
	if !storable(id) {
		return nil, fmt.Errorf("postgres: message %q: %w", id, store.ErrNotFound)
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT id, envelope_from, envelope_to, remote_addr, helo, received_at, subject, from_header,
			message_id, date, text_body, html_body, headers, warnings, size, stored_at
		FROM messages WHERE id = $1`, id)
	b.Queue(`SELECT filename, content_type, content_id, size FROM attachments WHERE message_id = $1 ORDER BY idx`, id)
	br := s.read.SendBatch(ctx, b)
	defer br.Close()

	m := &mail.Message{Parsed: &mail.Parsed{}}
	p := m.Parsed
	var received, date, stored pgtype.Timestamptz
	err := br.QueryRow().Scan(&m.ID, &m.Envelope.From, &m.Envelope.To, &m.Envelope.RemoteAddr, &m.Envelope.Helo,
		&received, &p.Subject, &p.From, &p.MessageID, &date, &p.Text, &p.HTML, &p.Headers, &p.Warnings,
		&m.Size, &stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: message %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, wrap(ctx, "message", err)
	}
	m.Envelope.ReceivedAt, p.Date, m.StoredAt = fromTimestamp(received), fromTimestamp(date), fromTimestamp(stored)

	rows, err := br.Query()
	if err != nil {
		return nil, wrap(ctx, "message", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a mail.Attachment
		if err := rows.Scan(&a.Filename, &a.ContentType, &a.ContentID, &a.Size); err != nil {
			return nil, wrap(ctx, "message", err)
		}
		p.Attachments = append(p.Attachments, a)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(ctx, "message", err)
	}
	return m, nil
}

// Raw returns the stored bytes exactly.
func (s *Store) Raw(ctx context.Context, id string) ([]byte, error) {
	if !storable(id) {
		return nil, fmt.Errorf("postgres: message %q: %w", id, store.ErrNotFound)
	}
	var raw []byte
	err := s.read.QueryRow(ctx, `SELECT raw FROM messages WHERE id = $1`, id).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: message %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, wrap(ctx, "raw", err)
	}
	return nonNil(raw), nil
}
