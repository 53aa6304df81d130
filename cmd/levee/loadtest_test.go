package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/loadtest"
)

// runLoadtest runs `levee loadtest` in the test process and reads its JSON.
func runLoadtest(t *testing.T, args ...string) (int, *loadtest.Result, string) {
	t.Helper()
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "result.json")
	args = append(args, "--json", jsonPath, "--progress", "never")
	var stdout, stderr apptest.SyncBuffer
	code := loadtestCmd(args, &stdout, &stderr)
	out := stdout.String() + stderr.String()
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatalf("exit %d, no JSON result: %v\n%s", code, err, out)
	}
	var res loadtest.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	return code, &res, out
}

// Message counts and sizes are small because Levee under the race detector
// is many times slower than without it: they keep each test to seconds.

// A short burst against a whole Levee: every accepted message is stored
// exactly once, the gates pass, and the report and JSON are written.
func TestLoadtestBurstAgainstLevee(t *testing.T) {
	l := apptest.Start(t, apptest.Config(t))
	report := filepath.Join(t.TempDir(), "report.html")
	code, res, out := runLoadtest(t,
		"--target", l.SMTPAddr, "--api", l.HTTPURL,
		"--to", "rcpt{n}@example.test", "--mailboxes", "5",
		"--baseline", "20/s", "--surge", "3x", "--surge-for", "1s",
		"--connections", "10", "--size", "1KiB", "--interval", "250ms", "--readers", "2", "--reader-think", "50ms",
		"--audit-timeout", "60s", "--report", report,
		"--max-lost", "0", "--max-duplicates", "0", "--max-failed", "0", "--max-reader-p99", "30s")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	c := res.Counts
	if c.Offered != 100 || c.Accepted != 100 || c.Failed+c.Expired+c.Unsent != 0 {
		t.Fatalf("counts = %+v, want 100 offered and accepted", c)
	}
	a := res.Audit
	if a == nil || !a.Complete || a.Stored != 100 || a.Lost != 0 || a.Duplicated != 0 || a.EndToEnd.Count != 100 {
		t.Fatalf("audit = %+v", a)
	}
	if res.Readers == nil || res.Readers.Requests == 0 || res.Readers.Errors != 0 {
		t.Fatalf("readers = %+v", res.Readers)
	}
	phases := map[string]bool{}
	for _, p := range res.Readers.Phases {
		phases[p.Phase] = true
	}
	if !phases["before"] || !phases["during"] || !phases["after"] {
		t.Errorf("reader phases = %+v, want before, during and after the surge", res.Readers.Phases)
	}
	if len(res.Queue) == 0 || res.Queue[0].Workers == nil {
		t.Errorf("queue figures not scraped: %+v", res.Queue)
	}
	if !res.Pass || len(res.Checks) != 4 {
		t.Errorf("checks = %+v", res.Checks)
	}
	// The API agrees with the audit mailbox by mailbox.
	total := 0
	for n := range 5 {
		total += len(l.Mailbox(fmt.Sprintf("rcpt%d@example.test", n)))
	}
	if total != 100 {
		t.Errorf("mailboxes hold %d messages, want 100", total)
	}
	html, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(html), "<svg") < 6 || !strings.Contains(string(html), "PASS") {
		t.Errorf("report: %d plots, PASS %v", strings.Count(string(html), "<svg"), strings.Contains(string(html), "PASS"))
	}
	if !strings.Contains(out, "Was anything lost or stored twice?") {
		t.Errorf("no apptest.Summary table on stdout:\n%s", out)
	}
}

// With tiny queue limits and the workers paused, Levee defers (452) once
// the queue is full; when the workers resume, the retries deliver every
// message and the audit finds none lost.
func TestLoadtestTinyQueueDefersAndRetriesDeliverAll(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Queue.MaxMsgs = 20
	cfg.Worker.Concurrency = 0
	l := apptest.Start(t, cfg)

	type outcome struct {
		code int
		res  *loadtest.Result
		out  string
	}
	done := make(chan outcome, 1)
	go func() {
		code, res, out := runLoadtest(t,
			"--target", l.SMTPAddr, "--api", l.HTTPURL, "--to", "rcpt{n}@example.test", "--mailboxes", "3",
			"--rate", "50/s", "--duration", "2s", "--size", "1KiB", "--connections", "10", "--readers", "0",
			"--retry-initial", "50ms", "--retry-max", "300ms", "--retry-for", "2m",
			"--audit-timeout", "60s", "--max-lost", "0", "--max-duplicates", "0")
		done <- outcome{code, res, out}
	}()
	apptest.WaitFor(t, 30*time.Second, "the queue to fill up", func() bool {
		st, err := l.Admin.Status(context.Background())
		return err == nil && st.Messages >= 18
	})
	time.Sleep(300 * time.Millisecond) // let the full queue refuse a while
	l.Worker.SetConcurrency(2)
	var o outcome
	select {
	case o = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("loadtest did not finish")
	}
	if o.code != 0 {
		t.Fatalf("exit %d\n%s", o.code, o.out)
	}
	c := o.res.Counts
	if c.Offered != 100 || c.Accepted != 100 {
		t.Fatalf("counts = %+v, want all 100 accepted in the end", c)
	}
	if c.Deferred == 0 || c.Retries == 0 {
		t.Fatalf("counts = %+v, want deferrals from the full queue", c)
	}
	for _, r := range o.res.Replies {
		if !strings.HasPrefix(r.Reply, "4") {
			t.Errorf("reply %s ×%d: a full queue must only ever defer", r.Reply, r.Count)
		}
	}
	if a := o.res.Audit; a.Lost != 0 || a.Duplicated != 0 || a.Stored != 100 {
		t.Fatalf("audit = %+v", a)
	}
}

func TestLoadtestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rate", "10/s", "--trace", "x.jsonl"}, "exactly one schedule"},
		{[]string{"--duration", "1s"}, "exactly one schedule"},
		{[]string{"--rate", "fast"}, "--rate"},
		{[]string{"--ramp", "10/s"}, "--ramp"},
		{[]string{"--baseline", "10/s", "--surge", "lots"}, "--surge"},
		{[]string{"--baseline", "10/s"}, "--surge-for"},
		{[]string{"--rate", "10/s", "--max-lost", "0"}, "need --api"},
		{[]string{"--rate", "10/s", "--size", "huge"}, "--size"},
		{[]string{"--rate", "10/s", "--target", "nohost"}, "--target"},
		{[]string{"--rate", "10/s", "--progress", "sometimes"}, "--progress"},
		{[]string{"--trace", "/nonexistent/trace.jsonl"}, "trace"},
	} {
		var stdout, stderr apptest.SyncBuffer
		code := loadtestCmd(tc.args, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
	var stdout, stderr apptest.SyncBuffer
	if code := loadtestCmd([]string{"--help"}, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "max-reader-p99") {
		t.Errorf("--help: exit %d, %q", code, stderr.String())
	}
}

// A gate that fails makes the exit status 1.
func TestLoadtestThresholdFailureExits1(t *testing.T) {
	l := apptest.Start(t, apptest.Config(t))
	code, res, out := runLoadtest(t, "--target", l.SMTPAddr, "--api", l.HTTPURL, "--to", "rcpt@example.test",
		"--rate", "50/s", "--duration", "200ms", "--readers", "1", "--max-reader-p99", "1ns")
	if code != 1 || res.Pass {
		t.Fatalf("exit %d, pass %v, want 1 and false\n%s", code, res.Pass, out)
	}
	if res.Counts.Accepted != 10 {
		t.Errorf("accepted %d, want 10", res.Counts.Accepted)
	}
}

// An --api nobody listens on stops the run before any mail is sent, with
// the reason and a failing exit status (it used to wait out the audit's
// five minutes, print "lost 10" and exit 0).
func TestLoadtestUnreachableAPIFailsAtOnce(t *testing.T) {
	l := apptest.Start(t, apptest.Config(t))
	api := fmt.Sprintf("http://127.0.0.1:%d", apptest.Ports(t, 1)[0])
	var stdout, stderr apptest.SyncBuffer
	code := loadtestCmd([]string{"--target", l.SMTPAddr, "--api", api, "--to", "rcpt@example.test",
		"--rate", "50/s", "--duration", "200ms", "--progress", "never"}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "cannot reach the API at "+api) {
		t.Fatalf("exit %d, stderr %q; want a failure naming the API", code, stderr.String())
	}
	if strings.Contains(stdout.String(), "lost") {
		t.Errorf("a run that could not audit reports on losses:\n%s", stdout.String())
	}
	if got := l.Mailbox("rcpt@example.test"); len(got) != 0 {
		t.Errorf("%d messages sent by a run that could not be audited", len(got))
	}
}

// Against a Levee with http.read_token, the audit and the reader probe work
// with --api-token or the server's own LEVEE_HTTP_READ_TOKEN, and a run
// without the token stops before sending anything.
func TestLoadtestWithReadToken(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.HTTP.ReadToken = "r3ad-tok"
	l := apptest.Start(t, cfg)
	args := []string{"--target", l.SMTPAddr, "--api", l.HTTPURL, "--to", "rcpt@example.test",
		"--rate", "50/s", "--duration", "200ms", "--readers", "1", "--reader-think", "20ms"}

	var stdout, stderr apptest.SyncBuffer
	code := loadtestCmd(append(args, "--progress", "never"), &stdout, &stderr)
	if code != 3 || !strings.Contains(stderr.String(), "401") || !strings.Contains(stderr.String(), "--api-token") {
		t.Fatalf("without the token: exit %d, stderr %q; want 3 and the 401 with a hint", code, stderr.String())
	}
	check := func(how string, code int, res *loadtest.Result, out string) {
		t.Helper()
		if code != 0 || res.Audit == nil || res.Audit.Stored != 10 || res.Audit.Lost != 0 {
			t.Fatalf("%s: exit %d, audit %+v\n%s", how, code, res.Audit, out)
		}
		if res.Readers == nil || res.Readers.Requests == 0 || res.Readers.Errors != 0 {
			t.Fatalf("%s: reader probe %+v", how, res.Readers)
		}
	}
	code, res, out := runLoadtest(t, append(args, "--api-token", "r3ad-tok", "--run-id", "flag")...)
	check("--api-token", code, res, out)
	t.Setenv(readTokenEnv, "r3ad-tok")
	code, res, out = runLoadtest(t, append(args, "--run-id", "env")...)
	check(readTokenEnv, code, res, out)
}
