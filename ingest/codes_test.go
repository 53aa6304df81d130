package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
)

// TestReplyCodes drives a real SMTP conversation over TCP for every reply
// Levee decides, and checks the code a sender sees and the metric counted.
func TestReplyCodes(t *testing.T) {
	publishErr := func(err error) func(context.Context, *mail.Message) (queue.PublishResult, error) {
		return func(context.Context, *mail.Message) (queue.PublishResult, error) { return queue.PublishResult{}, err }
	}
	cases := []struct {
		name string
		cfg  func(*Config)
		pub  func(context.Context, *mail.Message) (queue.PublishResult, error)
		// run drives the client after EHLO and returns the reply under test.
		run  func(c *client) resp
		want string // "550 5.7.1"
		// metric labels expected to count 1 ("" = not checked)
		result, code string
		closed       bool // the server must close the connection after it
		published    bool // Publish must have been called
	}{
		{
			name: "unknown recipient domain",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("RCPT TO:<user@other.org>")
			},
			want: "550 5.7.1", result: resultRejected, code: "550",
		},
		{
			name: "recipient domain matches case-insensitively",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("RCPT TO:<User@EXAMPLE.Com>")
			},
			want: "250",
		},
		{
			name: "subdomain is not the domain",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("RCPT TO:<user@mail.example.com>")
			},
			want: "550 5.7.1",
		},
		{
			name: "bad recipient domain syntax",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("RCPT TO:<user@exa_mple..com>")
			},
			want: "501 5.1.3", result: resultRejected, code: "501",
		},
		{
			name: "bad sender domain syntax",
			run:  func(c *client) resp { return c.cmd("MAIL FROM:<a@-sender-.org>") },
			want: "501 5.1.7", result: resultRejected, code: "501",
		},
		{
			name: "non-ASCII recipient without SMTPUTF8",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("RCPT TO:<j\u00f6rg@example.com>")
			},
			want: "553 5.6.7", result: resultRejected, code: "553",
		},
		{
			name: "non-ASCII sender without SMTPUTF8",
			run:  func(c *client) resp { return c.cmd("MAIL FROM:<j\u00f6rg@sender.org>") },
			want: "553 5.6.7", result: resultRejected, code: "553",
		},
		{
			name: "non-ASCII recipient with SMTPUTF8",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<j\u00f6rg@sender.org> SMTPUTF8", "250")
				return c.cmd("RCPT TO:<j\u00f6rg@example.com>")
			},
			want: "250",
		},
		{
			name: "recipient local part over 64 octets",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("RCPT TO:<" + strings.Repeat("l", 65) + "@example.com>")
			},
			want: "501 5.1.3", result: resultRejected, code: "501",
		},
		{
			name: "recipient local part of 64 octets",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("RCPT TO:<" + strings.Repeat("l", 64) + "@example.com>")
			},
			want: "250",
		},
		{
			name: "NUL in a recipient",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("RCPT TO:<\"a\x00b\"@example.com>")
			},
			want: "501 5.1.3", result: resultRejected, code: "501",
		},
		{
			name: "invalid UTF-8 in a recipient under SMTPUTF8",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org> SMTPUTF8", "250")
				return c.cmd("RCPT TO:<a\xff\xfe@example.com>")
			},
			want: "501 5.1.3", result: resultRejected, code: "501",
		},
		{
			name: "quoted recipient local part holding another address",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("RCPT TO:<\"x@other.test\"@example.com>")
			},
			want: "553 5.1.3", result: resultRejected, code: "553",
		},
		{
			name: "control character in a sender",
			run:  func(c *client) resp { return c.cmd("MAIL FROM:<\"a\x01b\"@sender.org>") },
			want: "501 5.1.7", result: resultRejected, code: "501",
		},
		{
			name: "null sender accepted",
			run:  func(c *client) resp { return c.send("", []string{"rcpt@example.com"}, simpleBody) },
			want: "250 2.0.0", result: resultAccepted, code: "250", published: true,
		},
		{
			name: "SIZE above the limit",
			cfg:  func(c *Config) { c.MaxMessageBytes = 1024 },
			run:  func(c *client) resp { return c.cmd("MAIL FROM:<a@sender.org> SIZE=5000") },
			want: "552 5.3.4",
		},
		{
			name: "DATA above the limit",
			cfg:  func(c *Config) { c.MaxMessageBytes = 1024 },
			run: func(c *client) resp {
				return c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody+strings.Repeat("x", 70)+"\r\n"+strings.Repeat(strings.Repeat("y", 70)+"\r\n", 30))
			},
			want: "552 5.3.4", result: resultRejected, code: "552",
		},
		{
			name: "too many recipients",
			cfg:  func(c *Config) { c.MaxRecipients = 2 },
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				c.expect("RCPT TO:<r1@example.com>", "250")
				c.expect("RCPT TO:<r2@example.com>", "250")
				return c.cmd("RCPT TO:<r3@example.com>")
			},
			want: "452 4.5.3", result: resultRecipientLimit, code: "452",
		},
		{
			name: "repeated recipient does not count twice",
			cfg:  func(c *Config) { c.MaxRecipients = 1 },
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				c.expect("RCPT TO:<r1@example.com>", "250")
				return c.cmd("RCPT TO:<R1@example.com>")
			},
			want: "250",
		},
		{
			name: "second MAIL in a transaction",
			run: func(c *client) resp {
				c.expect("MAIL FROM:<a@sender.org>", "250")
				return c.cmd("MAIL FROM:<b@sender.org>")
			},
			want: "503 5.5.1",
		},
		{
			name: "publisher plain error is temporary, not 554",
			pub:  publishErr(errors.New("boom")),
			run:  func(c *client) resp { return c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody) },
			want: "451 4.3.0", result: resultDeferred, code: "451", published: true,
		},
		{
			name: "publisher panic is temporary",
			pub:  func(context.Context, *mail.Message) (queue.PublishResult, error) { panic("publisher bug") },
			run:  func(c *client) resp { return c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody) },
			want: "451 4.3.0", result: resultDeferred, code: "451", published: true,
		},
		{
			name: "queue full",
			pub:  publishErr(fmt.Errorf("publish: %w", queue.ErrQueueFull)),
			run:  func(c *client) resp { return c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody) },
			want: "452 4.3.1", result: resultDeferred, code: "452", published: true,
		},
		{
			name: "queue unavailable",
			pub:  publishErr(fmt.Errorf("publish: %w", queue.ErrUnavailable)),
			run:  func(c *client) resp { return c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody) },
			want: "451 4.3.0", result: resultDeferred, code: "451", published: true,
		},
		{
			name: "queue refuses the size",
			pub:  publishErr(fmt.Errorf("publish: %w", queue.ErrTooLarge)),
			run:  func(c *client) resp { return c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody) },
			want: "552 5.3.4", result: resultRejected, code: "552", published: true,
		},
		{
			name: "publish timeout",
			cfg:  func(c *Config) { c.PublishTimeout = 50 * time.Millisecond },
			pub: func(ctx context.Context, _ *mail.Message) (queue.PublishResult, error) {
				<-ctx.Done()
				return queue.PublishResult{}, ctx.Err()
			},
			run:  func(c *client) resp { return c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody) },
			want: "451 4.3.0", result: resultDeferred, code: "451", published: true,
		},
		{
			name: "duplicate is accepted",
			pub: func(context.Context, *mail.Message) (queue.PublishResult, error) {
				return queue.PublishResult{Duplicate: true}, nil
			},
			run:  func(c *client) resp { return c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody) },
			want: "250 2.0.0", result: resultDuplicate, code: "250", published: true,
		},
		{
			name: "broken MIME is accepted",
			run: func(c *client) resp {
				body := "Subject: broken\r\nContent-Type: multipart/mixed; boundary=\"b\r\n\r\n--b\r\nContent-Type: text/plain; charset=nonsense\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n--b"
				return c.send("a@sender.org", []string{"rcpt@example.com"}, body)
			},
			want: "250 2.0.0", result: resultAccepted, code: "250", published: true,
		},
		{
			name: "no header block at all is accepted",
			run: func(c *client) resp {
				return c.send("a@sender.org", []string{"rcpt@example.com"}, "\x00\x01 just bytes, no headers\r\n: nothing\r\n")
			},
			want: "250 2.0.0", result: resultAccepted, code: "250", published: true,
		},
		{
			name: "overlong line in DATA",
			cfg:  func(c *Config) { c.MaxLineLength = 1000 },
			run: func(c *client) resp {
				return c.send("a@sender.org", []string{"rcpt@example.com"}, "Subject: x\r\n\r\n"+strings.Repeat("z", 1500)+"\r\n")
			},
			want: "500 5.6.0", result: resultRejected, code: "500", closed: true,
		},
		{
			// go-smtp's own reply, checked so codes.go documents it truly.
			name: "overlong command line",
			cfg:  func(c *Config) { c.MaxLineLength = 1000 },
			run:  func(c *client) resp { return c.cmd("MAIL FROM:<" + strings.Repeat("a", 1200) + "@sender.org>") },
			want: "500 5.4.0", closed: true,
		},
		{
			name: "line of 998 octets plus CRLF is fine",
			cfg:  func(c *Config) { c.MaxLineLength = 1000 },
			run: func(c *client) resp {
				return c.send("a@sender.org", []string{"rcpt@example.com"}, "Subject: x\r\n\r\n"+strings.Repeat("z", 998)+"\r\n")
			},
			want: "250 2.0.0", published: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			pub := &fakePublisher{fn: tc.pub}
			srv, addr := startServer(t, cfg, pub, nil)
			c := greet(t, addr)
			got := tc.run(c)
			if !strings.HasPrefix(got.status(), tc.want) {
				t.Fatalf("got %v, want %s", got, tc.want)
			}
			if got.code/100 == 5 && strings.Contains(got.text, "transaction failed") {
				t.Fatalf("go-smtp's plain-error 5xx leaked through: %v", got)
			}
			if tc.result != "" {
				if n := msgCount(srv, tc.result, tc.code); n != 1 {
					t.Errorf("levee_smtp_messages_total{result=%q,code=%q} = %v, want 1", tc.result, tc.code, n)
				}
			}
			if called := pub.calls.Load() > 0; called != tc.published {
				t.Errorf("Publish called = %v, want %v", called, tc.published)
			}
			if tc.closed {
				c.expectClosed()
			} else {
				c.expect("QUIT", "221")
			}
		})
	}
}

// TestQueuedReplyNamesID checks the 250 text and that it comes only after
// Publish returned.
func TestQueuedReplyNamesID(t *testing.T) {
	returned := make(chan struct{})
	pub := &fakePublisher{fn: func(context.Context, *mail.Message) (queue.PublishResult, error) {
		time.Sleep(100 * time.Millisecond) // a slow durable write
		close(returned)
		return queue.PublishResult{}, nil
	}}
	_, addr := startServer(t, baseConfig(), pub, nil)
	c := greet(t, addr)
	r := c.send("a@sender.org", []string{"rcpt@example.com"}, simpleBody)
	select {
	case <-returned:
	default:
		t.Fatal("250 arrived before Publish returned")
	}
	want := "Ok: queued as " + mail.ID("a@sender.org", []string{"rcpt@example.com"}, []byte(simpleBody))
	if r.status() != "250 2.0.0" || r.text != want {
		t.Fatalf("got %v, want 250 2.0.0 %s", r, want)
	}
}

// TestBDAT covers go-smtp's CHUNKING path, where Data runs on a goroutine of
// its own: a plain publish error must still be 451, never 554.
func TestBDAT(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"accepted", nil, "250 2.0.0"},
		{"plain error", errors.New("boom"), "451 4.3.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := &fakePublisher{}
			if tc.err != nil {
				pub.fn = func(context.Context, *mail.Message) (queue.PublishResult, error) {
					return queue.PublishResult{}, tc.err
				}
			}
			_, addr := startServer(t, baseConfig(), pub, nil)
			c := greet(t, addr)
			c.expect("MAIL FROM:<a@sender.org>", "250")
			c.expect("RCPT TO:<rcpt@example.com>", "250")
			first, second := simpleBody[:20], simpleBody[20:]
			c.write(fmt.Sprintf("BDAT %d\r\n%s", len(first), first))
			c.expect("", "250")
			c.write(fmt.Sprintf("BDAT %d LAST\r\n%s", len(second), second))
			c.expect("", tc.want)
			if tc.err == nil {
				msgs := pub.messages()
				if len(msgs) != 1 || !strings.HasSuffix(string(msgs[0].Raw), simpleBody) {
					t.Fatalf("published %d messages, want the body intact", len(msgs))
				}
			}
			c.expect("QUIT", "221")
		})
	}
}
