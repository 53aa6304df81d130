package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// TestWALStaysBoundedUnderReadsAndWrites: a writer that never pauses and
// readers that always overlap (a surge draining while the web app pages)
// must not starve the checkpoint: the WAL file stays within a bound instead
// of growing with everything written.
func TestWALStaysBoundedUnderReadsAndWrites(t *testing.T) {
	was := walRestartAbove
	t.Cleanup(func() { walRestartAbove = was })
	walRestartAbove = 2 << 20 // a test-sized WAL: 16 MiB of mail is 8 of them
	db := filepath.Join(t.TempDir(), "levee.db")
	s, err := Open(t.Context(), Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	path := db + "-wal"
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var reads atomic.Int64
	for range 4 {
		wg.Go(func() {
			for ; ctx.Err() == nil; reads.Add(1) {
				if _, err := s.Messages(ctx, "bob@example.com", store.Page{Limit: 50}); err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
					t.Error(err)
					return
				}
			}
		})
	}
	body := strings.Repeat("x", 4000)
	var written int64
	var peak int64
	for i := 0; written < 16<<20; i++ {
		batch := make([]*mail.Message, 32)
		for j := range batch {
			n := i*32 + j
			raw := fmt.Sprintf("From: s@sender.example\r\nSubject: %d\r\n\r\n%s\r\n", n, body)
			batch[j] = &mail.Message{ID: fmt.Sprintf("wal-%d", n), Envelope: mail.Envelope{From: "s@sender.example", To: []string{"bob@example.com"}, ReceivedAt: time.Now()},
				Raw: []byte(raw), Size: int64(len(raw)), Parsed: &mail.Parsed{Subject: fmt.Sprint(n), Text: body}}
			written += int64(len(raw))
		}
		if _, err := s.Deliver(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path); err == nil {
			peak = max(peak, fi.Size())
		}
	}
	cancel()
	wg.Wait()
	t.Logf("wrote %d MiB of mail under %d reads; WAL peaked at %.1f MiB", written>>20, reads.Load(), float64(peak)/(1<<20))
	if reads.Load() < 100 {
		t.Fatalf("only %d reads overlapped the writes", reads.Load())
	}
	if s.walRestarts.Load() == 0 {
		t.Error("the writer never started the WAL over")
	}
	// Unchecked, it holds all 16 MiB and more; a restart that must wait
	// out busy readers now and then lets it pass 2 MiB for a while.
	if peak > 8<<20 {
		t.Errorf("the WAL grew to %.1f MiB (restarted above 2) while 16 MiB of mail was written: the checkpoint is starved", float64(peak)/(1<<20))
	}
}
