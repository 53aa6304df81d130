package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/postgres/pgtest"
)

func testMessage(t testing.TB, n int, to ...string) *mail.Message {
	t.Helper()
	raw := fmt.Sprintf("From: s%d@sender.example\r\nSubject: test %d\r\nMessage-ID: <t%d@sender.example>\r\n\r\nbody %d\r\n", n, n, n, n)
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

func deliverOK(t testing.TB, s *Store, msgs ...*mail.Message) []store.DeliveryResult {
	t.Helper()
	res, err := s.Deliver(t.Context(), msgs)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	return res
}

func getMessage(t testing.TB, s *Store, id string) *mail.Message {
	t.Helper()
	m, err := s.Message(t.Context(), id)
	if err != nil {
		t.Fatalf("Message(%s): %v", id, err)
	}
	return m
}

// Two processes (two pools, as two `levee worker`s have) deliver the same
// messages at once in different orders and batch sizes: every message is
// new exactly once, nobody deadlocks or fails, and the counters agree with
// the links.
func testDuplicatesAcrossProcesses(t *testing.T, db string) {
	a, dbURL := openTest(t, db)
	b := openURL(t, dbURL)
	const n = 60
	boxes := []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"}
	msgs := make([]*mail.Message, n)
	want := map[string]int64{}
	for i := range msgs {
		to := []string{boxes[i%4], boxes[(i*7)%4]}
		msgs[i] = testMessage(t, i, to...)
		want[to[0]]++
		if to[1] != to[0] {
			want[to[1]]++
		}
	}

	type outcome struct {
		res []store.DeliveryResult
		err error
	}
	const loops = 6 // three per process
	out := make([]outcome, loops)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range loops {
		s := []*Store{a, b}[w%2]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			order := rng.Perm(n)
			<-start
			for len(order) > 0 {
				k := min(1+rng.IntN(12), len(order))
				batch := make([]*mail.Message, k)
				for i, j := range order[:k] {
					batch[i] = msgs[j]
				}
				order = order[k:]
				res, err := s.Deliver(t.Context(), batch)
				if err != nil {
					out[w].err = err
					return
				}
				out[w].res = append(out[w].res, res...)
			}
		})
	}
	close(start)
	wg.Wait()

	fresh := map[string]int{}
	for w, o := range out {
		if o.err != nil {
			t.Fatalf("loop %d: Deliver: %v", w, o.err)
		}
		for _, r := range o.res {
			if !r.Duplicate {
				fresh[r.ID]++
			}
		}
	}
	for _, m := range msgs {
		if fresh[m.ID] != 1 {
			t.Errorf("%s reported new %d times, want once", m.ID, fresh[m.ID])
		}
	}
	got, err := b.Mailboxes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(boxes) {
		t.Fatalf("Mailboxes = %+v, want %d", got, len(boxes))
	}
	for _, mb := range got {
		var links int64
		var newest time.Time
		if err := a.pool.QueryRow(t.Context(), `SELECT count(*), max(stored_at) FROM mailbox_messages WHERE address = $1`,
			mb.Address).Scan(&links, &newest); err != nil {
			t.Fatal(err)
		}
		if mb.Messages != want[mb.Address] || links != want[mb.Address] || !mb.LatestAt.Equal(newest) {
			t.Errorf("%s: counter %d, links %d, latest %v; want %d messages, latest %v",
				mb.Address, mb.Messages, links, mb.LatestAt, want[mb.Address], newest)
		}
	}
}

// Within one call and across calls made one after another, newest first is
// delivery order, and stored_at strictly decreases down the listing.
func testStoredAtFollowsDeliveryOrder(t *testing.T, db string) {
	s, _ := openTest(t, db)
	var want []string
	for call := range 3 {
		var batch []*mail.Message
		for i := range 5 {
			m := testMessage(t, call*10+i, "bob@example.com")
			batch = append(batch, m)
			want = append([]string{m.ID}, want...)
		}
		deliverOK(t, s, batch...)
	}
	mp, err := s.Messages(t.Context(), "bob@example.com", store.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(mp.Messages) != len(want) {
		t.Fatalf("%d listed, want %d", len(mp.Messages), len(want))
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

// If the server's clock steps back, new mail still lands above what this
// store already stored.
func testStoredAtAboveFloor(t *testing.T, db string) {
	s, _ := openTest(t, db)
	ahead := time.Now().Add(1000 * time.Second).UnixMicro()
	s.floor.Store(ahead) // as if the clock had stepped back 1000 s
	m1, m2 := testMessage(t, 1, "bob@example.com"), testMessage(t, 2, "bob@example.com")
	deliverOK(t, s, m1, m2)
	g1, g2 := getMessage(t, s, m1.ID), getMessage(t, s, m2.ID)
	if g1.StoredAt.UnixMicro() != ahead+1 || g2.StoredAt.UnixMicro() != ahead+2 {
		t.Errorf("StoredAt = %d, %d; want %d, %d (above the floor, in batch order)",
			g1.StoredAt.UnixMicro(), g2.StoredAt.UnixMicro(), ahead+1, ahead+2)
	}
	if s.floor.Load() != ahead+2 {
		t.Errorf("floor = %d, want %d", s.floor.Load(), ahead+2)
	}
}

// The exact form text takes where PostgreSQL cannot keep it, and look-ups
// by such text find what was stored.
func testCleanedText(t *testing.T, db string) {
	s, _ := openTest(t, db)
	raw := []byte("Subject: Caf\xe9\x00\r\n\r\nbody\x00\xff\r\n")
	m := &mail.Message{
		ID: "cleaned-0001",
		Envelope: mail.Envelope{
			From:       "j\xfcrgen@sender.example",
			To:         []string{"Bob\x00@Example.com", "caf\xe9@example.com"},
			RemoteAddr: "192.0.2.1:25",
			Helo:       "mx\x00",
		},
		Raw:  raw,
		Size: int64(len(raw)),
		Parsed: &mail.Parsed{
			Headers: map[string][]string{
				"Subject":  {"Caf\xe9\x00"},
				"X-A\x00":  {"1"},
				"X-A":      {"2"}, // becomes the same key as the one above
				"Received": {"a", "b"},
			},
			Subject:   "Caf\xe9\x00",
			MessageID: "id\x00@sender.example",
			Text:      "a\x00b\xc3\x28c",
			Attachments: []mail.Attachment{
				{Filename: "x\x00\xff.bin", ContentType: "application/octet-stream", Size: 2, Content: []byte{0, 0xff}},
			},
		},
	}
	deliverOK(t, s, m)

	got := getMessage(t, s, m.ID)
	for _, f := range []struct{ name, got, want string }{
		{"Envelope.From", got.Envelope.From, "j\uFFFDrgen@sender.example"},
		{"Envelope.To", strings.Join(got.Envelope.To, ","), "Bob@Example.com,caf\uFFFD@example.com"},
		{"Helo", got.Envelope.Helo, "mx"},
		{"Subject", got.Parsed.Subject, "Caf\uFFFD"},
		{"MessageID", got.Parsed.MessageID, "id@sender.example"},
		{"Text", got.Parsed.Text, "ab\uFFFD(c"},
		{"X-A", strings.Join(got.Parsed.Headers["X-A"], ","), "2,1"}, // "X-A" sorts before "X-A\x00"
		{"Received", strings.Join(got.Parsed.Headers["Received"], ","), "a,b"},
		{"Filename", got.Parsed.Attachments[0].Filename, "x\uFFFD.bin"},
	} {
		if f.got != f.want {
			t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
		}
	}
	if r, err := s.Raw(t.Context(), m.ID); err != nil || !bytes.Equal(r, raw) {
		t.Errorf("Raw = %q, %v; want the bytes as delivered", r, err)
	}
	var content []byte
	if err := s.pool.QueryRow(t.Context(), `SELECT content FROM attachments WHERE message_id = $1`, m.ID).Scan(&content); err != nil || !bytes.Equal(content, []byte{0, 0xff}) {
		t.Errorf("attachment content = %q, %v; want it byte-exact", content, err)
	}

	// Look-ups clean what they are given the same way.
	for _, addr := range []string{"bob\x00@example.com", "BOB@example.com", "CAF\xe9@example.com"} {
		if mp, err := s.Messages(t.Context(), addr, store.Page{}); err != nil || len(mp.Messages) != 1 {
			t.Errorf("Messages(%q) = %+v, %v; want the message", addr, mp, err)
		}
	}
	found, err := s.FindByMessageID(t.Context(), []string{"id\x00@sender.example", "id@sender.example"})
	if err != nil || len(found) != 2 || len(found["id\x00@sender.example"]) != 1 || len(found["id@sender.example"]) != 1 {
		t.Errorf("FindByMessageID = %+v, %v; want the message under both values asked", found, err)
	}
}

// Message ids are keys: one PostgreSQL cannot store as given is refused,
// never cleaned into another message's id.
func testIDsThatCannotBeStored(t *testing.T, db string) {
	s, _ := openTest(t, db)
	good := testMessage(t, 1, "bob@example.com")
	for _, id := range []string{"id\x00nul", "id\xffbad"} {
		bad := testMessage(t, 2, "bob@example.com")
		bad.ID = id
		if _, err := s.Deliver(t.Context(), []*mail.Message{good, bad}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Deliver with ID %q: err = %v, want store.ErrInvalid", id, err)
		}
		if _, err := s.Message(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Message(%q): err = %v, want store.ErrNotFound", id, err)
		}
		if _, err := s.Raw(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Raw(%q): err = %v, want store.ErrNotFound", id, err)
		}
	}
	if _, err := s.Raw(t.Context(), good.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the valid message of a refused batch was stored: %v", err)
	}
}

// A Message-ID header is sender-controlled: a huge one is stored and found
// (a btree index would refuse entries over ~2.7 kB).
func testHugeMessageIDHeader(t *testing.T, db string) {
	s, _ := openTest(t, db)
	m := testMessage(t, 1, "bob@example.com")
	huge := strings.Repeat("x", 20000) + "@sender.example"
	m.Parsed.MessageID = huge
	deliverOK(t, s, m)
	found, err := s.FindByMessageID(t.Context(), []string{huge})
	if err != nil || len(found[huge]) != 1 || found[huge][0].ID != m.ID {
		t.Fatalf("FindByMessageID(huge) = %d results, %v; want the message", len(found[huge]), err)
	}
}

// Times PostgreSQL cannot hold (only a hand-built message has them) are
// stored as no time rather than failing the batch.
func testTimesOutOfRange(t *testing.T, db string) {
	s, _ := openTest(t, db)
	m := testMessage(t, 1, "bob@example.com")
	m.Parsed.Date = time.Date(295000, 1, 1, 0, 0, 0, 0, time.UTC)
	m.Envelope.ReceivedAt = time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC)
	deliverOK(t, s, m)
	got := getMessage(t, s, m.ID)
	if !got.Parsed.Date.IsZero() || !got.Envelope.ReceivedAt.IsZero() {
		t.Errorf("Date %v, ReceivedAt %v: want zero", got.Parsed.Date, got.Envelope.ReceivedAt)
	}
	// A far but storable date is kept exactly.
	n := testMessage(t, 2, "bob@example.com")
	n.Parsed.Date = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
	deliverOK(t, s, n)
	if got := getMessage(t, s, n.ID); !got.Parsed.Date.Equal(n.Parsed.Date) {
		t.Errorf("Date = %v, want %v", got.Parsed.Date, n.Parsed.Date)
	}
}

// A Deliver whose context ends while the statement waits on a lock (here:
// another transaction inserting the same message) is cancelled on the
// server: it returns promptly, and nothing of it is committed later.
func testCancelWhileWaitingStoresNothing(t *testing.T, db string) {
	s, _ := openTest(t, db)
	m := testMessage(t, 1, "bob@example.com")
	other := testMessage(t, 2, "carol@example.com")

	// Another session inserts m's id and keeps its transaction open.
	tx, err := s.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `INSERT INTO messages (id, envelope_from, envelope_to, remote_addr, helo, subject,
		from_header, message_id, text_body, html_body, headers, warnings, attachment_count, size, raw, stored_at)
		VALUES ($1, '', '[]', '', '', '', '', '', '', '', '{}', '[]', 0, 0, '', now())`, m.ID); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Deliver(ctx, []*mail.Message{other, m})
		done <- err
	}()
	waitForLockWait(t, s)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Deliver: err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > cancelGrace+2*time.Second {
			t.Errorf("Deliver returned %v after its context was cancelled", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Deliver did not return after its context was cancelled")
	}

	// Once the other transaction is gone, the cancelled statement must not
	// go on to insert its messages.
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{m.ID, other.ID} {
		if _, err := s.Raw(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Raw(%s) after a cancelled Deliver: err = %v, want store.ErrNotFound", id, err)
		}
	}
	// The store (and the connection the cancelled call used) still works.
	// A statement that had gone on after all would hold m's id until its
	// commit, and this call would find both messages stored.
	if res := deliverOK(t, s, other, m); res[0].Duplicate || res[1].Duplicate {
		t.Errorf("Deliver after the cancellation = %+v, want both new", res)
	}
}

// waitForLockWait polls until a session of this database waits on a lock.
func waitForLockWait(t *testing.T, s *Store) {
	t.Helper()
	waitForLockWaitOn(t, s.pool)
}

// waitForLockWaitOn is waitForLockWait asking on q.
func waitForLockWaitOn(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := q.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("Deliver never waited on the lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The listing walks mailbox_messages' key backwards: no sort, at any depth.
func testListingUsesIndex(t *testing.T, db string) {
	s, _ := openTest(t, db)
	tx, err := s.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	// An empty table would make any plan cheap: rule the others out.
	if _, err := tx.Exec(t.Context(), `SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off`); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(t.Context(), "EXPLAIN "+listSQL, "bob@example.com", time.Now(), "x", 10)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(plan, "\n")
	if !strings.Contains(all, "Scan Backward using mailbox_messages_pkey") || strings.Contains(all, "Sort") {
		t.Errorf("plan does not walk mailbox_messages_pkey backwards without sorting:\n%s", all)
	}
}

// Deliver's transaction waits for the WAL flush even where the session
// default says not to, and keeps a stronger level a deployment chose.
func testDeliverCommitIsDurable(t *testing.T, db string) {
	s, _ := openTest(t, db)
	for _, tc := range []struct{ session, want string }{
		{"off", "on"},
		{"local", "local"},
		{"on", "on"},
		{"remote_apply", "remote_apply"},
	} {
		tx, err := s.pool.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if _, err = tx.Exec(t.Context(), "SET LOCAL synchronous_commit = "+tc.session); err == nil {
			if _, err = tx.Exec(t.Context(), durableSQL); err == nil {
				err = tx.QueryRow(t.Context(), `SHOW synchronous_commit`).Scan(&got)
			}
		}
		_ = tx.Rollback(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("session %s: synchronous_commit in Deliver's transaction = %s, want %s", tc.session, got, tc.want)
		}
	}
}

// Look-up by Message-ID narrows by the indexed prefix: values that share
// it are told apart, and the plan uses the index.
func testFindByMessageIDPrefix(t *testing.T, db string) {
	s, _ := openTest(t, db)
	long := strings.Repeat("p", messageIDPrefix)
	a, b := testMessage(t, 1, "bob@example.com"), testMessage(t, 2, "bob@example.com")
	a.Parsed.MessageID, b.Parsed.MessageID = long+"a@x", long+"b@x"
	deliverOK(t, s, a, b)
	found, err := s.FindByMessageID(t.Context(), []string{long + "a@x", long})
	if err != nil || len(found) != 1 || len(found[long+"a@x"]) != 1 || found[long+"a@x"][0].ID != a.ID {
		t.Fatalf("FindByMessageID = %+v, %v; want only a", found, err)
	}

	tx, err := s.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `SET LOCAL enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	var plan []string
	rows, err := tx.Query(t.Context(), "EXPLAIN "+findSQL, []string{"x"}, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if all := strings.Join(plan, "\n"); !strings.Contains(all, "messages_by_message_id") {
		t.Errorf("plan does not use messages_by_message_id:\n%s", all)
	}
}

func testCloseThenUse(t *testing.T, db string) {
	s, _ := openTest(t, db)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Error("Ping after Close succeeded")
	}
	if _, err := s.Deliver(t.Context(), []*mail.Message{testMessage(t, 1, "bob@example.com")}); err == nil {
		t.Error("Deliver after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

// A reader does not queue behind the workers' writes: with every writer
// connection held by a Deliver waiting on a lock, the mailbox API still
// answers at once, from a pool of its own.
func testReaderDoesNotWaitBehindWrites(t *testing.T, db string) {
	url := pgtest.NewSchema(t, db)
	s, err := Open(t.Context(), Config{URL: url, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	deliverOK(t, s, testMessage(t, 1, "bob@example.com"))

	// Another session keeps inserts into mailbox_messages waiting (EXCLUSIVE
	// lets SELECTs through), so the next Deliver holds the one writer
	// connection for as long as the test wants.
	lock, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(context.Background())
	tx, err := lock.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `LOCK TABLE mailbox_messages IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Deliver(t.Context(), []*mail.Message{testMessage(t, 2, "bob@example.com")})
		done <- err
	}()
	waitForLockWaitOn(t, lock)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	page, err := s.Messages(ctx, "bob@example.com", store.Page{Limit: 10})
	if err != nil {
		t.Fatalf("Messages while the writer waits on a lock: %v (the reader queued behind the write)", err)
	}
	if len(page.Messages) != 1 {
		t.Errorf("Messages = %d, want the one committed", len(page.Messages))
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Deliver after the lock went: %v", err)
	}
}
