package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

func testMessage(t testing.TB, n int, to ...string) *mail.Message {
	t.Helper()
	raw := fmt.Sprintf("From: s%d@sender.example\r\nSubject: test %d\r\n\r\nbody %d\r\n", n, n, n)
	p, err := mail.Parse([]byte(raw), mail.DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	from := fmt.Sprintf("s%d@sender.example", n)
	return &mail.Message{
		ID:       mail.ID(from, to, []byte(raw)),
		Envelope: mail.Envelope{From: from, To: to, ReceivedAt: time.Now()},
		Raw:      []byte(raw),
		Size:     int64(len(raw)),
		Parsed:   p,
	}
}

func msgs(m ...*mail.Message) []*mail.Message { return m }

func pragma(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRowContext(t.Context(), "PRAGMA "+name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestPragmas(t *testing.T) {
	s := openTest(t)
	for _, tc := range []struct {
		db         *sql.DB
		pool, name string
		want       string
	}{
		{s.write, "write", "journal_mode", "wal"},
		{s.write, "write", "synchronous", "2"}, // FULL
		{s.write, "write", "foreign_keys", "1"},
		{s.write, "write", "busy_timeout", "5000"},
		{s.write, "write", "query_only", "0"},
		{s.read, "read", "journal_mode", "wal"},
		{s.read, "read", "foreign_keys", "1"},
		{s.read, "read", "busy_timeout", "5000"},
		{s.read, "read", "query_only", "1"},
	} {
		if got := pragma(t, tc.db, tc.name); got != tc.want {
			t.Errorf("%s pool: PRAGMA %s = %s, want %s", tc.pool, tc.name, got, tc.want)
		}
	}
	if _, err := s.read.ExecContext(t.Context(), `INSERT INTO mailboxes VALUES ('x', 0, 0)`); err == nil {
		t.Error("the read pool accepted a write")
	}
}

// Within one call and across calls, newest first is delivery order, because
// Deliver hands out strictly increasing stored_at values.
func TestStoredAtFollowsDeliveryOrder(t *testing.T) {
	s := openTest(t)
	var want []string
	for call := range 3 {
		var batch []*mail.Message
		for i := range 4 {
			m := testMessage(t, call*10+i, "bob@example.com")
			batch = append(batch, m)
			want = append([]string{m.ID}, want...)
		}
		if _, err := s.Deliver(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
	}
	mp, err := s.Messages(t.Context(), "bob@example.com", store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	for i, sum := range mp.Messages {
		if sum.ID != want[i] {
			t.Fatalf("position %d: %s, want %s (newest first = last delivered first)", i, sum.ID, want[i])
		}
		if i > 0 && !sum.StoredAt.Before(mp.Messages[i-1].StoredAt) {
			t.Fatalf("StoredAt not strictly decreasing at %d: %v then %v", i, mp.Messages[i-1].StoredAt, sum.StoredAt)
		}
	}
}

func TestAttachmentContentStored(t *testing.T) {
	s := openTest(t)
	content := []byte("\x00\xffPDF\r\nbinary")
	m := testMessage(t, 1, "bob@example.com")
	m.Parsed.Attachments = []mail.Attachment{
		{Filename: "a.pdf", ContentType: "application/pdf", Size: int64(len(content)), Content: content},
		{Filename: "empty.txt", ContentType: "text/plain"}, // nil content
	}
	if _, err := s.Deliver(t.Context(), msgs(m)); err != nil {
		t.Fatal(err)
	}
	rows, err := s.read.QueryContext(t.Context(), `SELECT idx, content FROM attachments WHERE message_id = ? ORDER BY idx`, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got [][]byte
	for rows.Next() {
		var idx int
		var b []byte
		if err := rows.Scan(&idx, &b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	if len(got) != 2 || !bytes.Equal(got[0], content) || len(got[1]) != 0 {
		t.Fatalf("attachment contents = %q, want %q and empty", got, content)
	}
}

func TestEmptyRaw(t *testing.T) {
	s := openTest(t)
	m := testMessage(t, 1, "bob@example.com")
	m.Raw, m.Size = nil, 0
	if _, err := s.Deliver(t.Context(), msgs(m)); err != nil {
		t.Fatal(err)
	}
	raw, err := s.Raw(t.Context(), m.ID)
	if err != nil || raw == nil || len(raw) != 0 {
		t.Fatalf("Raw = %q, %v; want empty, non-nil", raw, err)
	}
}

// Parsed text with invalid UTF-8 and NUL bytes comes back exactly from
// SQLite (the suite also allows a sanitized form, for PostgreSQL).
func TestMessyTextExact(t *testing.T) {
	s := openTest(t)
	m := testMessage(t, 1, "bob@example.com")
	m.Parsed.Subject, m.Parsed.Text = "Caf\xe9\x00!", "a\x00\xffb"
	if _, err := s.Deliver(t.Context(), msgs(m)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Message(t.Context(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Parsed.Subject != m.Parsed.Subject || got.Parsed.Text != m.Parsed.Text {
		t.Errorf("Subject/Text = %q/%q, want %q/%q", got.Parsed.Subject, got.Parsed.Text, m.Parsed.Subject, m.Parsed.Text)
	}
}

// WAL: a write transaction in progress (another process, or a long batch)
// does not stop reads of what is committed.
func TestReadersDoNotWaitForWriter(t *testing.T) {
	s := openTest(t)
	m := testMessage(t, 1, "bob@example.com")
	if _, err := s.Deliver(t.Context(), msgs(m)); err != nil {
		t.Fatal(err)
	}
	tx, err := s.write.BeginTx(t.Context(), nil) // IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(t.Context(), `INSERT INTO mailboxes VALUES ('pending@example.com', 0, 0)`); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.Raw(ctx, m.ID); err != nil {
		t.Fatalf("Raw while a write is open: %v", err)
	}
	boxes, err := s.Mailboxes(ctx)
	if err != nil {
		t.Fatalf("Mailboxes while a write is open: %v", err)
	}
	if len(boxes) != 1 || boxes[0].Address != "bob@example.com" {
		t.Errorf("Mailboxes = %+v, want only the committed bob@example.com", boxes)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping while a write is open: %v", err)
	}
}

// A Deliver that cannot get the write lock gives up when its context ends,
// whether it waits behind another Deliver (in Go) or behind another process
// (in SQLite's busy handler).
func TestDeliverWaitHonoursContext(t *testing.T) {
	t.Run("behind another Deliver", func(t *testing.T) {
		s := openTest(t)
		s.writeSem <- struct{}{} // as if a Deliver were running
		defer func() { <-s.writeSem }()
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := s.Deliver(ctx, msgs(testMessage(t, 1, "bob@example.com")))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("behind another process", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "levee.db")
		s, err := Open(t.Context(), Config{Path: path, BusyTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		other, err := sql.Open("sqlite", path+"?_txlock=immediate")
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		tx, err := other.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()

		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		m := testMessage(t, 1, "bob@example.com")
		_, err = s.Deliver(ctx, msgs(m))
		if err == nil {
			t.Fatal("Deliver succeeded while another connection held the write lock")
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Deliver took %v: it waited out the busy timeout, not the context", d)
		}
		// Once the other writer is gone, Deliver works again.
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Deliver(t.Context(), msgs(m)); err != nil {
			t.Fatalf("Deliver after the lock was released: %v", err)
		}
	})
}

// The listing must walk the index, not sort a mailbox: a big mailbox would
// otherwise cost a sort per page.
func TestListingUsesIndex(t *testing.T) {
	s := openTest(t)
	rows, err := s.read.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+listSQL, "bob@example.com", int64(1), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	all := strings.Join(plan, "\n")
	if !strings.Contains(all, "mailbox_messages_newest") || strings.Contains(all, "TEMP B-TREE") {
		t.Errorf("query plan does not walk mailbox_messages_newest without sorting:\n%s", all)
	}
}

func TestCloseThenUse(t *testing.T) {
	s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "levee.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Error("Ping after Close succeeded")
	}
	if _, err := s.Deliver(t.Context(), msgs(testMessage(t, 1, "bob@example.com"))); err == nil {
		t.Error("Deliver after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

// deliverTogether holds the writer while each batch's Deliver call queues
// behind it, then lets them go, and returns each call's answer.
func deliverTogether(t *testing.T, s *Store, batches ...[]*mail.Message) ([][]store.DeliveryResult, []error) {
	t.Helper()
	s.writeSem <- struct{}{} // as if a Deliver were running
	results := make([][]store.DeliveryResult, len(batches))
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() { results[i], errs[i] = s.Deliver(t.Context(), b) })
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.waitingMu.Lock()
		n := len(s.waiting)
		s.waitingMu.Unlock()
		if n == len(batches) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Deliver calls queued for the writer", n, len(batches))
		}
		time.Sleep(time.Millisecond)
	}
	<-s.writeSem
	wg.Wait()
	return results, errs
}

func storedMessages(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.read.QueryRowContext(t.Context(), `SELECT count(*) FROM messages`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConcurrentDeliversShareACommit: Deliver calls that meet at the
// writer are committed in one transaction, each still gets its own
// answers (a message another call stored in the same transaction is a
// duplicate), and one call's failure inside that transaction fails only
// that call, all of it.
func TestConcurrentDeliversShareACommit(t *testing.T) {
	s := openTest(t)
	a := msgs(testMessage(t, 1, "a@example.com"), testMessage(t, 2, "a@example.com"))
	b := msgs(testMessage(t, 3, "b@example.com"))
	c := msgs(testMessage(t, 4, "c@example.com"), a[0]) // a[0] again: a duplicate
	before := s.commits.Load()
	results, errs := deliverTogether(t, s, a, b, c)
	if got := s.commits.Load() - before; got != 1 {
		t.Errorf("three calls queued together took %d commits, want 1", got)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	// The writer takes the calls in the order they queued, which the
	// goroutines did not fix: the second copy of a[0] is the duplicate,
	// whichever it was.
	dups := 0
	for i, rs := range results {
		if len(rs) != len([][]*mail.Message{a, b, c}[i]) {
			t.Fatalf("call %d got %d results for %d messages", i, len(rs), len([][]*mail.Message{a, b, c}[i]))
		}
		for _, r := range rs {
			if r.Duplicate {
				dups++
				if r.ID != a[0].ID {
					t.Errorf("call %d: %s reported a duplicate", i, r.ID)
				}
			}
		}
	}
	if dups != 1 || storedMessages(t, s) != 4 {
		t.Errorf("%d duplicates, %d messages stored; want 1 and 4", dups, storedMessages(t, s))
	}

	// A message that fails in SQL, inside the transaction.
	if _, err := s.write.ExecContext(t.Context(), `CREATE TEMP TRIGGER poison BEFORE INSERT ON messages
		WHEN NEW.subject = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned message'); END`); err != nil {
		t.Fatal(err)
	}
	poison := testMessage(t, 6, "p@example.com")
	poison.Parsed.Subject = "poison"
	d, e, f := msgs(testMessage(t, 5, "d@example.com")), msgs(poison, testMessage(t, 7, "e@example.com")), msgs(testMessage(t, 8, "f@example.com"))
	before = s.commits.Load()
	_, errs = deliverTogether(t, s, d, e, f)
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("the calls without the poisoned message failed too: %v, %v", errs[0], errs[2])
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "poisoned message") {
		t.Errorf("the poisoned call: err = %v, want the trigger's abort", errs[1])
	}
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("%d commits after the shared transaction failed, want 2 (one for each good call)", got)
	}
	if n := storedMessages(t, s); n != 6 {
		t.Errorf("%d messages stored, want 6: the poisoned call's other message must not be", n)
	}
}
