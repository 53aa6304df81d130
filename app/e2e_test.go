package app_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/natsserver"
)

func TestEndToEnd200MessagesStoredExactlyOnce(t *testing.T) {
	l := apptest.Start(t, apptest.Config(t))
	const conns, perConn = 10, 20
	sent := make(map[string][]byte) // subject -> body
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client, err := smtp.Dial(l.SMTPAddr)
			if err != nil {
				errs <- err
				return
			}
			defer client.Close()
			if err := client.Hello("client.levee.test"); err != nil {
				errs <- err
				return
			}
			for i := range perConn {
				n := c*perConn + i
				body := apptest.Message(n, 2000+n*37)
				if err := apptest.SendOn(client, "sender@client.test", []string{"rcpt@example.test"}, body); err != nil {
					errs <- fmt.Errorf("message %d: %s", n, apptest.ReplyCode(err))
					return
				}
				mu.Lock()
				sent[fmt.Sprintf("test message %d", n)] = body
				mu.Unlock()
			}
			errs <- client.Quit()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(sent) != conns*perConn {
		t.Fatalf("sent %d messages, want %d", len(sent), conns*perConn)
	}

	var got []apptest.Summary
	apptest.WaitFor(t, 60*time.Second, "all messages stored", func() bool {
		got = l.Mailbox("rcpt@example.test")
		return len(got) >= len(sent)
	})
	// Let any straggling duplicate land before counting.
	time.Sleep(300 * time.Millisecond)
	got = l.Mailbox("rcpt@example.test")
	if len(got) != len(sent) {
		t.Fatalf("mailbox holds %d messages, want exactly %d", len(got), len(sent))
	}
	seen := map[string]bool{}
	for _, s := range got {
		if seen[s.Subject] {
			t.Fatalf("message %q stored twice", s.Subject)
		}
		seen[s.Subject] = true
		body, ok := sent[s.Subject]
		if !ok {
			t.Fatalf("stored message %q was never sent", s.Subject)
		}
		apptest.CheckStoredAsSent(t, l.Raw(s.ID), body)
		var full struct {
			ID       string `json:"id"`
			Envelope struct {
				From string   `json:"from"`
				To   []string `json:"to"`
			} `json:"envelope"`
			Parsed struct {
				Subject string `json:"subject"`
			} `json:"parsed"`
		}
		if code := l.GetJSON("/api/v1/messages/"+s.ID, &full); code != 200 {
			t.Fatalf("GET message %s: %d", s.ID, code)
		}
		if full.Parsed.Subject != s.Subject || full.Envelope.From != "sender@client.test" || len(full.Envelope.To) != 1 {
			t.Fatalf("message %s: unexpected JSON %+v", s.ID, full)
		}
	}
}

func TestSameMessageTwiceIsStoredOnce(t *testing.T) {
	l := apptest.Start(t, apptest.Config(t))
	body := apptest.Message(1, 1000)
	for i := range 2 {
		if err := apptest.Send(l.SMTPAddr, "a@client.test", []string{"rcpt@example.test", "second@other.test"}, body); err != nil {
			t.Fatalf("send %d: %s", i, apptest.ReplyCode(err))
		}
	}
	// A different envelope with the same body is a different message.
	if err := apptest.Send(l.SMTPAddr, "b@client.test", []string{"rcpt@example.test"}, body); err != nil {
		t.Fatalf("send other envelope: %s", apptest.ReplyCode(err))
	}
	apptest.WaitFor(t, 30*time.Second, "two messages stored", func() bool { return len(l.Mailbox("rcpt@example.test")) >= 2 })
	time.Sleep(500 * time.Millisecond)
	if n := len(l.Mailbox("rcpt@example.test")); n != 2 {
		t.Fatalf("rcpt@example.test holds %d messages, want 2 (the repeat is a duplicate)", n)
	}
	if n := len(l.Mailbox("second@other.test")); n != 1 {
		t.Fatalf("second@other.test holds %d messages, want 1", n)
	}
}

func TestQueueAtLimitsDefersThenAcceptsAfterDrain(t *testing.T) {
	for _, tc := range []struct {
		name      string
		perDomain bool
	}{
		// The domain's cap (JetStream's per-subject limit) is reached while
		// the queue's fill stays far below the watermark: the PubAck error
		// decides, at DATA.
		{"jetstream limit at DATA", true},
		{"high watermark at MAIL FROM", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := apptest.Config(t)
			cfg.Queue.MaxMsgs = 5
			if tc.perDomain {
				cfg.Queue.MaxMsgs, cfg.Queue.PerDomainMaxMsgs = 100000, 5
			}
			cfg.Worker.Concurrency = 0
			l := apptest.Start(t, cfg)
			var deferred []byte
			for i := range 20 {
				body := apptest.Message(i, 500)
				err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, body)
				if err == nil {
					continue
				}
				if got := apptest.ReplyCode(err); got != "452 4.3.1" {
					t.Fatalf("message %d: reply %q, want 452 4.3.1", i, got)
				}
				deferred = body
				break
			}
			if deferred == nil {
				t.Fatal("20 messages into a queue of 5 with stopped workers: never deferred")
			}
			l.Worker.SetConcurrency(2)
			apptest.WaitFor(t, 30*time.Second, "queue drained", func() bool {
				n, _, err := l.Queue.Backlog(context.Background())
				return err == nil && n == 0
			})
			// Let the watermark monitor see the empty queue.
			apptest.WaitFor(t, 10*time.Second, "retry accepted", func() bool {
				return apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, deferred) == nil
			})
			apptest.WaitFor(t, 30*time.Second, "retried message stored", func() bool {
				for _, s := range l.Mailbox("rcpt@example.test") {
					if raw := l.Raw(s.ID); bytes.HasSuffix(raw, deferred) {
						return true
					}
				}
				return false
			})
		})
	}
}

// startNATSOnFreePort starts an embedded nats-server on a port that it
// keeps after a restart (cfg.Port is set to it), trying fresh ports while
// another socket holds the one picked.
func startNATSOnFreePort(t *testing.T, cfg *natsserver.Config) (*natsserver.Server, error) {
	t.Helper()
	for tries := 1; ; tries++ {
		cfg.Port = apptest.Ports(t, 1)[0]
		srv, err := natsserver.Start(*cfg)
		if err == nil || !apptest.AddrInUse(err.Error()) || tries == 5 {
			return srv, err
		}
		t.Logf("port %d taken before nats-server bound it; trying another", cfg.Port)
	}
}

func TestJetStreamStoppedMidRun(t *testing.T) {
	dir := t.TempDir()
	srvCfg := natsserver.Config{DataDir: filepath.Join(dir, "js"), Host: "127.0.0.1", SyncAlways: true,
		MaxPayload: queue.DefaultMaxMsgSize + 64<<10}
	srv, err := startNATSOnFreePort(t, &srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown() }()
	cfg := apptest.Config(t)
	cfg.Queue.URL = srv.ClientURL()
	cfg.SMTP.PublishTimeout = 2 * time.Second
	l := apptest.Start(t, cfg)

	accepted := map[int][]byte{}
	for i := range 10 {
		body := apptest.Message(i, 800)
		if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, body); err != nil {
			t.Fatalf("before outage, message %d: %s", i, apptest.ReplyCode(err))
		}
		accepted[i] = body
	}

	srv.Shutdown()
	for i := 10; i < 15; i++ {
		body := apptest.Message(i, 800)
		err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, body)
		code := apptest.ReplyCode(err)
		if err == nil {
			accepted[i] = body // it raced the shutdown and was acknowledged: it must be stored
			continue
		}
		if code != "451 4.3.0" {
			t.Fatalf("during outage, message %d: reply %q, want 451 4.3.0", i, code)
		}
	}

	// Back on the same port, which only another test's explicit bind
	// could have taken meanwhile (apptest.Ports): that is waited out.
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		if srv, err = natsserver.Start(srvCfg); err == nil {
			break
		}
		if !apptest.AddrInUse(err.Error()) || time.Since(start) > 30*time.Second {
			t.Fatalf("restart JetStream: %v", err)
		}
	}
	apptest.WaitFor(t, 30*time.Second, "accepting again", func() bool {
		body := apptest.Message(100, 800)
		if apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, body) == nil {
			accepted[100] = body
			return true
		}
		return false
	})
	apptest.WaitFor(t, 60*time.Second, "every accepted message stored", func() bool {
		return len(l.Mailbox("rcpt@example.test")) >= len(accepted)
	})
	time.Sleep(300 * time.Millisecond)
	got := l.Mailbox("rcpt@example.test")
	if len(got) != len(accepted) {
		t.Fatalf("stored %d messages, accepted %d", len(got), len(accepted))
	}
	for _, s := range got {
		var n int
		if _, err := fmt.Sscanf(s.Subject, "test message %d", &n); err != nil {
			t.Fatalf("unexpected subject %q", s.Subject)
		}
		apptest.CheckStoredAsSent(t, l.Raw(s.ID), accepted[n])
	}
}

// TestMalformedFixturesThroughPipeline sends enmime's own malformed test
// messages, read from the module cache, through SMTP: every one is accepted,
// stored, and its raw bytes kept.
func TestMalformedFixturesThroughPipeline(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/jhillyerd/enmime/v2").Output()
	if err != nil {
		t.Fatalf("locate enmime in the module cache: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "testdata", "low-quality")
	files, err := filepath.Glob(filepath.Join(dir, "*.raw"))
	if err != nil || len(files) < 5 {
		t.Fatalf("enmime malformed fixtures: found %d in %s (%v)", len(files), dir, err)
	}
	l := apptest.Start(t, apptest.Config(t))
	sent := map[string][]byte{}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// SMTP carries lines ending in CRLF; the fixtures use LF.
		body = bytes.ReplaceAll(bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
		if !bytes.HasSuffix(body, []byte("\r\n")) {
			body = append(body, "\r\n"...)
		}
		if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, body); err != nil {
			t.Fatalf("%s: %s, want 250", filepath.Base(f), apptest.ReplyCode(err))
		}
		sent[filepath.Base(f)] = body
	}
	apptest.WaitFor(t, 30*time.Second, "all fixtures stored", func() bool { return len(l.Mailbox("rcpt@example.test")) >= len(sent) })
	got := l.Mailbox("rcpt@example.test")
	if len(got) != len(sent) {
		t.Fatalf("stored %d, sent %d", len(got), len(sent))
	}
	matched := 0
	for _, s := range got {
		raw := l.Raw(s.ID)
		// Some fixtures differ only by a leading space: match the longest.
		var best []byte
		for _, body := range sent {
			if bytes.HasSuffix(raw, body) && len(body) > len(best) {
				best = body
			}
		}
		if best != nil {
			apptest.CheckStoredAsSent(t, raw, best)
			matched++
		}
	}
	if matched != len(sent) {
		t.Fatalf("%d of %d fixtures stored with their raw bytes intact", matched, len(sent))
	}
}

// TestOneDomainsFloodDefersOnlyThatDomain: with a per-domain cap, the
// flooding domain's senders get 452 4.3.1 while another domain's mail is
// still accepted and stored.
func TestOneDomainsFloodDefersOnlyThatDomain(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Queue.Partitions = 1 // the cap to the message; TestAPartitionedFloodIsCappedToo is the partitioned case
	cfg.Queue.PerDomainMaxMsgs = 3
	cfg.Worker.Concurrency = 0
	l := apptest.Start(t, cfg)
	for i := range 6 {
		err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, apptest.Message(i, 300))
		switch code := apptest.ReplyCode(err); {
		case i < 3 && err != nil:
			t.Fatalf("flood message %d: %s, want 250 (under the cap)", i, code)
		case i >= 3 && code != "452 4.3.1":
			t.Fatalf("flood message %d: %q, want 452 4.3.1", i, code)
		}
	}
	for i := range 3 {
		if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"user@other.test"}, apptest.Message(100+i, 300)); err != nil {
			t.Fatalf("other.test message %d: %s, want 250 while example.test floods", i, apptest.ReplyCode(err))
		}
	}
	l.Worker.SetConcurrency(2)
	apptest.WaitFor(t, 30*time.Second, "both domains stored", func() bool {
		return len(l.Mailbox("rcpt@example.test")) == 3 && len(l.Mailbox("user@other.test")) == 3
	})
}

// TestAPartitionedFloodIsCappedToo: over partitions, a domain is deferred
// once its share of a partition is full: it never holds more than the cap,
// and other domains keep flowing.
func TestAPartitionedFloodIsCappedToo(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Queue.Partitions = 4
	cfg.Queue.PerDomainMaxMsgs = 8
	cfg.Worker.Concurrency = 0
	l := apptest.Start(t, cfg)
	accepted, deferred := 0, 0
	for i := range 40 {
		err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, apptest.Message(i, 300))
		switch code := apptest.ReplyCode(err); code {
		case "":
			accepted++
		case "452 4.3.1":
			deferred++
		default:
			t.Fatalf("flood message %d: %q", i, code)
		}
	}
	if accepted > 8 || accepted < 4 || deferred != 40-accepted {
		t.Errorf("%d accepted, %d deferred of 40 under a cap of 8 over 4 partitions", accepted, deferred)
	}
	for i := range 3 {
		if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"user@other.test"}, apptest.Message(100+i, 300)); err != nil {
			t.Fatalf("other.test message %d: %s, want 250 while example.test floods", i, apptest.ReplyCode(err))
		}
	}
}
