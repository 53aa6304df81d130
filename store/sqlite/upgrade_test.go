package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// TestUpgradePutsSummaryColumnsFirst opens a database of schema version 2
// holding mail (bodies large enough to spill to overflow pages,
// attachments, a message in two mailboxes) with this binary: migration
// 0003 rewrites messages with the summary columns first, and every read
// answers exactly as before, with the references between the tables, and
// their enforcement, intact.
func TestUpgradePutsSummaryColumnsFirst(t *testing.T) {
	old, path := openVersion(t, 2)
	body := strings.Repeat("a line of a long body, to spill past one page\r\n", 300)
	var delivered []*mail.Message
	for i := range 6 {
		to := []string{fmt.Sprintf("customer%d@example.com", i%2)}
		if i == 3 {
			to = append(to, "other@example.com")
		}
		raw := fmt.Sprintf("From: s%d@sender.example\r\nSubject: upgrade %d\r\n\r\n%s", i, i, body)
		p, err := mail.Parse([]byte(raw), mail.DefaultParseLimits)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			p.Attachments = []mail.Attachment{{Filename: "a.pdf", ContentType: "application/pdf", Size: 3, Content: []byte("pdf")}}
		}
		m := &mail.Message{ID: mail.ID("s@sender.example", to, []byte(raw)),
			Envelope: mail.Envelope{From: "s@sender.example", To: to}, Raw: []byte(raw), Size: int64(len(raw)), Parsed: p}
		if _, err := old.Deliver(t.Context(), msgs(m)); err != nil {
			t.Fatal(err)
		}
		delivered = append(delivered, m)
	}
	before := readEverything(t, old, delivered)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatalf("Open of a version 2 database: %v", err)
	}
	defer s.Close()
	if got, want := migrationRows(t, s), len(mustMigrations(t)); got != want {
		t.Fatalf("schema_migrations has %d rows, want %d", got, want)
	}
	if after := readEverything(t, s, delivered); !reflect.DeepEqual(after, before) {
		t.Errorf("reads after the upgrade differ:\n%+v\nbefore:\n%+v", after, before)
	}

	// The summary columns come before the bodies, stored_at before raw.
	cols := map[string]int{}
	rows, err := s.read.QueryContext(t.Context(), `SELECT cid, name FROM pragma_table_info('messages')`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var cid int
		var name string
		if err := rows.Scan(&cid, &name); err != nil {
			t.Fatal(err)
		}
		cols[name] = cid
	}
	rows.Close()
	for _, c := range []string{"stored_at", "size", "attachment_count", "subject", "from_header", "date"} {
		if cols[c] > cols["warnings"] || cols[c] > cols["text_body"] {
			t.Errorf("column %s at %d, after warnings (%d) or text_body (%d): %v", c, cols[c], cols["warnings"], cols["text_body"], cols)
		}
	}
	if cols["raw"] != len(cols)-1 {
		t.Errorf("raw at %d, want last of %d: %v", cols["raw"], len(cols), cols)
	}

	// Foreign keys are on again, and still point at messages.
	if got := pragma(t, s.write, "foreign_keys"); got != "1" {
		t.Errorf("foreign_keys on the write connection = %s after the upgrade, want 1", got)
	}
	if _, err := s.write.ExecContext(t.Context(),
		`INSERT INTO mailbox_messages (address, message_id, stored_at) VALUES ('customer0@example.com', 'no-such-message', 1)`); err == nil {
		t.Error("a link to a missing message was accepted after the upgrade")
	}
	if _, err := s.write.ExecContext(t.Context(), `DELETE FROM messages WHERE id = ?`, delivered[0].ID); err == nil {
		t.Error("deleting a message that mailboxes link to was accepted after the upgrade")
	}
	// And new mail goes in as before.
	m := testMessage(t, 99, "customer0@example.com")
	if res, err := s.Deliver(t.Context(), msgs(m)); err != nil || res[0].Duplicate {
		t.Fatalf("Deliver after the upgrade: %v, %v", res, err)
	}
	if res, err := s.Deliver(t.Context(), msgs(delivered[1])); err != nil || !res[0].Duplicate {
		t.Fatalf("redelivery of an upgraded message: %v, %v; want a duplicate", res, err)
	}
}

// openVersion opens a new database made by the first n migrations only, as
// an older release left it.
func openVersion(t *testing.T, n int) (s *Store, path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "levee.db")
	s, err := open(t.Context(), Config{Path: path}, mustMigrations(t)[:n])
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

func mustMigrations(t testing.TB) []store.Migration {
	t.Helper()
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// everything is what the read API answers about a set of messages.
type everything struct {
	Mailboxes []store.Mailbox
	Pages     map[string]store.MessagePage
	Messages  []*mail.Message
	Raws      []string
}

func readEverything(t *testing.T, s *Store, ms []*mail.Message) everything {
	t.Helper()
	var e everything
	var err error
	if e.Mailboxes, err = s.Mailboxes(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.Pages = map[string]store.MessagePage{}
	for _, mb := range e.Mailboxes {
		if e.Pages[mb.Address], err = s.Messages(t.Context(), mb.Address, store.Page{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range ms {
		got, err := s.Message(t.Context(), m.ID)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := s.Raw(t.Context(), m.ID)
		if err != nil {
			t.Fatal(err)
		}
		e.Messages, e.Raws = append(e.Messages, got), append(e.Raws, string(raw))
	}
	if len(e.Mailboxes) != 3 || len(e.Messages) != len(ms) || len(e.Messages[0].Parsed.Attachments) != 1 {
		t.Fatalf("read %d mailboxes, %d messages, %d attachments on the first: want 3, %d, 1",
			len(e.Mailboxes), len(e.Messages), len(e.Messages[0].Parsed.Attachments), len(ms))
	}
	return e
}

// TestUpgradeRefusesBrokenReferences: a migration commits only if every
// reference between the tables still holds; otherwise Open says so and the
// schema stays as it was.
func TestUpgradeRefusesBrokenReferences(t *testing.T) {
	old, path := openVersion(t, 2)
	conn, err := old.write.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`PRAGMA foreign_keys = OFF`,
		`INSERT INTO mailboxes (address, messages, latest_at) VALUES ('bob@example.com', 1, 1)`,
		`INSERT INTO mailbox_messages (address, message_id, stored_at) VALUES ('bob@example.com', 'gone', 1)`,
		`PRAGMA foreign_keys = ON`} {
		if _, err := conn.ExecContext(t.Context(), q); err != nil {
			t.Fatal(q, err)
		}
	}
	conn.Close()
	old.Close()

	if s, err := Open(t.Context(), Config{Path: path}); err == nil {
		s.Close()
		t.Fatal("Open upgraded a database with a link to a missing message")
	} else if !strings.Contains(err.Error(), "mailbox_messages references a missing row of messages") {
		t.Errorf("err = %v, want it to name the broken reference", err)
	}
	old, err = open(t.Context(), Config{Path: path}, mustMigrations(t)[:2])
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got := migrationRows(t, old); got != 2 {
		t.Errorf("schema_migrations has %d rows after the refused upgrade, want 2", got)
	}
}

// TestOpenWaitsWhileAnotherProcessMigrates: while another process holds the
// write lock (as during its migrations, which can take minutes), Open waits
// past busy_timeout instead of failing with "database is locked", and
// stops waiting when its context ends.
func TestOpenWaitsWhileAnotherProcessMigrates(t *testing.T) {
	old, path := openVersion(t, 2)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Path: path, BusyTimeout: 20 * time.Millisecond}
	other, err := sql.Open("sqlite", cfg.WithDefaults().dsn(true))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	hold := func() *sql.Tx {
		tx, err := other.BeginTx(t.Context(), nil) // BEGIN IMMEDIATE: the write lock
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}

	tx := hold()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	start := time.Now()
	if s, err := Open(ctx, cfg); err == nil {
		s.Close()
		t.Fatal("Open migrated while another connection held the write lock")
	} else if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("Open gave up %v after its context ended (%v)", waited, err)
	}
	cancel()

	done := make(chan error, 1)
	go func() {
		s, err := Open(t.Context(), cfg)
		if err == nil {
			defer s.Close()
			if got, want := migrationRows(t, s), len(mustMigrations(t)); got != want {
				err = fmt.Errorf("schema_migrations has %d rows, want %d", got, want)
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Open returned while another connection held the write lock: %v", err)
	case <-time.After(25 * cfg.BusyTimeout):
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Open after the lock was released: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open still waiting 10 s after the lock was released")
	}
}
