package ingest_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/smtp"
	"strings"
	"time"

	"github.com/levee-mail/levee/ingest"
	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
)

// A receiver on a loopback port with a Publisher standing in for the queue;
// a message sent with net/smtp is answered 250 only after Publish returned.
func ExampleServer() {
	pub := ingest.PublisherFunc(func(ctx context.Context, m *mail.Message) (queue.PublishResult, error) {
		first, _, _ := strings.Cut(string(m.Raw), "\r\n")
		fmt.Println("published for", m.Envelope.To, "-", strings.TrimSpace(first[:strings.Index(first, "(")]))
		return queue.PublishResult{}, nil
	})
	srv, err := ingest.New(ingest.Config{
		Addr:     "127.0.0.1:0",
		Hostname: "mx.example.org",
		Domains:  []string{"example.org"},
	}, pub, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		panic(err)
	}

	err = smtp.SendMail(srv.Addr().String(), nil, "alice@sender.example", []string{"bob@example.org"},
		[]byte("Subject: hello\r\n\r\nHi Bob.\r\n"))
	fmt.Println("send error:", err)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("shutdown error:", srv.Shutdown(ctx))
	// Output:
	// published for [bob@example.org] - Received: from localhost
	// send error: <nil>
	// shutdown error: <nil>
}
