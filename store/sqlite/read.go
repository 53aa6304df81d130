package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// readStmts are the read pool's queries, prepared once (see prepareAll):
// compiling them again on every call was about a sixth of a mailbox page's
// cost.
type readStmts struct {
	mailboxes, list, mailboxExists, message, attachments, raw *sql.Stmt
}

func (r *readStmts) all() []statement {
	return []statement{
		{&r.mailboxes, mailboxesSQL},
		{&r.list, listSQL},
		{&r.mailboxExists, `SELECT 1 FROM mailboxes WHERE address = ?`},
		{&r.message, `SELECT id, envelope_from, envelope_to, remote_addr, helo, received_at,
			subject, from_header, message_id, date, text_body, html_body, headers, warnings, size, stored_at
		FROM messages WHERE id = ?`},
		{&r.attachments, `SELECT filename, content_type, content_id, size
		FROM attachments WHERE message_id = ? ORDER BY idx`},
		{&r.raw, `SELECT raw FROM messages WHERE id = ?`},
	}
}

// mailboxesSQL reads the whole folder list as one text value, a line per
// mailbox: address, count and latest_at, tab-separated. The mailbox UI asks
// for this list with every page it shows; row by row, database/sql and the
// driver cost about 2 µs a mailbox, more than SQLite itself. The lines come
// in the table's key order, address (group_concat's ORDER BY would sort
// them again, at twice the cost of the rest); Mailboxes checks and sorts
// them if ever they do not.
const mailboxesSQL = `SELECT count(*),
		ifnull(group_concat(address || char(9) || messages || char(9) || ifnull(latest_at, ''), char(10)), '')
	FROM mailboxes`

// Mailboxes reads the counters Deliver keeps, ordered by address.
func (s *Store) Mailboxes(ctx context.Context) ([]store.Mailbox, error) {
	var n int
	var text string
	if err := s.reads.mailboxes.QueryRowContext(ctx).Scan(&n, &text); err != nil {
		return nil, wrap(ctx, "mailboxes", err)
	}
	out, ok := parseMailboxLines(text, n)
	if !ok {
		// An address holds a newline (one line too many) or a tab (the
		// last field then holds one, and is no number): row by row.
		return s.mailboxesByRow(ctx)
	}
	byAddress := func(a, b store.Mailbox) int { return strings.Compare(a.Address, b.Address) }
	if !slices.IsSortedFunc(out, byAddress) {
		slices.SortFunc(out, byAddress)
	}
	return out, nil
}

// parseMailboxLines reads mailboxesSQL's text; false unless it is exactly
// n well-formed lines.
func parseMailboxLines(text string, n int) ([]store.Mailbox, bool) {
	out := make([]store.Mailbox, 0, n)
	if n == 0 {
		return out, text == ""
	}
	for line := range strings.SplitSeq(text, "\n") {
		address, rest, ok1 := strings.Cut(line, "\t")
		count, latest, ok2 := strings.Cut(rest, "\t")
		messages, err1 := strconv.ParseInt(count, 10, 64)
		var at sql.NullInt64
		var err2 error
		if latest != "" {
			at.Int64, err2 = strconv.ParseInt(latest, 10, 64)
			at.Valid = true
		}
		if !ok1 || !ok2 || err1 != nil || err2 != nil || len(out) == n {
			return nil, false
		}
		out = append(out, store.Mailbox{Address: address, Messages: messages, LatestAt: fromMicros(at)})
	}
	return out, len(out) == n
}

// mailboxesByRow is Mailboxes one row at a time, for addresses the
// one-value form cannot carry.
func (s *Store) mailboxesByRow(ctx context.Context) ([]store.Mailbox, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT address, messages, latest_at FROM mailboxes ORDER BY address`)
	if err != nil {
		return nil, wrap(ctx, "mailboxes", err)
	}
	defer rows.Close()
	out := []store.Mailbox{}
	for rows.Next() {
		var b store.Mailbox
		var latest sql.NullInt64
		if err := rows.Scan(&b.Address, &b.Messages, &latest); err != nil {
			return nil, wrap(ctx, "mailboxes", err)
		}
		b.LatestAt = fromMicros(latest)
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(ctx, "mailboxes", err)
	}
	return out, nil
}

// The first page starts below (MaxInt64, ""), above every stored_at, so that
// one statement (and one index range scan) serves every page.
const listSQL = `SELECT l.stored_at, m.id, m.from_header, m.subject, m.date, m.message_id, m.size,
		m.attachment_count, m.received_at
	FROM mailbox_messages AS l JOIN messages AS m ON m.id = l.message_id
	WHERE l.address = ? AND (l.stored_at, l.message_id) < (?, ?)
	ORDER BY l.stored_at DESC, l.message_id DESC
	LIMIT ?`

// Messages lists a mailbox newest first. It asks for one summary more than
// the page holds, so that NextCursor is empty exactly on the last page.
func (s *Store) Messages(ctx context.Context, address string, page store.Page) (store.MessagePage, error) {
	addr := strings.ToLower(address)
	after := store.Cursor{StoredAt: math.MaxInt64}
	if page.Cursor != "" {
		var err error
		if after, err = store.DecodeCursor(page.Cursor); err != nil {
			return store.MessagePage{}, fmt.Errorf("sqlite: messages: %w", err)
		}
	}
	limit := page.EffectiveLimit()
	rows, err := s.reads.list.QueryContext(ctx, addr, after.StoredAt, after.ID, limit+1)
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
		var sum store.Summary
		var date, received sql.NullInt64
		if err := rows.Scan(&last.StoredAt, &sum.ID, &sum.From, &sum.Subject, &date, &sum.MessageID, &sum.Size,
			&sum.Attachments, &received); err != nil {
			return store.MessagePage{}, wrap(ctx, "messages", err)
		}
		last.ID = sum.ID
		sum.Date, sum.ReceivedAt = fromMicros(date), fromMicros(received)
		sum.StoredAt = fromMicros(sql.NullInt64{Int64: last.StoredAt, Valid: true})
		out.Messages = append(out.Messages, sum)
	}
	if err := rows.Err(); err != nil {
		return store.MessagePage{}, wrap(ctx, "messages", err)
	}
	if len(out.Messages) == 0 {
		// Empty: either past the end of a mailbox, or no such mailbox.
		var one int
		err := s.reads.mailboxExists.QueryRowContext(ctx, addr).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return store.MessagePage{}, fmt.Errorf("sqlite: mailbox %q: %w", address, store.ErrNotFound)
		}
		if err != nil {
			return store.MessagePage{}, wrap(ctx, "messages", err)
		}
	}
	return out, nil
}

// Message reads a message and its attachments' metadata. The two queries
// need no shared snapshot: a message and its attachments are committed
// together and never change.
func (s *Store) Message(ctx context.Context, id string) (*mail.Message, error) {
	m := &mail.Message{Parsed: &mail.Parsed{}}
	p := m.Parsed
	var envTo, headers, warnings string
	var received, date, stored sql.NullInt64
	err := s.reads.message.QueryRowContext(ctx, id).Scan(&m.ID, &m.Envelope.From, &envTo, &m.Envelope.RemoteAddr,
		&m.Envelope.Helo, &received, &p.Subject, &p.From, &p.MessageID, &date, &p.Text, &p.HTML,
		&headers, &warnings, &m.Size, &stored)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: message %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, wrap(ctx, "message", err)
	}
	m.Envelope.ReceivedAt, p.Date, m.StoredAt = fromMicros(received), fromMicros(date), fromMicros(stored)
	for _, j := range []struct {
		text string
		into any
	}{{envTo, &m.Envelope.To}, {headers, &p.Headers}, {warnings, &p.Warnings}} {
		if err := json.Unmarshal([]byte(j.text), j.into); err != nil {
			return nil, fmt.Errorf("sqlite: message %s: corrupt JSON column: %w", id, err)
		}
	}

	rows, err := s.reads.attachments.QueryContext(ctx, id)
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
	var raw []byte
	err := s.reads.raw.QueryRowContext(ctx, id).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: message %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, wrap(ctx, "raw", err)
	}
	return nonNil(raw), nil
}
