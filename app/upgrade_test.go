package app_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/levee-mail/levee/app"
	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/queue/admin"
)

// TestChangingPartitionsKeepsEveryMessage upgrades a data directory the way
// an operator does: mail is queued under one layout (the single stream of
// a Levee before partitions, then four partitions), the process stops, and
// the next starts on another layout while senders keep sending. Every
// message accepted under any layout is stored, once, and every stream of
// an old layout ends empty.
func TestChangingPartitionsKeepsEveryMessage(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Worker.Concurrency = 0 // the mail waits in the queue for the next layout
	cfg.Worker.Autoscale.Enabled = false
	sent := 0
	send := func(l *apptest.Levee, n int) {
		t.Helper()
		for range n {
			to := []string{"rcpt@example.test"}
			if sent%3 == 0 {
				to = []string{"user@other.test"}
			}
			if err := apptest.Send(l.SMTPAddr, fmt.Sprintf("s%d@client.test", sent), to, apptest.Message(sent, 800)); err != nil {
				t.Fatalf("message %d: %s", sent, apptest.ReplyCode(err))
			}
			sent++
		}
	}
	// stopped runs a layout that only queues, and stops it.
	stopped := func(partitions, n int) {
		t.Helper()
		c := cfg
		c.Queue.Partitions = partitions
		l, err := app.Start(context.Background(), c, app.RoleAll, apptest.Log(t))
		if err != nil {
			t.Fatalf("start on %d partition(s): %v", partitions, err)
		}
		send(&apptest.Levee{Levee: l, T: t, SMTPAddr: l.SMTP.Addr().String()}, n)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := l.Shutdown(ctx); err != nil {
			t.Fatalf("stop the %d-partition layout: %v", partitions, err)
		}
	}
	stopped(1, 30) // a Levee before partitions: LEVEE_MAIL
	stopped(4, 30) // then four: LEVEE_MAIL_0..3, LEVEE_MAIL still full

	// The next layout drains them all while mail keeps coming.
	c := cfg
	c.Queue.Partitions = 2
	c.Worker.Concurrency = 2
	l := apptest.Start(t, c)
	send(l, 30) // while the workers drain the old layouts' streams
	count := func() int { return len(l.Mailbox("rcpt@example.test")) + len(l.Mailbox("user@other.test")) }
	apptest.WaitFor(t, 30*time.Second, "every message stored", func() bool { return count() >= sent })
	time.Sleep(300 * time.Millisecond) // a redelivery would land now
	if got := count(); got != sent {
		t.Fatalf("%d messages stored, %d accepted", got, sent)
	}

	var st admin.Status
	apptest.WaitFor(t, 10*time.Second, "every stream empty", func() bool {
		if code := l.GetJSON("/api/v1/queue", &st); code != 200 {
			t.Fatalf("queue status: %d", code)
		}
		return st.Messages == 0 && st.Consumer.NumAckPending == 0 && allEmpty(st.Partitions)
	})
	draining := map[string]bool{}
	for _, p := range st.Partitions {
		draining[p.Stream] = p.Draining
	}
	want := map[string]bool{"LEVEE_MAIL_0": false, "LEVEE_MAIL_1": false,
		"LEVEE_MAIL": true, "LEVEE_MAIL_2": true, "LEVEE_MAIL_3": true}
	if fmt.Sprint(draining) != fmt.Sprint(want) {
		t.Errorf("streams (name: draining) %v, want %v", draining, want)
	}
}

func allEmpty(ps []admin.PartitionStatus) bool {
	for _, p := range ps {
		if p.Messages != 0 {
			return false
		}
	}
	return true
}
