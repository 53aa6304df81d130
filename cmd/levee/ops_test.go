package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/admin"
	"github.com/levee-mail/levee/web/opsdoc"
)

const testAdminToken = "s3cret-admin-token"

// cli runs `levee args...` in-process and returns its output and exit code.
func cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, nil, &out, &errOut)
	return out.String(), errOut.String(), code
}

// mustCLI runs the command and fails the test unless it exits 0.
func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, args...)
	if code != 0 {
		t.Fatalf("levee %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func natsURL(l *apptest.Levee) string { return l.Queue.Server().ClientURL() }

// TestQueueStatusJSONMatchesStream: `levee queue status --json`, over HTTP
// and over JetStream, gives the streams' and the consumers' own figures,
// added up over the partitions.
func TestQueueStatusJSONMatchesStream(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Worker.Concurrency = 0 // the mail stays queued: stable figures
	l := apptest.Start(t, cfg)
	for i := range 7 {
		to := "rcpt@example.test"
		if i >= 5 {
			to = "rcpt@other.test"
		}
		if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{to}, apptest.Message(i, 1500)); err != nil {
			t.Fatal(err)
		}
	}
	// The consumers' pending counts trail the streams by a moment after the
	// last publish (the server updates them asynchronously): settle first.
	var si jetstream.StreamInfo
	var pending uint64
	var bytesFill float64
	apptest.WaitFor(t, 10*time.Second, "the consumers to count the 7 queued", func() bool {
		si, pending, bytesFill = layoutState(t, l)
		return pending == 7
	})
	for _, via := range [][]string{{"--server", l.HTTPURL}, {"--nats-url", natsURL(l), "--interval", "200ms"}} {
		t.Run(via[0], func(t *testing.T) {
			out := mustCLI(t, append([]string{"queue", "status", "--json"}, via...)...)
			var doc opsdoc.Status // the /api/v1/queue document, durations in seconds
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("decode %q: %v", out, err)
			}
			if !strings.Contains(out, `"max_age_seconds": 604800`) {
				t.Errorf("max_age not in seconds:\n%s", out)
			}
			st := doc.Admin()
			if st.Messages != si.State.Msgs || st.Bytes != si.State.Bytes || st.LastSeq != si.State.LastSeq || st.Messages != 7 {
				t.Errorf("messages %d bytes %d last_seq %d; streams say %+v", st.Messages, st.Bytes, st.LastSeq, si.State)
			}
			if st.Limits.MaxMsgs != si.Config.MaxMsgs || st.Limits.MaxBytes != si.Config.MaxBytes || st.Limits.MaxAge != si.Config.MaxAge ||
				st.Limits.MaxMsgs != cfg.Queue.MaxMsgs {
				t.Errorf("limits %+v; streams' config %+v", st.Limits, si.Config)
			}
			if st.Fill.Bytes != bytesFill {
				t.Errorf("bytes fill %v, want the partitions' together %v", st.Fill.Bytes, bytesFill)
			}
			if st.Consumer.NumPending != pending || st.Consumer.Name != cfg.Queue.Durable || len(st.Partitions) != cfg.Queue.Partitions {
				t.Errorf("consumer %+v, %d partitions; the servers say pending %d", st.Consumer, len(st.Partitions), pending)
			}
			if len(st.TopDomains) != 2 || st.TopDomains[0] != (admin.DomainCount{Domain: "example.test", Messages: 5}) {
				t.Errorf("top domains %+v", st.TopDomains)
			}
			if st.Workers.Processes != 1 || st.Workers.Concurrency != 0 || st.SMTP.Processes != 1 || st.SMTP.Accepted != 7 {
				t.Errorf("workers %+v smtp %+v", st.Workers, st.SMTP)
			}
			if via[0] == "--nats-url" && st.Rates.WindowSeconds == 0 {
				t.Errorf("status over JetStream has no rates: %+v", st.Rates)
			}
		})
	}
	table := mustCLI(t, "queue", "status", "--server", l.HTTPURL)
	for _, want := range []string{"LEVEE_MAIL", "messages  7 of", "example.test  5", "dead letters  0", "partitions  4 streams", "LEVEE_MAIL_3 "} {
		if !strings.Contains(strings.Join(strings.Fields(table), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}
}

// TestQueueLimitsCLIAndAdminToken: limits over HTTP need the admin token;
// an invalid or mail-deleting change is refused with the reason and
// changes nothing.
func TestQueueLimitsCLIAndAdminToken(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Queue.Partitions = 1 // the refusals' figures to the message
	cfg.Worker.Concurrency = 0
	cfg.HTTP.AdminToken = testAdminToken
	l := apptest.Start(t, cfg)
	for i := range 4 {
		if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, apptest.Message(i, 500)); err != nil {
			t.Fatal(err)
		}
	}
	srv := []string{"--server", l.HTTPURL}
	if _, errOut, code := cli(t, append([]string{"queue", "limits", "set", "--max-msgs", "100"}, srv...)...); code != 1 || !strings.Contains(errOut, "admin token") {
		t.Errorf("without a token: exit %d, %q", code, errOut)
	}
	if _, errOut, code := cli(t, append([]string{"queue", "limits", "set", "--max-msgs", "100", "--http-admin-token", "wrong"}, srv...)...); code != 1 || !strings.Contains(errOut, "HTTP 401") {
		t.Errorf("wrong token: exit %d, %q", code, errOut)
	}
	auth := append([]string{"--http-admin-token", testAdminToken}, srv...)
	_, errOut, code := cli(t, append([]string{"queue", "limits", "set", "--per-domain-max-msgs", "3"}, auth...)...)
	if code != 1 || !strings.Contains(errOut, "example.test (4)") || !strings.Contains(errOut, "nothing was changed") {
		t.Errorf("per-domain cap below a domain's queue: exit %d, %q", code, errOut)
	}
	out := mustCLI(t, append([]string{"queue", "limits", "set", "--max-msgs", "2", "--max-bytes", "1GiB"}, auth...)...)
	if !strings.Contains(out, "below the 4 messages queued: nothing queued is deleted") {
		t.Errorf("lowering below usage: %s", out)
	}
	if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, apptest.Message(99, 500)); apptest.ReplyCode(err) != "452 4.3.1" {
		t.Errorf("after lowering max_msgs below usage: %q, want 452 4.3.1", apptest.ReplyCode(err))
	}
	if _, errOut, code := cli(t, append([]string{"queue", "limits", "set", "--max-age", "1ms"}, auth...)...); code != 1 || !strings.Contains(errOut, "max_age") {
		t.Errorf("max_age below the duplicate window: exit %d, %q", code, errOut)
	}
	// This process's receiver advertises smtp.max_message_bytes: a
	// max_msg_size that would bounce what it accepts is refused.
	tooSmall := strconv.FormatInt(cfg.SMTP.MaxMessageBytes, 10)
	if _, errOut, code := cli(t, append([]string{"queue", "limits", "set", "--max-msg-size", tooSmall}, auth...)...); code != 1 ||
		!strings.Contains(errOut, "SIZE "+tooSmall) || !strings.Contains(errOut, "bounce") {
		t.Errorf("max_msg_size below the receiver's SIZE: exit %d, %q", code, errOut)
	}
	if _, errOut, code := cli(t, "queue", "limits", "set", "--max-bytes", "lots"); code != 2 || !strings.Contains(errOut, "--max-bytes") {
		t.Errorf("bad size: exit %d, %q", code, errOut)
	}
	// The same over JetStream, no token needed: there JetStream's own
	// permissions decide.
	mustCLI(t, "queue", "limits", "set", "--max-msgs", "1000", "--per-domain-max-msgs", "10", "--nats-url", natsURL(l))
	var lim admin.StreamLimits
	if err := json.Unmarshal([]byte(mustCLI(t, append([]string{"queue", "limits", "--json"}, srv...)...)), &lim); err != nil {
		t.Fatal(err)
	}
	if lim.MaxMsgs != 1000 || lim.MaxBytes != 1<<30 || lim.PerDomainMaxMsgs != 10 {
		t.Errorf("limits now %+v", lim)
	}
	if st := streamState(t, l); st.Msgs != 4 {
		t.Errorf("the stream holds %d messages after the limit changes, want 4", st.Msgs)
	}
}

// streamState is the state of the queue's mail streams, added up.
func streamState(t *testing.T, l *apptest.Levee) jetstream.StreamState {
	t.Helper()
	si, _, _ := layoutState(t, l)
	return si.State
}

// layoutState adds up the layout's mail streams (their state and limits,
// as queue.SumLimits does) and their consumers' pending counts, and gives
// their bytes fill together.
func layoutState(t *testing.T, l *apptest.Levee) (jetstream.StreamInfo, uint64, float64) {
	t.Helper()
	ctx := context.Background()
	var sum jetstream.StreamInfo
	var configs []jetstream.StreamConfig
	var pending uint64
	var fill float64
	cfg := l.Queue.Config()
	for _, p := range cfg.Layout() {
		s, err := l.Queue.JetStream().Stream(ctx, p.Stream)
		if err != nil {
			t.Fatal(err)
		}
		si := s.CachedInfo()
		sum.State.Msgs += si.State.Msgs
		sum.State.Bytes += si.State.Bytes
		sum.State.LastSeq += si.State.LastSeq
		configs = append(configs, si.Config)
		c, err := l.Queue.JetStream().Consumer(ctx, p.Stream, cfg.Durable)
		if err != nil {
			t.Fatal(err)
		}
		pending += c.CachedInfo().NumPending
	}
	sum.Config = queue.SumLimits(configs)
	fill = float64(sum.State.Bytes) / float64(sum.Config.MaxBytes)
	return sum, pending, fill
}

// TestLiveLimitChangeUnderLoadLosesNothing: senders deliver continuously
// (retrying 4xx like MTAs) while an operator lowers max_msgs below the
// queue's usage, then raises it and changes the per-domain cap. Every
// message is stored exactly once, and the lowered limit did defer mail.
func TestLiveLimitChangeUnderLoadLosesNothing(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Worker.Concurrency = 0 // drain paused until the limit was lowered
	cfg.Worker.Autoscale.Enabled = false
	cfg.HTTP.AdminToken = testAdminToken
	l := apptest.Start(t, cfg)
	auth := []string{"--server", l.HTTPURL, "--http-admin-token", testAdminToken}

	const senders, perSender = 6, 50
	var deferred atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSender {
				n := g*perSender + i
				to := "rcpt@example.test"
				if n%3 == 0 {
					to = "rcpt@other.test"
				}
				body := apptest.Message(n, 800)
				for attempt := 0; ; attempt++ {
					err := apptest.Send(l.SMTPAddr, "s@client.test", []string{to}, body)
					if err == nil {
						break
					}
					if code := apptest.ReplyCode(err); !strings.HasPrefix(code, "4") || attempt > 400 {
						errs <- fmt.Errorf("message %d: %s", n, code)
						return
					}
					deferred.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	apptest.WaitFor(t, 30*time.Second, "30 messages queued", func() bool { return streamState(t, l).Msgs >= 30 })
	out := mustCLI(t, append([]string{"queue", "limits", "set", "--max-msgs", "20"}, auth...)...)
	if !strings.Contains(out, "nothing queued is deleted") {
		t.Errorf("lowering: %s", out)
	}
	apptest.WaitFor(t, 30*time.Second, "senders deferred", func() bool { return deferred.Load() > 0 })
	l.Worker.SetConcurrency(2)
	apptest.WaitFor(t, 30*time.Second, "drained below the lowered limit", func() bool { return streamState(t, l).Msgs < 20 })
	mustCLI(t, append([]string{"queue", "limits", "set", "--max-msgs", "100000", "--per-domain-max-msgs", "150"}, auth...)...)
	mustCLI(t, append([]string{"queue", "limits", "set", "--per-domain-max-msgs", "0", "--max-bytes", "512MiB"}, auth...)...)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	apptest.WaitFor(t, 60*time.Second, "queue drained", func() bool { return streamState(t, l).Msgs == 0 })
	seen := map[string]int{}
	for _, box := range []string{"rcpt@example.test", "rcpt@other.test"} {
		for _, s := range l.Mailbox(box) {
			raw := l.Raw(s.ID)
			i := bytes.Index(raw, []byte("X-Levee-Test-Id: "))
			if i < 0 {
				t.Fatalf("stored message %s has no test id", s.ID)
			}
			id, _, _ := bytes.Cut(raw[i+len("X-Levee-Test-Id: "):], []byte("\r\n"))
			seen[string(id)]++
		}
	}
	for n := range senders * perSender {
		if c := seen[strconv.Itoa(n)]; c != 1 {
			t.Errorf("message %d stored %d times", n, c)
		}
	}
	t.Logf("%d deferrals retried; %d messages stored once each", deferred.Load(), len(seen))
}

// TestDLQReplayDeliversExactlyOnce: dead letters are listed with their
// reason, replayed over HTTP and over JetStream, and each replayed message
// is stored exactly once, also one that had been stored before it was
// dead-lettered (a worker that crashed after the commit).
func TestDLQReplayDeliversExactlyOnce(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Worker.Concurrency = 0
	cfg.Worker.Autoscale.Enabled = false
	cfg.HTTP.AdminToken = testAdminToken
	l := apptest.Start(t, cfg)
	ctx := context.Background()
	bodies := [][]byte{apptest.Message(1, 600), apptest.Message(2, 600), apptest.Message(3, 600)}
	for _, b := range bodies {
		if err := apptest.Send(l.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, b); err != nil {
			t.Fatal(err)
		}
	}
	// Play the worker that gave up on all three; message 1 it had stored.
	cons, err := l.Queue.Consumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ds []queue.Delivery
	apptest.WaitFor(t, 10*time.Second, "the three messages fetched", func() bool {
		more, _, err := cons.Fetch(3-len(ds), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, more...)
		return len(ds) == 3
	})
	for _, d := range ds {
		msg, err := d.Message()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(msg.Raw, []byte("X-Levee-Test-Id: 1\r\n")) {
			if msg.Parsed, err = mail.Parse(msg.Raw, mail.ParseLimits{}); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Store.Deliver(ctx, []*mail.Message{msg}); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.GiveUp(ctx, "store: constraint failed for "+msg.ID); err != nil {
			t.Fatal(err)
		}
	}
	srv := []string{"--server", l.HTTPURL}
	var list struct {
		DeadLetters []admin.DeadLetterInfo `json:"dead_letters"`
		Total       uint64                 `json:"total"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, append([]string{"dlq", "list", "--json"}, srv...)...)), &list); err != nil {
		t.Fatal(err)
	}
	if list.Total != 3 || len(list.DeadLetters) != 3 || !strings.HasPrefix(list.DeadLetters[0].Reason, "store: constraint failed") {
		t.Fatalf("dlq list: %+v", list)
	}
	table := mustCLI(t, append([]string{"dlq", "list"}, srv...)...)
	if !strings.Contains(table, "store: constraint failed") || !strings.Contains(table, "3 dead letters in all") {
		t.Errorf("dlq list table:\n%s", table)
	}
	first := strconv.FormatUint(list.DeadLetters[0].Seq, 10)
	shown := mustCLI(t, append([]string{"dlq", "show", first}, srv...)...)
	if !strings.Contains(shown, "reason") || !strings.Contains(shown, "Subject: test message") {
		t.Errorf("dlq show:\n%s", shown)
	}
	if raw := mustCLI(t, append([]string{"dlq", "show", first, "--raw"}, srv...)...); !strings.HasSuffix(raw, "end of message 1\r\n") {
		t.Errorf("dlq show --raw ends %q", raw[max(0, len(raw)-40):])
	}
	if _, errOut, code := cli(t, append([]string{"dlq", "replay", first}, srv...)...); code != 1 || !strings.Contains(errOut, "admin token") {
		t.Errorf("replay without a token: exit %d %q", code, errOut)
	}
	auth := append([]string{"--http-admin-token", testAdminToken}, srv...)
	mustCLI(t, append([]string{"dlq", "replay", first}, auth...)...)
	if _, errOut, code := cli(t, append([]string{"dlq", "replay", first}, auth...)...); code != 1 || !strings.Contains(errOut, "no dead letter") {
		t.Errorf("second replay of %s: exit %d %q", first, code, errOut)
	}
	if out := mustCLI(t, "dlq", "replay", "--all", "--nats-url", natsURL(l)); !strings.Contains(out, "2 dead letters replayed") {
		t.Errorf("replay --all: %s", out)
	}
	l.Worker.SetConcurrency(2)
	apptest.WaitFor(t, 30*time.Second, "replayed mail stored", func() bool { return len(l.Mailbox("rcpt@example.test")) >= 3 })
	apptest.WaitFor(t, 30*time.Second, "queue drained", func() bool { return streamState(t, l).Msgs == 0 })
	got := map[string]int{}
	for _, s := range l.Mailbox("rcpt@example.test") {
		got[s.ID]++
	}
	if len(got) != 3 {
		t.Errorf("mailbox holds %v, want 3 messages once each", got)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("message %s stored %d times", id, n)
		}
	}
	if out := mustCLI(t, append([]string{"dlq", "list"}, srv...)...); !strings.Contains(out, "0 dead letters in all") {
		t.Errorf("after replay:\n%s", out)
	}
	if _, errOut, code := cli(t, "dlq", "replay"); code != 2 || !strings.Contains(errOut, "--all") {
		t.Errorf("replay without a target: exit %d %q", code, errOut)
	}
}

// TestAdminTokenHasOneName: the client commands take the admin token by the
// server's own names, --http-admin-token and LEVEE_HTTP_ADMIN_TOKEN, so one
// environment serves both sides; --admin-token and LEVEE_ADMIN_TOKEN still
// work, with a warning. The token never shows in --help.
func TestAdminTokenHasOneName(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Worker.Concurrency = 0
	cfg.HTTP.AdminToken = testAdminToken
	l := apptest.Start(t, cfg)
	set := []string{"queue", "limits", "set", "--max-msgs", "1000", "--server", l.HTTPURL}
	for _, tc := range []struct {
		name       string
		args, env  []string
		deprecated bool
	}{
		{"server's env name", nil, []string{"LEVEE_HTTP_ADMIN_TOKEN=" + testAdminToken}, false},
		{"server's flag name", []string{"--http-admin-token", testAdminToken}, nil, false},
		{"flag beats env", []string{"--http-admin-token", testAdminToken}, []string{"LEVEE_HTTP_ADMIN_TOKEN=wrong"}, false},
		{"old flag name", []string{"--admin-token", testAdminToken}, nil, true},
		{"old env name", nil, []string{"LEVEE_ADMIN_TOKEN=" + testAdminToken}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(append(slices.Clone(set), tc.args...), tc.env, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if got := strings.Contains(errOut.String(), "deprecated"); got != tc.deprecated {
				t.Errorf("deprecation warning %v, want %v: %q", got, tc.deprecated, errOut.String())
			}
		})
	}
	var out, errOut bytes.Buffer
	run([]string{"queue", "limits", "set", "--help"}, []string{"LEVEE_HTTP_ADMIN_TOKEN=" + testAdminToken, "LEVEE_ADMIN_TOKEN=" + testAdminToken}, &out, &errOut)
	help := out.String() + errOut.String()
	if !strings.Contains(help, "-http-admin-token") || !strings.Contains(help, "LEVEE_HTTP_ADMIN_TOKEN") {
		t.Errorf("help does not name --http-admin-token and LEVEE_HTTP_ADMIN_TOKEN:\n%s", help)
	}
	if strings.Contains(help, testAdminToken) {
		t.Errorf("help shows the token from the environment:\n%s", help)
	}
}
