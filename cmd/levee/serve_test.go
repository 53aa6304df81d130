package main

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeBinaryDeliversAndStopsOnSIGTERM runs the real binary the way a
// newcomer does, delivers a message, reads it back, and checks that SIGTERM
// drains and exits 0.
func TestServeBinaryDeliversAndStopsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "levee")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve",
		"--data-dir", t.TempDir(), "--smtp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--domains", "example.test")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	started := regexp.MustCompile(`levee started" smtp=(\S+) roles=\S+ http=(\S+)`)
	var smtpAddr, httpAddr string
	var logged []string
	for smtpAddr == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("levee exited before starting:\n%s", strings.Join(logged, "\n"))
			}
			logged = append(logged, line)
			if m := started.FindStringSubmatch(line); m != nil {
				smtpAddr, httpAddr = m[1], m[2]
			}
		case <-ctx.Done():
			t.Fatalf("levee did not start:\n%s", strings.Join(logged, "\n"))
		}
	}
	body := testMessage(1, 1000)
	if err := send(smtpAddr, "s@client.test", []string{"rcpt@example.test"}, body); err != nil {
		t.Fatalf("send: %s", replyCode(err))
	}
	tl := &testLevee{t: t, httpURL: "http://" + httpAddr}
	waitFor(t, 20*time.Second, "message stored", func() bool { return len(tl.mailbox("rcpt@example.test")) == 1 })

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for line := range lines {
			logged = append(logged, line)
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("levee did not exit 0 after SIGTERM: %v", err)
	}
}
