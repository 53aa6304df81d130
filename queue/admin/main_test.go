package admin

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/fleet"
	"github.com/levee-mail/levee/queue/queuetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The admin's tools run against a real queue: an embedded JetStream in the
// test's temporary directory.

// testConfig is a queue of one partition: these tests look at the stream
// itself; partition_test.go is about a partitioned queue.
func testConfig(t testing.TB) queue.Config {
	c := queuetest.Config(t)
	c.Partitions = 1
	return c
}

func openQueue(t testing.TB, cfg queue.Config) *queue.Queue { return queuetest.Open(t, cfg, nil) }

func openQueueReg(t testing.TB, cfg queue.Config, reg prometheus.Registerer) *queue.Queue {
	return queuetest.Open(t, cfg, reg)
}

var (
	adminsMu sync.Mutex
	admins   = map[*queue.Queue]*Admin{}
)

// adminOf is the Admin of q's process: one per queue, as in Levee, so that
// its limit changes are serialised like a process's.
func adminOf(t testing.TB, q *queue.Queue) *Admin {
	t.Helper()
	adminsMu.Lock()
	defer adminsMu.Unlock()
	if a, ok := admins[q]; ok {
		return a
	}
	a, err := New(q.Conn(), Config{Queue: q.Config(), Configured: true, LimitsChanged: q.Refresh, Log: queuetest.Log(t)})
	if err != nil {
		t.Fatal(err)
	}
	admins[q] = a
	t.Cleanup(func() {
		adminsMu.Lock()
		delete(admins, q)
		adminsMu.Unlock()
	})
	return a
}

// testMessage is id's message to two recipients, the first at example.com.
func testMessage(id string, size int) *mail.Message {
	m := queuetest.Message(id, size, "b@Example.COM", "c@example.net")
	m.Envelope.ReceivedAt = time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC)
	return m
}

func messageTo(id, rcpt string) *mail.Message {
	m := testMessage(id, 200)
	m.Envelope.To = []string{rcpt}
	return m
}

func ctxT(t testing.TB) context.Context { return queuetest.Ctx(t) }

func streamInfo(t testing.TB, q *queue.Queue, name string) *jetstream.StreamInfo {
	t.Helper()
	return queuetest.Stream(t, q, name)
}

func storedIDs(t testing.TB, q *queue.Queue, name string) map[string]int {
	t.Helper()
	return queuetest.StoredIDs(t, q, name)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	queuetest.WaitFor(t, what, cond)
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// serveStats makes the test a Levee process on q that answers stats
// requests with p.
func serveStats(t testing.TB, q *queue.Queue, p func() fleet.Stats) {
	t.Helper()
	if err := fleet.Serve(q.Conn(), q.Config().Stream, p, nil); err != nil {
		t.Fatal(err)
	}
}

// fetch takes up to n deliveries of the workers' consumer, waiting up to
// 5s for the first.
func fetch(t testing.TB, q *queue.Queue, n int) []queue.Delivery {
	t.Helper()
	c, err := q.Consumer(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ds, _, err := c.Fetch(n, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// queued is the messages in the queue's mail streams of its layout.
func queued(t testing.TB, q *queue.Queue) uint64 {
	t.Helper()
	var n uint64
	for _, p := range q.Config().Layout() {
		n += streamInfo(t, q, p.Stream).State.Msgs
	}
	return n
}
