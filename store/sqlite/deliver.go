package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// writeStmts are prepared once on the single write connection; Deliver
// binds them into each transaction with Tx.StmtContext, which reuses the
// prepared statement instead of compiling the SQL again per batch.
type writeStmts struct {
	message, attachment, mailbox, link *sql.Stmt
}

func (w *writeStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		// DO NOTHING on the id: a message already stored stays as it was,
		// and RowsAffected tells a duplicate from a new message.
		{&w.message, `INSERT INTO messages (id, envelope_from, envelope_to, remote_addr, helo, received_at,
			subject, from_header, message_id, date, text_body, html_body, headers, warnings,
			attachment_count, size, raw, stored_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO NOTHING`},
		{&w.attachment, `INSERT INTO attachments (message_id, idx, filename, content_type, content_id, size, content)
			VALUES (?, ?, ?, ?, ?, ?, ?)`},
		{&w.mailbox, `INSERT INTO mailboxes (address, messages, latest_at) VALUES (?, 1, ?)
			ON CONFLICT (address) DO UPDATE SET messages = messages + 1, latest_at = max(latest_at, excluded.latest_at)`},
		{&w.link, `INSERT INTO mailbox_messages (address, message_id, stored_at) VALUES (?, ?, ?)`},
	} {
		var err error
		if *p.stmt, err = db.PrepareContext(ctx, p.sql); err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
	}
	return nil
}

func (w *writeStmts) close() {
	for _, s := range []*sql.Stmt{w.message, w.attachment, w.mailbox, w.link} {
		if s != nil {
			_ = s.Close()
		}
	}
}

// encoded is a message made ready for the insert before the write lock is
// taken, so that the lock is held for SQL only.
type encoded struct {
	m                        *mail.Message
	mailboxes                []string // case-folded, unique
	envTo, headers, warnings string
}

func encode(msgs []*mail.Message) ([]encoded, error) {
	out := make([]encoded, len(msgs))
	for i, m := range msgs {
		switch {
		case m == nil:
			return nil, fmt.Errorf("sqlite: deliver: message %d is nil: %w", i, store.ErrInvalid)
		case m.ID == "":
			return nil, fmt.Errorf("sqlite: deliver: message %d has no ID: %w", i, store.ErrInvalid)
		case m.Parsed == nil:
			return nil, fmt.Errorf("sqlite: deliver: message %s is not parsed: %w", m.ID, store.ErrInvalid)
		}
		e := encoded{m: m}
		var err error
		if e.envTo, err = jsonText(m.Envelope.To); err == nil {
			if e.headers, err = jsonText(m.Parsed.Headers); err == nil {
				e.warnings, err = jsonText(m.Parsed.Warnings)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: deliver: message %s: %w: %w", m.ID, store.ErrInvalid, err)
		}
		seen := map[string]bool{}
		for _, to := range m.Envelope.To {
			addr := strings.ToLower(to)
			if addr != "" && !seen[addr] {
				seen[addr] = true
				e.mailboxes = append(e.mailboxes, addr)
			}
		}
		out[i] = e
	}
	return out, nil
}

// Deliver stores msgs in one IMMEDIATE transaction. Only the commit is
// fsynced (synchronous=FULL), once per call: batching is what makes
// draining a backlog fast.
func (s *Store) Deliver(ctx context.Context, msgs []*mail.Message) ([]store.DeliveryResult, error) {
	if len(msgs) == 0 {
		return []store.DeliveryResult{}, nil
	}
	rows, err := encode(msgs)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: deliver: %w", err)
	}
	select {
	case s.writeSem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("sqlite: deliver: %w", ctx.Err())
	}
	defer func() { <-s.writeSem }()

	results, last, err := s.deliverTx(ctx, rows)
	if err != nil {
		return nil, wrap(ctx, "deliver", err)
	}
	s.lastStored = last
	return results, nil
}

func (s *Store) deliverTx(ctx context.Context, rows []encoded) (_ []store.DeliveryResult, last int64, err error) {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	insMsg := tx.StmtContext(ctx, s.stmts.message)
	insAtt := tx.StmtContext(ctx, s.stmts.attachment)
	upBox := tx.StmtContext(ctx, s.stmts.mailbox)
	insLink := tx.StmtContext(ctx, s.stmts.link)

	results := make([]store.DeliveryResult, len(rows))
	last = s.lastStored
	for i, r := range rows {
		m, p := r.m, r.m.Parsed
		results[i].ID = m.ID
		at := max(time.Now().UnixMicro(), last+1)
		res, err := insMsg.ExecContext(ctx, m.ID, m.Envelope.From, r.envTo, m.Envelope.RemoteAddr, m.Envelope.Helo,
			micros(m.Envelope.ReceivedAt), p.Subject, p.From, p.MessageID, micros(p.Date), p.Text, p.HTML,
			r.headers, r.warnings, len(p.Attachments), len(m.Raw), nonNil(m.Raw), at)
		if err != nil {
			return nil, 0, fmt.Errorf("message %s: %w", m.ID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, 0, fmt.Errorf("message %s: %w", m.ID, err)
		}
		if n == 0 {
			results[i].Duplicate = true
			continue
		}
		last = at
		for j, a := range p.Attachments {
			if _, err := insAtt.ExecContext(ctx, m.ID, j, a.Filename, a.ContentType, a.ContentID, a.Size, nonNil(a.Content)); err != nil {
				return nil, 0, fmt.Errorf("message %s attachment %d: %w", m.ID, j, err)
			}
		}
		for _, addr := range r.mailboxes {
			if _, err := upBox.ExecContext(ctx, addr, at); err != nil {
				return nil, 0, fmt.Errorf("message %s mailbox: %w", m.ID, err)
			}
			if _, err := insLink.ExecContext(ctx, addr, m.ID, at); err != nil {
				return nil, 0, fmt.Errorf("message %s mailbox link: %w", m.ID, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, 0, fmt.Errorf("commit: %w", err)
	}
	return results, last, nil
}

// nonNil keeps a nil slice from binding as NULL in a NOT NULL BLOB column.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// wrap adds the operation and, when the context ended, its error: the driver
// reports an interrupted statement in its own terms, and callers (the
// worker's retry logic) ask errors.Is(err, context.Canceled).
func wrap(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("sqlite: %s: %w (%w)", op, cerr, err)
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}
