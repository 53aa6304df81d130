package queue

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/levee-mail/levee/mail"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server 2.15.2: an atomic batch whose messages arrive while
		// the server shuts down gets a staging file store after the stream
		// has stopped its batches; the batch's 10s inactivity timer deletes
		// it later. Seen only in TestPublishServerDownAndBack, which shuts
		// a server down under load on purpose. These are the staging
		// store's goroutines; every other server goroutine is still checked.
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*msgBlock).flushLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"),
	)
}

// testConfig is an embedded queue in a fresh directory with short timeouts,
// on one partition: these tests look at the stream itself (partition_test.go
// is about partitions).
func testConfig(t testing.TB) Config {
	c := DefaultConfig()
	c.Partitions = 1
	c.DataDir = t.TempDir()
	c.PublishTimeout = 3 * time.Second
	c.MinBatch = 2 // exercise atomic batches whenever two publishes meet
	return c
}

// testLog shows the queue's warnings in the test's output only.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func openQueue(t testing.TB, cfg Config) *Queue {
	t.Helper()
	return openQueueReg(t, cfg, prometheus.NewRegistry())
}

func openQueueReg(t testing.TB, cfg Config, reg prometheus.Registerer) *Queue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q, err := Open(ctx, cfg, reg, testLog(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := q.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q
}

func testMessage(id string, size int) *mail.Message {
	raw := []byte("From: a@example.org\r\nTo: b@example.com\r\nSubject: " + id + "\r\n\r\n")
	for len(raw) < size {
		raw = append(raw, "the quick brown fox jumps over the lazy dog\r\n"...)
	}
	return &mail.Message{
		ID: id,
		Envelope: mail.Envelope{
			From:       "a@example.org",
			To:         []string{"b@Example.COM", "c@example.net"},
			RemoteAddr: "192.0.2.1:40000",
			Helo:       "mx.example.org",
			ReceivedAt: time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC),
		},
		Raw:  raw,
		Size: int64(len(raw)),
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func streamInfo(t testing.TB, q *Queue, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := q.JetStream().Stream(ctxT(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo()
}

// storedIDs reads every message of the stream and returns its Nats-Msg-Ids
// with their counts.
func storedIDs(t testing.TB, q *Queue, name string) map[string]int {
	t.Helper()
	ctx := ctxT(t)
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
		ids[m.Header.Get(HeaderMsgID)]++
	}
	return ids
}

// storedInAll counts the Nats-Msg-Ids of every mail stream the queue drains.
func storedInAll(t testing.TB, q *Queue) map[string]int {
	t.Helper()
	all := map[string]int{}
	for _, p := range q.mailStreams() {
		for id, n := range storedIDs(t, q, p.Stream) {
			all[id] += n
		}
	}
	return all
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// publishAll publishes a 200-byte message for each id.
func publishAll(ctx context.Context, t testing.TB, q *Queue, ids []string) {
	t.Helper()
	for _, id := range ids {
		if _, err := q.Publish(ctx, testMessage(id, 200)); err != nil {
			t.Fatal(err)
		}
	}
}

// takeAcked fetches and acknowledges n messages within 10 s and returns
// their ids; fewer fail the test.
func takeAcked(t testing.TB, cons *Consumer, n int) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		ds, _, err := cons.Fetch(n, 200*time.Millisecond)
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		for _, d := range ds {
			m, err := d.Message()
			if err != nil {
				t.Fatal(err)
			}
			got[m.ID] = true
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(got) != n {
		t.Fatalf("fetched %d messages, want %d", len(got), n)
	}
	return got
}
