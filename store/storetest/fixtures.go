package storetest

import (
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
)

// baseTime is microsecond-aligned and in a non-UTC zone: backends keep
// microseconds and the instant, not the zone.
var baseTime = time.Date(2024, 11, 26, 10, 0, 0, 123456000, time.FixedZone("CET", 3600))

// fromRaw builds a message the way the worker gets it: the ID from mail.ID
// and the content from mail.Parse.
func fromRaw(t testing.TB, from string, to []string, raw string) *mail.Message {
	t.Helper()
	p, err := mail.Parse([]byte(raw), mail.DefaultParseLimits)
	if err != nil {
		t.Fatalf("mail.Parse: %v", err)
	}
	return &mail.Message{
		ID: mail.ID(from, to, []byte(raw)),
		Envelope: mail.Envelope{
			From:       from,
			To:         to,
			RemoteAddr: "192.0.2.10:41234",
			Helo:       "mx.sender.example",
			ReceivedAt: baseTime,
		},
		Raw:    []byte(raw),
		Size:   int64(len(raw)),
		Parsed: p,
	}
}

// simple is a small plain-text message; n makes it (and its ID) unique.
func simple(t testing.TB, n int, to ...string) *mail.Message {
	t.Helper()
	from := fmt.Sprintf("sender%d@sender.example", n)
	raw := fmt.Sprintf("From: Sender %d <%s>\r\n"+
		"To: %s\r\n"+
		"Subject: message %d\r\n"+
		"Date: Tue, 26 Nov 2024 09:%02d:%02d +0000\r\n"+
		"Message-ID: <m%d@sender.example>\r\n"+
		"\r\n"+
		"body of message %d\r\n", n, from, to[0], n, (n/60)%60, n%60, n, n)
	m := fromRaw(t, from, to, raw)
	m.Envelope.ReceivedAt = baseTime.Add(time.Duration(n) * time.Millisecond)
	return m
}

// multipart has text, HTML, an attachment and an inline image with a
// Content-ID, encoded headers and binary attachment content.
func multipart(t testing.TB, to ...string) *mail.Message {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString
	raw := "From: Alice <alice@sender.example>\r\n" +
		"To: bob@example.com\r\n" +
		"Subject: =?utf-8?q?Quarterly_report_=E2=82=AC?=\r\n" +
		"Date: Tue, 26 Nov 2024 09:15:00 +0100\r\n" +
		"Message-ID: <report-1@sender.example>\r\n" +
		"X-Trace: one\r\n" +
		"X-Trace: two\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"outer\"\r\n" +
		"\r\n" +
		"--outer\r\nContent-Type: multipart/related; boundary=\"rel\"\r\n\r\n" +
		"--rel\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n" +
		"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Bob,\r\nsee attached.\r\n" +
		"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello Bob,<img src=\"cid:logo@sender.example\"></p>\r\n" +
		"--alt--\r\n" +
		"--rel\r\nContent-Type: image/png\r\nContent-Disposition: inline; filename=\"logo.png\"\r\n" +
		"Content-ID: <logo@sender.example>\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		b64([]byte("\x89PNG\r\n\x1a\nfake")) + "\r\n" +
		"--rel--\r\n" +
		"--outer\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n" +
		"Content-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		b64([]byte("%PDF-1.4 fake\x00\xff")) + "\r\n" +
		"--outer--\r\n"
	m := fromRaw(t, "alice@sender.example", to, raw)
	if len(m.Parsed.Attachments) != 2 || m.Parsed.Text == "" || m.Parsed.HTML == "" || m.Parsed.Date.IsZero() {
		t.Fatalf("fixture: mail.Parse did not find text, html, date and 2 attachments: %+v", m.Parsed)
	}
	return m
}

// handBuilt is a message with a Parsed made by hand, for content mail.Parse
// would not produce.
func handBuilt(id string, raw []byte, p *mail.Parsed, to ...string) *mail.Message {
	return &mail.Message{
		ID:       id,
		Envelope: mail.Envelope{From: "hand@sender.example", To: to, ReceivedAt: baseTime},
		Raw:      raw,
		Size:     int64(len(raw)),
		Parsed:   p,
	}
}
