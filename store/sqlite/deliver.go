package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// writeStmts are prepared once on the single write connection; Deliver
// binds them into each transaction with Tx.StmtContext, which reuses the
// prepared statement instead of compiling the SQL again per batch.
type writeStmts struct {
	message, attachment, mailbox, link *sql.Stmt
}

func (w *writeStmts) all() []statement {
	return []statement{
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

// Deliver stores msgs atomically and returns once they are committed.
// Only a commit is fsynced (synchronous=FULL), so the cost that matters is
// commits, not rows: a worker batches what it fetched, and calls that meet
// at the single writer are group-committed: the call that takes the writer
// commits every call waiting at that moment in one transaction. Should
// that shared transaction fail, each call's messages are written again in
// a transaction of their own, so one call's bad message or cancelled
// context never fails another's, and each call is still all or nothing.
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
	c := &deliverCall{ctx: ctx, rows: rows, done: make(chan struct{})}
	s.waitingMu.Lock()
	s.waiting = append(s.waiting, c)
	s.waitingMu.Unlock()
	select {
	case s.writeSem <- struct{}{}:
		s.commitWaiting()
		s.restartLongWAL()
		<-s.writeSem
	case <-c.done: // an earlier holder of the writer committed it
	case <-ctx.Done():
		if s.withdraw(c) {
			return nil, fmt.Errorf("sqlite: deliver: %w", ctx.Err())
		}
		// Taken by the writer already: its answer comes.
	}
	<-c.done
	return c.results, c.err
}

// deliverCall is one Deliver call waiting for the writer.
type deliverCall struct {
	ctx     context.Context
	rows    []encoded
	results []store.DeliveryResult
	err     error
	done    chan struct{} // closed once results or err is set
}

func (c *deliverCall) finish(results []store.DeliveryResult, err error) {
	c.results, c.err = results, err
	close(c.done)
}

// withdraw takes c out of the waiting calls; false if a writer took it.
func (s *Store) withdraw(c *deliverCall) bool {
	s.waitingMu.Lock()
	defer s.waitingMu.Unlock()
	for i, w := range s.waiting {
		if w == c {
			s.waiting = append(s.waiting[:i], s.waiting[i+1:]...)
			return true
		}
	}
	return false
}

// commitWaiting commits every waiting call; the caller holds writeSem.
func (s *Store) commitWaiting() {
	s.waitingMu.Lock()
	calls := s.waiting
	s.waiting = nil
	s.waitingMu.Unlock()
	live := calls[:0]
	var rows []encoded
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil {
			c.finish(nil, fmt.Errorf("sqlite: deliver: %w", err))
			continue
		}
		live = append(live, c)
		rows = append(rows, c.rows...)
	}
	if len(live) > 1 {
		// The first call's context bounds the shared transaction; if it
		// ends, the others are written on their own below.
		if results, last, err := s.deliverTx(live[0].ctx, rows); err == nil {
			s.lastStored = last
			for _, c := range live {
				c.finish(results[:len(c.rows):len(c.rows)], nil)
				results = results[len(c.rows):]
			}
			return
		}
	}
	for _, c := range live {
		results, last, err := s.deliverTx(c.ctx, c.rows)
		if err != nil {
			c.finish(nil, wrap(c.ctx, "deliver", err))
			continue
		}
		s.lastStored = last
		c.finish(results, nil)
	}
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
	insMsg := tx.StmtContext(ctx, s.writes.message)
	insAtt := tx.StmtContext(ctx, s.writes.attachment)
	upBox := tx.StmtContext(ctx, s.writes.mailbox)
	insLink := tx.StmtContext(ctx, s.writes.link)

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
	s.commits.Add(1)
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
// worker's retry logic) ask errors.Is(err, context.Canceled). A full disk
// or failing disk is marked store.ErrUnavailable: the database still
// answers reads (and Ping), so without the mark the worker would blame the
// messages.
func wrap(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("sqlite: %s: %w (%w)", op, cerr, err)
	}
	if diskTrouble(err) {
		return fmt.Errorf("sqlite: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// diskTrouble tells a full or failing disk, which no message is to blame
// for, from the other failures: SQLITE_FULL (SQLite's answer to ENOSPC), or
// any SQLITE_IOERR: a full disk also shows as one where SQLite does not
// map the errno (SQLITE_IOERR_SHMSIZE when the WAL index cannot grow,
// SQLITE_IOERR_WRITE for a quota's EDQUOT). Extended codes keep the
// primary code in the low byte.
func diskTrouble(err error) bool {
	var se *msqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR:
			return true
		}
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EIO)
}

// walRestartAbove is the WAL size at which the writer, after a commit,
// waits for the readers to move off the WAL and truncates it. SQLite's
// automatic checkpoint (every 1000 pages) copies the WAL into the database
// but starts the WAL over only when no reader is in it, which readers that
// always overlap (a web app paging through a draining surge) never allow:
// the WAL then grows with everything written (37 MiB for 64 MiB of mail
// under four readers, TestWALStaysBoundedUnderReadsAndWrites), and every
// read walks a longer WAL index.
var walRestartAbove int64 = 16 << 20

// walRestartWait bounds how long the restart waits for the reads in
// progress (it holds the writer meanwhile), and walRestartBackoff how long
// the writer leaves the WAL alone after a restart that could not finish
// (a long read, a bulk lookup, kept it busy).
const (
	walRestartWait    = 500 * time.Millisecond
	walRestartBackoff = 250 * time.Millisecond
)

// restartLongWAL truncates the WAL once it is longer than walRestartAbove;
// the caller holds writeSem. The checkpoint waits up to walRestartWait for
// the reads in progress, which take milliseconds; new reads go on
// meanwhile. If it cannot finish, a commit after walRestartBackoff tries
// again.
func (s *Store) restartLongWAL() {
	if time.Now().Before(s.walRetryAt) {
		return
	}
	fi, err := os.Stat(s.walPath)
	if err != nil || fi.Size() < walRestartAbove {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*walRestartWait)
	defer cancel()
	conn, err := s.write.Conn(ctx) // the one writer connection, free: the caller holds writeSem
	if err != nil {
		s.walRetryAt = time.Now().Add(walRestartBackoff)
		return
	}
	defer conn.Close()
	var busy, frames, copied int
	_, err = conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, walRestartWait.Milliseconds()))
	if err == nil {
		err = conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &copied)
	}
	// Back to the writer's own patience for other processes' locks.
	if _, rerr := conn.ExecContext(context.Background(), fmt.Sprintf(`PRAGMA busy_timeout = %d`, s.busyTimeout.Milliseconds())); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil || busy != 0 {
		s.walRetryAt = time.Now().Add(walRestartBackoff)
		return
	}
	s.walRestarts.Add(1)
}
