package postgres

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store/postgres/pgtest"
)

// BenchmarkDeliver measures the drain rate one store takes, as
// store/sqlite's BenchmarkDeliver does: batches of 4 KiB messages, each
// batch one committed transaction (flushed: synchronous_commit=on). msgs/s
// is the figure to compare; it depends on the server's WAL flush latency
// far more than on the CPU.
func BenchmarkDeliver(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			benchmarkDeliver(b, batch)
		})
	}
}

func benchmarkDeliver(b *testing.B, batch int) {
	s, err := Open(b.Context(), Config{URL: pgtest.NewDatabase(b)})
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
