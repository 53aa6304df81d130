package ingest

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Shutdown step one: new connections and idle sessions get 421 4.3.2, the
// transaction in flight is published and answered 250, then Shutdown
// returns nil.
func TestShutdownDrains(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	pub := &fakePublisher{fn: func(ctx context.Context, _ *mail.Message) (queue.PublishResult, error) {
		close(entered)
		select {
		case <-release:
			return queue.PublishResult{}, nil
		case <-ctx.Done():
			return queue.PublishResult{}, ctx.Err()
		}
	}}
	srv, addr := startServer(t, baseConfig(), pub, nil)

	busy := greet(t, addr)
	busy.expect("MAIL FROM:<a@sender.org>", "250")
	busy.expect("RCPT TO:<rcpt@example.com>", "250")
	busy.expect("DATA", "354")
	busy.write(simpleBody + ".\r\n")
	<-entered // the message is being published

	idle := greet(t, addr)
	// A session inside a transaction but between commands.
	pipelined := greet(t, addr)
	pipelined.expect("MAIL FROM:<b@sender.org>", "250")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	waitFor(t, "draining", srv.draining.Load)

	idle.expect("", "421 4.3.2")
	idle.expectClosed()

	late := dial(t, addr)
	late.expect("", "421 4.3.2")
	late.expectClosed()

	// RSET ends its transaction; the MAIL pipelined behind it is refused
	// and the connection closed after that reply.
	pipelined.write("RSET\r\nMAIL FROM:<b@sender.org>\r\n")
	pipelined.expect("", "250")
	pipelined.expect("", "421 4.3.2")
	pipelined.expectClosed()

	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a publish was in flight", err)
	default:
	}
	close(release)
	busy.expect("", "250 2.0.0")
	busy.expect("", "421 4.3.2") // then told, and closed, at its prompt
	busy.expectClosed()

	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := testutil.ToFloat64(srv.metrics.sessions.WithLabelValues(sessionRejectedShutdown)); n != 1 {
		t.Errorf("rejected_shutdown = %v, want 1", n)
	}
	if err := srv.Shutdown(context.Background()); !errors.Is(err, ErrServerClosed) {
		t.Errorf("second Shutdown: %v, want ErrServerClosed", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("still listening after Shutdown")
	}
}

// Shutdown step two: at the deadline, a stuck session is closed and a
// publish in flight sees its context cancelled.
func TestShutdownForcesAtDeadline(t *testing.T) {
	cfg := baseConfig()
	cfg.PublishTimeout = time.Minute // the lifetime context must be what ends it
	entered, aborted := make(chan struct{}), make(chan error, 1)
	pub := &fakePublisher{fn: func(ctx context.Context, _ *mail.Message) (queue.PublishResult, error) {
		close(entered)
		<-ctx.Done()
		aborted <- ctx.Err()
		return queue.PublishResult{}, ctx.Err()
	}}
	srv, addr := startServer(t, cfg, pub, nil)

	stuck := greet(t, addr)
	stuck.expect("MAIL FROM:<a@sender.org>", "250") // a transaction, then silence

	publishing := greet(t, addr)
	publishing.expect("MAIL FROM:<a@sender.org>", "250")
	publishing.expect("RCPT TO:<rcpt@example.com>", "250")
	publishing.expect("DATA", "354")
	publishing.write(simpleBody + ".\r\n")
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := srv.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want a deadline error", err)
	}
	if e := <-aborted; !errors.Is(e, context.Canceled) {
		t.Errorf("publish context ended with %v, want Canceled (lifetime context)", e)
	}
	stuck.expectClosed()
	// Whatever it read before the close, the publishing client never sees
	// a 250 or a 5xx.
	for {
		r, err := publishing.read()
		if err != nil {
			break
		}
		if r.code == 250 || r.code/100 == 5 {
			t.Fatalf("publishing client got %v", r)
		}
	}
}

func TestServeAfterShutdown(t *testing.T) {
	srv, err := New(baseConfig(), &fakePublisher{}, nil, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown of an idle server: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}
