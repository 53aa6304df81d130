package postgres

import (
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/levee-mail/levee/store/postgres/pgtest"
)

func TestMigrationsAreNumberedInOrder(t *testing.T) {
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		t.Fatal("no embedded migrations")
	}
	for i, m := range all {
		if m.Version != i+1 || strings.TrimSpace(m.SQL) == "" {
			t.Errorf("migration %d: %s version %d, %d bytes", i, m.Name, m.Version, len(m.SQL))
		}
	}
}

func migrationRows(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(t.Context(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func testReopenKeepsDataAndSchema(t *testing.T, db string) {
	s, dbURL := openTest(t, db)
	m := testMessage(t, 1, "bob@example.com")
	deliverOK(t, s, m)
	first := getMessage(t, s, m.ID)
	all, _ := migrations()
	if n := migrationRows(t, s); n != len(all) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, len(all))
	}
	s.Close()

	s = openURL(t, dbURL)
	if n := migrationRows(t, s); n != len(all) {
		t.Errorf("schema_migrations has %d rows after reopen, want %d", n, len(all))
	}
	if s.floor.Load() != first.StoredAt.UnixMicro() {
		t.Errorf("floor after reopen = %d, want the latest stored_at %d", s.floor.Load(), first.StoredAt.UnixMicro())
	}
	res := deliverOK(t, s, m)
	if !res[0].Duplicate {
		t.Fatal("redelivery after reopen was not a duplicate")
	}
}

// Several processes starting at once on an empty schema (two `levee
// worker`s in a fresh deployment) all open it, and the tables are built once.
func testConcurrentOpenOnEmptySchema(t *testing.T, db string) {
	dbURL := pgtest.NewSchema(t, db)
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			stores[i], errs[i] = Open(t.Context(), Config{URL: dbURL, MaxConns: 2})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	all, _ := migrations()
	if got := migrationRows(t, stores[0]); got != len(all) {
		t.Errorf("schema_migrations has %d rows, want %d (each migration once)", got, len(all))
	}
	// Every store works on the one schema.
	for i, s := range stores {
		deliverOK(t, s, testMessage(t, i, "bob@example.com"))
	}
	if boxes, err := stores[0].Mailboxes(t.Context()); err != nil || len(boxes) != 1 || boxes[0].Messages != n {
		t.Errorf("Mailboxes = %+v, %v; want bob@example.com with %d messages", boxes, err, n)
	}
}

func testOpenRefusesNewerSchema(t *testing.T, db string) {
	s, dbURL := openTest(t, db)
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO schema_migrations (version, name) VALUES (999, '0999_future.sql')`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(t.Context(), Config{URL: dbURL})
	if err == nil {
		s2.Close()
		t.Fatal("Open of a database from a newer binary succeeded")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("err = %v, want it to say the schema is newer", err)
	}
}

// A search_path that names no existing schema is a clear error, not
// PostgreSQL's "no schema has been selected to create in".
func testOpenWithoutSchema(t *testing.T, db string) {
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("options", "-csearch_path=does_not_exist")
	u.RawQuery = q.Encode()
	s, err := Open(t.Context(), Config{URL: u.String()})
	if err == nil {
		s.Close()
		t.Fatal("Open with a search_path naming no schema succeeded")
	}
	if !strings.Contains(err.Error(), "does_not_exist") {
		t.Errorf("err = %v, want it to name the search_path", err)
	}
}

// testLargeColumnsUseLZ4: the bodies are compressed with lz4, the cheaper
// method (migration 0002), on a server that has it, as this one must; and a
// stored body that lz4 compressed reads back whole.
func testLargeColumnsUseLZ4(t *testing.T, db string) {
	s, _ := openTest(t, db)
	rows, err := s.pool.Query(t.Context(), `SELECT c.relname || '.' || a.attname, a.attcompression
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		WHERE c.relname IN ('messages', 'attachments') AND c.relnamespace = current_schema()::regnamespace
		AND a.attname IN ('raw', 'text_body', 'html_body', 'headers', 'content')`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var col, method string
		if err := rows.Scan(&col, &method); err != nil {
			t.Fatal(err)
		}
		got[col] = method
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"messages.raw", "messages.text_body", "messages.html_body", "messages.headers", "attachments.content"} {
		if got[col] != "l" {
			t.Errorf("%s compression %q, want lz4 (l); all: %v", col, got[col], got)
		}
	}

	m := testMessage(t, 1, "lz4@example.com")
	m.Raw = append(m.Raw, []byte(strings.Repeat("compressible mail body line\r\n", 2000))...)
	deliverOK(t, s, m)
	var method string
	if err := s.pool.QueryRow(t.Context(), `SELECT pg_column_compression(raw) FROM messages WHERE id = $1`, m.ID).Scan(&method); err != nil {
		t.Fatal(err)
	}
	if method != "lz4" {
		t.Errorf("a stored raw message is compressed with %q, want lz4", method)
	}
	if back, err := s.Raw(t.Context(), m.ID); err != nil || string(back) != string(m.Raw) {
		t.Errorf("raw message read back differs: %d bytes (%v), want %d", len(back), err, len(m.Raw))
	}
}
