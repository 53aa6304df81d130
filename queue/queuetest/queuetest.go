package queuetest

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
)

// Config is an embedded queue in a fresh directory with short timeouts.
func Config(t testing.TB) queue.Config {
	c := queue.DefaultConfig()
	c.DataDir = t.TempDir()
	c.PublishTimeout = 3 * time.Second
	c.MinBatch = 2 // exercise atomic batches whenever two publishes meet
	return c
}

// Log shows warnings and errors in the test's output only.
func Log(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Open opens the queue cfg describes, with its metrics in reg (nil: a
// registry of its own), and closes it when the test ends.
func Open(t testing.TB, cfg queue.Config, reg prometheus.Registerer) *queue.Queue {
	t.Helper()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q, err := queue.Open(ctx, cfg, reg, Log(t))
	if err != nil {
		t.Fatalf("queue.Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Close(ctx); err != nil {
			t.Errorf("queue.Close: %v", err)
		}
	})
	return q
}

// Message is a message of about size bytes with the given ID, to rcpt
// (default b@example.com).
func Message(id string, size int, rcpt ...string) *mail.Message {
	if len(rcpt) == 0 {
		rcpt = []string{"b@example.com"}
	}
	raw := []byte("From: a@example.org\r\nTo: " + strings.Join(rcpt, ", ") + "\r\nSubject: " + id + "\r\n\r\n")
	for len(raw) < size {
		raw = append(raw, "the quick brown fox jumps over the lazy dog\r\n"...)
	}
	return &mail.Message{
		ID: id,
		Envelope: mail.Envelope{
			From:       "a@example.org",
			To:         rcpt,
			RemoteAddr: "192.0.2.1:40000",
			Helo:       "mx.example.org",
			ReceivedAt: time.Now(),
		},
		Raw:  raw,
		Size: int64(len(raw)),
	}
}

// Ctx is a context that ends with the test, or after 20 seconds.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Stream reads the stream's info afresh.
func Stream(t testing.TB, q *queue.Queue, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := q.JetStream().Stream(Ctx(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo()
}

// StoredIDs reads every message of the stream and counts them by
// Nats-Msg-Id.
func StoredIDs(t testing.TB, q *queue.Queue, name string) map[string]int {
	t.Helper()
	ctx := Ctx(t)
	s, err := q.JetStream().Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	ids := map[string]int{}
	if info.State.Msgs == 0 {
		return ids
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		ids[m.Header.Get(queue.HeaderMsgID)]++
	}
	return ids
}

// WaitFor polls cond until it holds, failing the test after 10 seconds.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
