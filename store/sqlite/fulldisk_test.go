package sqlite

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/storetest"
)

// TestFullDiskIsUnavailableAndRecovers: on a full filesystem Deliver fails
// with store.ErrUnavailable (a full disk is an outage, not the messages'
// fault), whether SQLite runs out of room in a statement (a message too big
// for the page cache spills into the WAL) or at the commit, while reads
// and Ping go on. Once space is back the same Store, without a reopen,
// stores the same messages, and the database is intact.
func TestFullDiskIsUnavailableAndRecovers(t *testing.T) {
	disk := storetest.SmallDisk(t, "8m")
	s, err := Open(t.Context(), Config{Path: filepath.Join(disk, "levee.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	first := testMessage(t, 0, "rcpt@example.test")
	if _, err := s.Deliver(t.Context(), msgs(first)); err != nil {
		t.Fatal(err)
	}

	filler := storetest.FillDisk(t, disk)
	big := testMessage(t, 1, "rcpt@example.test")
	big.Raw = []byte(strings.Repeat("x", 3<<20)) // over the 2 MiB page cache
	small := []*mail.Message{testMessage(t, 2, "rcpt@example.test"), testMessage(t, 3, "rcpt@example.test")}
	for _, batch := range [][]*mail.Message{{big}, small} {
		_, err := s.Deliver(t.Context(), batch)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Deliver of %d messages on a full disk: err = %v, want store.ErrUnavailable", len(batch), err)
		}
		t.Logf("on a full disk: %v", err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping on a full disk: %v; reads still work, so it should answer", err)
	}
	if _, err := s.Message(t.Context(), first.ID); err != nil {
		t.Errorf("reading a stored message on a full disk: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for _, batch := range [][]*mail.Message{{big}, small} {
		res, err := s.Deliver(t.Context(), batch)
		if err != nil {
			t.Fatalf("Deliver once space is back: %v", err)
		}
		for _, r := range res {
			if r.Duplicate {
				t.Errorf("%s reported a duplicate: a write that failed on the full disk was kept", r.ID)
			}
		}
	}
	page, err := s.Messages(t.Context(), "rcpt@example.test", store.Page{Limit: 10})
	if err != nil || len(page.Messages) != 4 {
		t.Fatalf("mailbox after recovery: %d messages, %v; want 4", len(page.Messages), err)
	}
	if got := pragma(t, s.write, "integrity_check"); got != "ok" {
		t.Errorf("PRAGMA integrity_check after the full disk = %q", got)
	}
	var busy, frames, copied int
	if err := s.write.QueryRowContext(t.Context(), `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &copied); err != nil || busy != 0 {
		t.Errorf("WAL checkpoint after the full disk: busy %d, %v", busy, err)
	}
}

// TestDiskIOErrorIsUnavailable: a full disk does not always say
// SQLITE_FULL. Opening a database whose WAL index (-shm) must be created
// on a full disk fails with SQLITE_IOERR_SHMSIZE; a write that met the
// same would be no message's fault either.
func TestDiskIOErrorIsUnavailable(t *testing.T) {
	disk := storetest.SmallDisk(t, "8m")
	path := filepath.Join(disk, "levee.db")
	s, err := Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver(t.Context(), msgs(testMessage(t, 0, "rcpt@example.test"))); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // the last close removes the -shm
		t.Fatal(err)
	}
	storetest.FillDisk(t, disk)
	s, err = Open(t.Context(), Config{Path: path})
	if err == nil {
		s.Close()
		t.Fatal("Open needed no room on a full disk; this test needs another way to meet SQLITE_IOERR")
	}
	var se *msqlite.Error
	if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_IOERR {
		t.Fatalf("Open on a full disk: %v; want an SQLITE_IOERR", err)
	}
	if got := wrap(t.Context(), "deliver", err); !errors.Is(got, store.ErrUnavailable) {
		t.Errorf("wrap(%v) = %v, want store.ErrUnavailable", err, got)
	}
}
