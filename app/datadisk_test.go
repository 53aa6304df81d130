package app_test

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/app"
	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/internal/diskspace"
	"github.com/levee-mail/levee/store/storetest"
)

// smallDiskConfig is `levee serve` with its whole data directory (the
// embedded JetStream and SQLite) on a 64 MiB tmpfs: the queue's limits are
// small enough for the server to reserve them there (it offers 75% of the
// free space at start).
func smallDiskConfig(t *testing.T) (app.Config, string) {
	disk := storetest.SmallDisk(t, "64m")
	cfg := apptest.Config(t)
	cfg.DataDir = disk
	cfg.Queue.MaxBytes = 8 << 20
	cfg.Queue.MaxMsgSize = 1 << 20
	cfg.SMTP.MaxMessageBytes = 512 << 10
	cfg.SMTP.PublishTimeout = 3 * time.Second
	return cfg, disk
}

// TestFullDataDiskDefersMailAndHeals (issue 12 item 6): the data directory's
// filesystem fills up under a running `levee serve`. Senders get a 4xx,
// never a 5xx, and 452 4.3.1 once the queue knows its disk is full; /readyz
// fails its queue check; once space is back mail is accepted again without a
// restart, and every message answered 250 is stored exactly once. Before the
// fix every DATA waited out the publish timeout for 451 4.3.0, /readyz said
// ready, and no publish succeeded after the space came back.
func TestFullDataDiskDefersMailAndHeals(t *testing.T) {
	cfg, disk := smallDiskConfig(t)
	cfg.DataMinFree = 0 // the floor off: this is about writes that fail
	l := apptest.Start(t, cfg)

	accepted := map[string]bool{}
	send := func(i int) string {
		err := apptest.Send(l.SMTPAddr, "sender@client.test", []string{"rcpt@example.test"}, apptest.Message(i, 2048))
		code := apptest.ReplyCode(err)
		if err == nil {
			accepted[fmt.Sprintf("test message %d", i)] = true
		} else if !strings.HasPrefix(code, "4") {
			t.Fatalf("message %d: %s, want 250 or a temporary 4xx", i, code)
		}
		return code
	}
	i := 0
	for ; i < 20; i++ {
		if code := send(i); code != "" {
			t.Fatalf("message %d before the disk filled: %s", i, code)
		}
	}

	filler := storetest.FillDisk(t, disk)
	replies := map[string]int{}
	defer func() {
		if t.Failed() {
			t.Logf("replies on the full disk: %v; answered 250 in all: %d", replies, len(accepted))
		}
	}()
	apptest.WaitFor(t, 90*time.Second, "452 4.3.1 for mail on a full disk", func() bool {
		code := send(i)
		i++
		replies[code]++
		return code == "452 4.3.1"
	})
	t.Logf("full disk: replies %v", replies)
	code, checks := readyz(t, l)
	if code != http.StatusServiceUnavailable || checks["queue"] != "failed" {
		t.Errorf("/readyz on a full disk: %d %v, want 503 with the queue check failed", code, checks)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	apptest.WaitFor(t, 120*time.Second, "mail accepted again once space is back", func() bool {
		code := send(i)
		i++
		return code == ""
	})
	t.Logf("accepted again %s after the space came back", time.Since(start).Round(time.Millisecond))
	// The restart that reopens the store may still be under way (a publish
	// it cuts off gets a 451, which a sender retries): once ready, every
	// message is taken.
	apptest.WaitFor(t, 60*time.Second, "/readyz ready again", func() bool {
		code, _ := readyz(t, l)
		return code == http.StatusOK
	})
	for range 10 {
		if code := send(i); code != "" {
			t.Fatalf("message %d after recovery: %s", i, code)
		}
		i++
	}

	var got []apptest.Summary
	apptest.WaitFor(t, 120*time.Second, "every accepted message stored", func() bool {
		got = l.Mailbox("rcpt@example.test")
		return len(got) >= len(accepted)
	})
	apptest.WaitFor(t, 60*time.Second, "the queue drained", func() bool {
		msgs, _, err := l.Queue.Backlog(t.Context())
		return err == nil && msgs == 0
	})
	got = l.Mailbox("rcpt@example.test")
	seen := map[string]int{}
	for _, s := range got {
		seen[s.Subject]++
	}
	for subj, n := range seen {
		if n != 1 {
			t.Errorf("%q stored %d times", subj, n)
		}
	}
	for subj := range accepted {
		if seen[subj] == 0 {
			t.Errorf("%q was answered 250 and is not stored", subj)
		}
	}
	t.Logf("%d messages sent, %d answered 250, %d stored", i, len(accepted), len(got))
	if dl := deadLettered(t, l); dl != 0 {
		t.Errorf("%v messages dead-lettered", dl)
	}
}

// TestDataMinFreeDefersMail (issue 12 item 7): below data_min_free on the
// data directory's filesystem MAIL FROM gets 452 4.3.1 while writes would
// still succeed, and above it mail flows again, without a restart. Before
// the floor, the mail was taken until the disk was full.
func TestDataMinFreeDefersMail(t *testing.T) {
	cfg, disk := smallDiskConfig(t)
	cfg.DataMinFree = 24 << 20
	l := apptest.Start(t, cfg)
	send := func(i int) string {
		return apptest.ReplyCode(apptest.Send(l.SMTPAddr, "sender@client.test", []string{"rcpt@example.test"}, apptest.Message(i, 2048)))
	}
	if code := send(0); code != "" {
		t.Fatalf("with room to spare: %s, want 250", code)
	}

	// Leave 8 MiB: below the floor, far from full.
	free, err := diskspace.Free(disk)
	if err != nil {
		t.Fatal(err)
	}
	ballast := disk + "/ballast"
	f, err := os.Create(ballast)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, free-8<<20)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	below := 0
	defer func() {
		if t.Failed() {
			t.Logf("below the floor: %d messages answered 250", below)
		}
	}()
	apptest.WaitFor(t, 30*time.Second, "452 4.3.1 below data_min_free", func() bool {
		code := send(1 + below)
		if code == "" {
			below++
		}
		if code != "" && code != "452 4.3.1" {
			t.Fatalf("below the floor: %s, want 452 4.3.1 (or 250 until the floor is measured)", code)
		}
		return code == "452 4.3.1"
	})
	if v := diskFree(t, l, "jetstream"); v >= 24<<20 {
		t.Errorf("levee_disk_free_bytes{volume=jetstream} = %v below the floor", v)
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	apptest.WaitFor(t, 30*time.Second, "250 once space is back", func() bool { return send(1000) == "" })
	apptest.WaitFor(t, 60*time.Second, "every accepted message stored", func() bool {
		return len(l.Mailbox("rcpt@example.test")) >= 2+below
	})
}

// diskFree is levee_disk_free_bytes of a volume (-1 when not reported).
func diskFree(t *testing.T, l *apptest.Levee, volume string) float64 {
	t.Helper()
	mfs, err := l.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "levee_disk_free_bytes" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == volume {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
