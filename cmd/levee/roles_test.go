package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/natsserver"
	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/postgres"
	"github.com/levee-mail/levee/store/postgres/pgtest"
)

// jetStream starts a JetStream server of the test's own, for role processes
// to share as their external JetStream.
func jetStream(t testing.TB) *natsserver.Server {
	t.Helper()
	srv, err := natsserver.Start(natsserver.Config{DataDir: filepath.Join(t.TempDir(), "js"), Host: "127.0.0.1", Port: -1,
		SyncAlways: true, MaxPayload: queue.DefaultMaxMsgSize + 64<<10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// publishBacklog queues n distinct messages straight into the stream.
func publishBacklog(t *testing.T, url string, n int) map[string]bool {
	t.Helper()
	ctx := context.Background()
	cfg := queue.DefaultConfig()
	cfg.URL = url
	q, err := queue.Open(ctx, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close(ctx)
	ids := make(map[string]bool, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 20 {
				body := apptest.Message(i, 2048)
				env := mail.Envelope{From: "s@client.test", To: []string{"rcpt@example.test"}, ReceivedAt: time.Now()}
				m := &mail.Message{ID: mail.ID(env.From, env.To, body), Envelope: env, Raw: body, Size: int64(len(body))}
				if _, err := q.Publish(ctx, m); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				ids[m.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

func openPostgres(t *testing.T, url string) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// storedCount is how many messages the mailbox holds, read through the
// mailbox counter and through the listing, which must agree.
func storedCount(t *testing.T, st store.Store) int {
	t.Helper()
	boxes, err := st.Mailboxes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range boxes {
		if b.Address == "rcpt@example.test" {
			return int(b.Messages)
		}
	}
	return 0
}

// checkExactlyOnce walks the mailbox and compares it with the published ids.
func checkExactlyOnce(t *testing.T, st store.Store, want map[string]bool) {
	t.Helper()
	seen := map[string]int{}
	cursor := ""
	for {
		page, err := st.Messages(context.Background(), "rcpt@example.test", store.Page{Limit: store.MaxPageLimit, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.Messages {
			seen[s.ID]++
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("message %s listed %d times", id, n)
		}
		if !want[id] {
			t.Errorf("message %s stored but never published", id)
		}
	}
	for id := range want {
		if seen[id] == 0 {
			t.Errorf("message %s published but not stored", id)
		}
	}
	if c := storedCount(t, st); c != len(want) {
		t.Errorf("mailbox counter %d, want %d", c, len(want))
	}
}

func workerArgs(t *testing.T, natsURL, storeURL string, extra ...string) []string {
	return append([]string{"worker", "--nats-url", natsURL, "--store", storeURL, "--http-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--log-level", "info"}, extra...)
}

// storedBy reads levee_worker_deliveries_total{result="stored"} from a process's /metrics.
func storedBy(t *testing.T, p *process) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, `levee_worker_deliveries_total{result="stored"}`) {
			var v float64
			fmt.Sscanf(strings.Fields(line)[1], "%g", &v)
			return v
		}
	}
	return 0
}

func TestTwoWorkerProcessesDrainIntoPostgresExactlyOnce(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	js := jetStream(t)
	want := publishBacklog(t, js.ClientURL(), 2000)
	st := openPostgres(t, dsn)

	a := startProcess(t, workerArgs(t, js.ClientURL(), dsn, "--workers", "2", "--worker-batch-size", "16")...)
	b := startProcess(t, workerArgs(t, js.ClientURL(), dsn, "--workers", "2", "--worker-batch-size", "16")...)
	apptest.WaitFor(t, 120*time.Second, "2000 stored", func() bool { return storedCount(t, st) >= 2000 })
	time.Sleep(500 * time.Millisecond) // a straggling duplicate would show now
	checkExactlyOnce(t, st, want)
	sa, sb := storedBy(t, a), storedBy(t, b)
	if sa == 0 || sb == 0 || sa+sb != 2000 {
		t.Errorf("stored by process a %v, b %v: want both sharing the 2000", sa, sb)
	}
	for name, p := range map[string]*process{"a": a, "b": b} {
		if err := p.stop(30 * time.Second); err != nil {
			t.Errorf("worker %s: exit %v after SIGTERM", name, err)
		}
	}
}

func TestSIGTERMWorkerMidDrainOtherFinishesExactlyOnce(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	js := jetStream(t)
	want := publishBacklog(t, js.ClientURL(), 2000)
	st := openPostgres(t, dsn)

	a := startProcess(t, workerArgs(t, js.ClientURL(), dsn, "--workers", "2", "--worker-batch-size", "8")...)
	b := startProcess(t, workerArgs(t, js.ClientURL(), dsn, "--workers", "1", "--worker-batch-size", "8")...)
	apptest.WaitFor(t, 60*time.Second, "drain under way", func() bool { return storedCount(t, st) >= 300 })
	if err := a.stop(30 * time.Second); err != nil {
		t.Fatalf("worker a: exit %v after SIGTERM, want 0", err)
	}
	if n := storedCount(t, st); n >= 2000 {
		t.Fatalf("the drain finished before SIGTERM took effect (%d stored): the test proves nothing", n)
	}
	apptest.WaitFor(t, 120*time.Second, "the other worker finishes", func() bool { return storedCount(t, st) >= 2000 })
	time.Sleep(500 * time.Millisecond)
	checkExactlyOnce(t, st, want)
	if b.exited() {
		t.Fatal("worker b exited")
	}
	if err := b.stop(30 * time.Second); err != nil {
		t.Errorf("worker b: exit %v", err)
	}
}

// TestPostgresOutageDuringDrain cuts the workers' connection to PostgreSQL
// (through a proxy: the shared server stays up for other tests) while mail
// keeps arriving over SMTP.
func TestPostgresOutageDuringDrain(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	proxy := pgtest.NewProxy(t, "127.0.0.1:5432")
	cfg := apptest.Config(t)
	cfg.Store = strings.Replace(dsn, "127.0.0.1:5432", proxy.Addr(), 1)
	if cfg.Store == dsn {
		t.Fatalf("test database URL %q does not name 127.0.0.1:5432", dsn)
	}
	cfg.Worker.RetryDelay = 50 * time.Millisecond
	cfg.Worker.MaxRetryDelay = 500 * time.Millisecond
	l := apptest.Start(t, cfg)
	st := openPostgres(t, dsn) // the test's own view, not through the proxy

	sent := map[int]bool{}
	sendN := func(from, to int) {
		for i := from; i < to; i++ {
			if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, apptest.Message(i, 1500)); err != nil {
				t.Fatalf("message %d: %s (SMTP must keep accepting during a store outage)", i, apptest.ReplyCode(err))
			}
			sent[i] = true
		}
	}
	sendN(0, 50)
	apptest.WaitFor(t, 30*time.Second, "first messages stored", func() bool { return storedCount(t, st) >= 10 })

	proxy.Cut()
	sendN(50, 250)
	apptest.WaitFor(t, 20*time.Second, "workers notice the outage", func() bool {
		return gaugeValue(t, l, "levee_worker_store_available") == 0
	})
	before := storedCount(t, st)
	time.Sleep(time.Second)
	if after := storedCount(t, st); after != before {
		t.Fatalf("stored %d -> %d while the store was cut off", before, after)
	}
	queued, err := l.Admin.Status(context.Background())
	if err != nil || queued.Messages == 0 {
		t.Fatalf("the queue should hold the mail during the outage: %+v, %v", queued, err)
	}

	proxy.Restore()
	apptest.WaitFor(t, 60*time.Second, "everything stored after recovery", func() bool { return storedCount(t, st) >= len(sent) })
	time.Sleep(500 * time.Millisecond)
	if n := storedCount(t, st); n != len(sent) {
		t.Fatalf("stored %d, sent %d", n, len(sent))
	}
	if s, _ := l.Admin.Status(context.Background()); s.DeadLetters != 0 {
		t.Fatalf("%d messages dead-lettered by an outage", s.DeadLetters)
	}
}

func gaugeValue(t *testing.T, l *apptest.Levee, name string) float64 {
	t.Helper()
	mfs, err := l.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
