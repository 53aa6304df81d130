package main

import (
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/app/apptest"
)

// TestServeBinaryDeliversAndStopsOnSIGTERM runs the real binary the way a
// newcomer does, delivers a message, reads it back, and checks that SIGTERM
// drains and exits 0.
func TestServeBinaryDeliversAndStopsOnSIGTERM(t *testing.T) {
	p := startProcess(t, "serve", "--data-dir", t.TempDir(), "--smtp-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--domains", "example.test")
	body := apptest.Message(1, 1000)
	if err := apptest.Send(p.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, body); err != nil {
		t.Fatalf("send: %s", apptest.ReplyCode(err))
	}
	tl := &apptest.Levee{T: t, HTTPURL: "http://" + p.httpAddr}
	apptest.WaitFor(t, 20*time.Second, "message stored", func() bool { return len(tl.Mailbox("rcpt@example.test")) == 1 })
	apptest.CheckStoredAsSent(t, tl.Raw(tl.Mailbox("rcpt@example.test")[0].ID), body)
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("levee did not exit 0 after SIGTERM: %v", err)
	}
}

// A role process without an external JetStream fails at start naming the key.
func TestRoleWithoutNATSURLFailsNamingTheKey(t *testing.T) {
	var stderr apptest.SyncBuffer
	code := run([]string{"worker", "--data-dir", t.TempDir()}, nil, &stderr, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "queue.nats_url") {
		t.Fatalf("levee worker without --nats-url: exit %d, %q", code, stderr.String())
	}
}
