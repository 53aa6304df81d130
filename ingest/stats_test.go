package ingest

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
)

// TestStatsCountOutcomes: Stats, which the ops API sums over receivers,
// counts what senders were answered: 250 (new or duplicate), 4xx, 5xx.
func TestStatsCountOutcomes(t *testing.T) {
	var full atomic.Bool
	pub := &fakePublisher{fn: func(context.Context, *mail.Message) (queue.PublishResult, error) {
		if full.Load() {
			return queue.PublishResult{}, queue.ErrQueueFull
		}
		return queue.PublishResult{}, nil
	}}
	srv, addr := startServer(t, baseConfig(), pub, &fakeFill{})
	c := greet(t, addr)
	if r := c.send("a@sender.org", []string{"u@example.com"}, "Subject: 1\r\n\r\nhi\r\n"); !strings.HasPrefix(r.status(), "250") {
		t.Fatalf("first: %s", r)
	}
	full.Store(true)
	if r := c.send("a@sender.org", []string{"u@example.com"}, "Subject: 2\r\n\r\nhi\r\n"); !strings.HasPrefix(r.status(), "452") {
		t.Fatalf("full: %s", r)
	}
	c.expect("MAIL FROM:<a@sender.org>", "250")
	c.expect("RCPT TO:<u@elsewhere.org>", "550")
	got := srv.Stats()
	if got.Accepted != 1 || got.Deferred != 1 || got.Rejected != 1 || got.Sessions != 1 {
		t.Errorf("stats %+v, want 1 accepted, 1 deferred, 1 rejected, 1 session", got)
	}
}
