package ingest

import (
	"strings"
	"testing"
)

// TestSMTPSmugglingStaysInOneMessage: the end of DATA is CRLF "." CRLF and
// nothing else. Each of the sequences other servers took for it (SMTP
// smuggling: a second message hidden in the first, sent on to a relay)
// stays inside the one message, and the smuggled commands are body text.
func TestSMTPSmugglingStaysInOneMessage(t *testing.T) {
	for name, fake := range map[string]string{
		"LF.LF":     "\n.\n",
		"CRLF.LF":   "\r\n.\n",
		"LF.CRLF":   "\n.\r\n",
		"CR.CR":     "\r.\r",
		"CRLF.CR":   "\r\n.\r",
		"CR.CRLF":   "\r.\r\n",
		"LF..CRLF ": "\n..\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			pub := &fakePublisher{}
			srv, addr := startServer(t, baseConfig(), pub, nil)
			c := greet(t, addr)
			c.expect("MAIL FROM:<a@sender.org>", "250")
			c.expect("RCPT TO:<rcpt@example.com>", "250")
			c.expect("DATA", "354")
			smuggled := "MAIL FROM:<evil@sender.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
			c.write("Subject: carrier\r\n\r\nbefore" + fake + smuggled + ".\r\n")
			if r := c.mustRead(); r.code != 250 {
				t.Fatalf("end of the carrier: %v", r)
			}
			c.expect("NOOP", "250") // nothing else was answered: no second transaction
			msgs := pub.messages()
			if len(msgs) != 1 || len(msgs[0].Envelope.To) != 1 || msgs[0].Envelope.To[0] != "rcpt@example.com" {
				t.Fatalf("published %d messages, want the carrier alone", len(msgs))
			}
			if raw := string(msgs[0].Raw); !strings.Contains(raw, "smuggled\r\n") || !strings.Contains(raw, "MAIL FROM:<evil@sender.org>") {
				t.Fatalf("the smuggled text is not in the carrier's body: %q", raw)
			}
			if n := msgCount(srv, resultAccepted, "250"); n != 1 {
				t.Fatalf("%v messages accepted, want 1", n)
			}
		})
	}
}

// TestBareLFIsNormalised: a line ending in a bare LF is taken as if it ended
// in CRLF (Postfix's default, smtpd_forbid_bare_newline = normalize): stored
// with CRLF, so that no reader or later relay sees a bare LF that another
// program might end a line, or the data, on.
func TestBareLFIsNormalised(t *testing.T) {
	pub := &fakePublisher{}
	_, addr := startServer(t, baseConfig(), pub, nil)
	c := greet(t, addr)
	if r := c.send("a@sender.org", []string{"rcpt@example.com"}, "Subject: lf\nX-A: 1\r\n\r\nbare\nLF\r\nand\n.\nend\r\n"); r.code != 250 {
		t.Fatalf("got %v", r)
	}
	msgs := pub.messages()
	if len(msgs) != 1 {
		t.Fatalf("published %d", len(msgs))
	}
	if want := "Subject: lf\r\nX-A: 1\r\n\r\nbare\r\nLF\r\nand\r\n.\r\nend\r\n"; !strings.HasSuffix(string(msgs[0].Raw), want) {
		t.Fatalf("stored %q, want the body ending %q", msgs[0].Raw, want)
	}
}

// TestBareLFsNeverMakeAMessageTooLarge: CRs added before bare LFs (one a
// line) must not take a message within smtp.max_message_bytes over it,
// where the queue could refuse it as too large, a bounce: such a message is
// kept as sent. Every byte the session held is given back.
func TestBareLFsNeverMakeAMessageTooLarge(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxMessageBytes = 4096
	pub := &fakePublisher{}
	srv, addr := startServer(t, cfg, pub, nil)
	c := greet(t, addr)
	body := "Subject: lf\r\n\r\n" + strings.Repeat("abcdefg\n", (4096-17)/8) + "\r\n"
	if r := c.send("a@sender.org", []string{"rcpt@example.com"}, body); r.code != 250 {
		t.Fatalf("got %v", r)
	}
	msgs := pub.messages()
	if len(msgs) != 1 || !strings.HasSuffix(string(msgs[0].Raw), body) {
		t.Fatalf("a message the CRs would take past the limit was not kept as sent")
	}
	small := "Subject: lf\nX: 1\r\n\r\nbody\n"
	if r := c.send("a@sender.org", []string{"rcpt@example.com"}, small); r.code != 250 {
		t.Fatalf("got %v", r)
	}
	waitFor(t, "the budget given back", func() bool { return srv.budget.inFlight() == 0 })
}
