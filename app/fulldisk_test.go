package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store/storetest"
)

// TestFullStoreDiskHoldsMailAndHeals (issue 12 item 5): with the SQLite
// store on a filesystem that is full, queued mail waits in the queue
// instead of being dead-lettered, /readyz names the store, and once space
// comes back every message is stored exactly once without a restart.
// Before the fix, SQLITE_FULL on a store that still answered Ping was taken
// for the messages' fault: they were retried max_deliver times and
// dead-lettered while /readyz said ready.
func TestFullStoreDiskHoldsMailAndHeals(t *testing.T) {
	disk := storetest.SmallDisk(t, "8m")
	cfg := apptest.Config(t)
	cfg.Store = disk + "/levee.db"
	// Few, fast attempts: a message taken for faulty is dead-lettered
	// within a second, well inside the wait below.
	cfg.Queue.MaxDeliver = 3
	cfg.Worker.RetryDelay = 20 * time.Millisecond
	cfg.Worker.MaxRetryDelay = 200 * time.Millisecond
	l := apptest.Start(t, cfg)
	if code, checks := readyz(t, l); code != http.StatusOK {
		t.Fatalf("/readyz before the disk filled: %d %v, want 200", code, checks)
	}

	filler := storetest.FillDisk(t, disk)
	const n = 60
	ids := map[string]bool{}
	for i := range n {
		body := apptest.Message(i, 2048)
		env := mail.Envelope{From: "sender@client.test", To: []string{"rcpt@example.test"}, ReceivedAt: time.Now()}
		m := &mail.Message{ID: mail.ID(env.From, env.To, body), Envelope: env, Raw: body, Size: int64(len(body))}
		if _, err := l.Queue.Publish(t.Context(), m); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		ids[m.ID] = true
	}

	// Many failed writes: more than max_deliver for every message, had
	// each failure counted against its messages.
	apptest.WaitFor(t, 60*time.Second, "the workers to meet the full disk again and again", func() bool {
		return writeErrors(t, l) >= 3*n || deadLettered(t, l) > 0
	})
	if dl := deadLettered(t, l); dl != 0 {
		t.Fatalf("%v messages dead-lettered while the store's disk was full; a full disk is an outage, not the messages' fault", dl)
	}
	if code, checks := readyz(t, l); code != http.StatusServiceUnavailable || checks["store"] != "failed" {
		t.Fatalf("/readyz while the store's disk is full: %d %v, want 503 with the store check failed", code, checks)
	}
	if up := storeAvailable(t, l); up != 0 {
		t.Fatalf("levee_worker_store_available = %v while the store's disk is full, want 0", up)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	var got []apptest.Summary
	apptest.WaitFor(t, 120*time.Second, "every message stored once space is back", func() bool {
		got = l.Mailbox("rcpt@example.test")
		return len(got) >= n
	})
	apptest.WaitFor(t, 60*time.Second, "/readyz ready again", func() bool {
		code, _ := readyz(t, l)
		return code == http.StatusOK
	})
	apptest.WaitFor(t, 30*time.Second, "the queue drained", func() bool {
		msgs, _, err := l.Queue.Backlog(t.Context())
		return err == nil && msgs == 0
	})
	got = l.Mailbox("rcpt@example.test")
	if len(got) != n {
		t.Fatalf("mailbox holds %d messages, want exactly %d", len(got), n)
	}
	for _, s := range got {
		if !ids[s.ID] {
			t.Fatalf("stored %s, which was never queued or is stored twice", s.ID)
		}
		delete(ids, s.ID)
	}
	if dl := deadLettered(t, l); dl != 0 {
		t.Fatalf("%v messages dead-lettered", dl)
	}
	if up := storeAvailable(t, l); up != 1 {
		t.Fatalf("levee_worker_store_available = %v after recovery, want 1", up)
	}
}

// readyz returns /readyz's status and its checks.
func readyz(t *testing.T, l *apptest.Levee) (int, map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.HTTPURL+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET /readyz: decode: %v", err)
	}
	return resp.StatusCode, body.Checks
}

// writeErrors is the number of store transactions that failed.
func writeErrors(t *testing.T, l *apptest.Levee) uint64 {
	t.Helper()
	mfs, err := l.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "levee_store_write_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "error" {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// deadLettered is the number of messages the workers dead-lettered.
func deadLettered(t *testing.T, l *apptest.Levee) float64 {
	t.Helper()
	mfs, err := l.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "levee_worker_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "dead_lettered" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// storeAvailable is levee_worker_store_available.
func storeAvailable(t *testing.T, l *apptest.Levee) float64 {
	t.Helper()
	mfs, err := l.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "levee_worker_store_available" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
