package sqlite

import (
	"path/filepath"
	"strings"
	"testing"
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
	if err := s.read.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "levee.db") // Open creates the directories
	s, err := Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	m := testMessage(t, 1, "bob@example.com")
	if _, err := s.Deliver(t.Context(), msgs(m)); err != nil {
		t.Fatal(err)
	}
	first, err := s.Message(t.Context(), m.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := migrationRows(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if got := migrationRows(t, s); got != want {
		t.Errorf("schema_migrations has %d rows after reopen, want %d", got, want)
	}
	res, err := s.Deliver(t.Context(), msgs(m))
	if err != nil || !res[0].Duplicate {
		t.Fatalf("redelivery after reopen = %v, %v; want a duplicate", res, err)
	}
	// stored_at continues above what the file holds, even if the clock did not.
	s.lastStored = first.StoredAt.UnixMicro() + 1e9 // as if the clock stepped back 1000 s
	n := testMessage(t, 2, "bob@example.com")
	if _, err := s.Deliver(t.Context(), msgs(n)); err != nil {
		t.Fatal(err)
	}
	second, err := s.Message(t.Context(), n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !second.StoredAt.After(first.StoredAt) {
		t.Errorf("StoredAt %v not after %v", second.StoredAt, first.StoredAt)
	}
}

func TestOpenSeedsLastStored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "levee.db")
	s, err := Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver(t.Context(), msgs(testMessage(t, 1, "bob@example.com"))); err != nil {
		t.Fatal(err)
	}
	last := s.lastStored
	s.Close()
	s, err = Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.lastStored != last {
		t.Errorf("lastStored after reopen = %d, want %d", s.lastStored, last)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "levee.db")
	s, err := Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.write.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(t.Context(), Config{Path: path})
	if err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer binary succeeded")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("err = %v, want it to say the schema is newer", err)
	}
}
