package sqlite

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// BenchmarkDeliver measures the drain rate one store takes: batches of 4 KiB
// messages, each batch one committed (fsynced) transaction. msgs/s is the
// figure to compare; it depends on the disk's fsync latency far more than
// on the CPU.
func BenchmarkDeliver(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			benchmarkDeliver(b, batch)
		})
	}
}

func benchmarkDeliver(b *testing.B, batch int) {
	s, err := Open(b.Context(), Config{Path: filepath.Join(b.TempDir(), "bench.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()

	header := "From: Sender <sender@sender.example>\r\nTo: rcpt@example.com\r\nSubject: benchmark\r\n" +
		"Date: Tue, 26 Nov 2024 09:00:00 +0000\r\nMessage-ID: <bench@sender.example>\r\n\r\n"
	raw := []byte(header + string(bytes.Repeat([]byte("0123456789abcdef\r\n"), (4096-len(header))/18)))
	raw = append(raw, bytes.Repeat([]byte("."), 4096-len(raw))...)
	parsed, err := mail.Parse(raw, mail.DefaultParseLimits)
	if err != nil {
		b.Fatal(err)
	}
	boxes := []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"}
	next := 0
	msgs := make([]*mail.Message, batch)

	b.SetBytes(int64(batch * len(raw)))
	for b.Loop() {
		for i := range msgs {
			next++
			// The ID alone makes a message new; raw and parsed content are
			// shared, as they cost nothing to the store.
			msgs[i] = &mail.Message{
				ID:       fmt.Sprintf("bench-%012d", next),
				Envelope: mail.Envelope{From: "sender@sender.example", To: []string{boxes[next%len(boxes)]}, ReceivedAt: time.Now()},
				Raw:      raw,
				Size:     int64(len(raw)),
				Parsed:   parsed,
			}
		}
		res, err := s.Deliver(b.Context(), msgs)
		if err != nil {
			b.Fatal(err)
		}
		if res[len(res)-1].Duplicate {
			b.Fatal("a new message was reported as a duplicate")
		}
	}
	b.ReportMetric(float64(next)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkMailboxes measures the folder list a mailbox UI asks for on
// every page (GET /api/v1/mailboxes) with 500 mailboxes, as in make surge:
// Mailboxes' one text value against the rows it replaced, in the same run.
func BenchmarkMailboxes(b *testing.B) {
	s := openTest(b)
	var batch []*mail.Message
	for i := range 500 {
		batch = append(batch, testMessage(b, i, fmt.Sprintf("customer%d@example.com", i)))
	}
	if _, err := s.Deliver(b.Context(), batch); err != nil {
		b.Fatal(err)
	}
	for _, read := range []struct {
		name string
		fn   func(context.Context) ([]store.Mailbox, error)
	}{{"one-value", s.Mailboxes}, {"row-by-row", s.mailboxesByRow}} {
		b.Run("read="+read.name, func(b *testing.B) {
			for b.Loop() {
				mbs, err := read.fn(b.Context())
				if err != nil || len(mbs) != 500 {
					b.Fatalf("%d mailboxes, %v", len(mbs), err)
				}
			}
		})
	}
}

// BenchmarkPageView is what the mailbox UI's page view costs while the
// workers write: the folder list, a page of 25 summaries and one message,
// with a commit of 20 new messages before each view (a commit empties the
// reader connections' page caches, as during a drain). 10,000 messages of
// about 8 KiB in 400 mailboxes. schema=2 is the layout before migration
// 0003, with the bodies ahead of the summary columns; schema=latest after.
//
//	go test -run '^$' -bench PageView ./store/sqlite/
func BenchmarkPageView(b *testing.B) {
	all := mustMigrations(b)
	body := strings.Repeat("a line of text in the body of a message of about 8 KiB\r\n", 145)
	for _, schema := range []struct {
		name string
		n    int
	}{{"2", 2}, {"latest", len(all)}} {
		b.Run("schema="+schema.name, func(b *testing.B) {
			s, err := open(b.Context(), Config{Path: filepath.Join(b.TempDir(), "levee.db")}, all[:schema.n])
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			n := 0
			deliver := func(k int) {
				batch := make([]*mail.Message, 0, k)
				for range k {
					to := []string{fmt.Sprintf("customer%d@example.com", n%400)}
					raw := fmt.Sprintf("From: s%d@sender.example\r\nSubject: page view %d\r\n\r\n%s", n, n, body)
					p, err := mail.Parse([]byte(raw), mail.DefaultParseLimits)
					if err != nil {
						b.Fatal(err)
					}
					batch = append(batch, &mail.Message{ID: mail.ID("s@sender.example", to, []byte(raw)),
						Envelope: mail.Envelope{From: "s@sender.example", To: to}, Raw: []byte(raw), Size: int64(len(raw)), Parsed: p})
					n++
				}
				if _, err := s.Deliver(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			for range 20 {
				deliver(500)
			}
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				deliver(20)
				b.StartTimer()
				if _, err := s.Mailboxes(b.Context()); err != nil {
					b.Fatal(err)
				}
				page, err := s.Messages(b.Context(), fmt.Sprintf("customer%d@example.com", i%400), store.Page{Limit: 25})
				if err != nil || len(page.Messages) != 25 {
					b.Fatalf("%d summaries, %v", len(page.Messages), err)
				}
				if _, err := s.Message(b.Context(), page.Messages[i%25].ID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
