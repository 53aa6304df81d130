package ingest

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
)

var receivedRE = regexp.MustCompile(`^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n` +
	`\tby mx\.test \(Levee\) with ESMTP id ([0-9a-f]{40})\r\n` +
	`\tfor <rcpt@example\.com>; ([^\r\n]+)\r\n`)

// The queued bytes are Levee's Received header followed by exactly the
// bytes the client sent (dot-stuffing undone, a bare LF made CRLF, nothing
// else touched).
func TestReceivedHeaderPrepended(t *testing.T) {
	pub := &fakePublisher{}
	_, addr := startServer(t, baseConfig(), pub, nil)
	c := greet(t, addr)
	// Leading dots, a bare LF, trailing spaces, 8-bit bytes, no final header fold.
	body := "From: a@sender.org\r\nSubject: caf\xc3\xa9  \r\n\r\n.leading dot\r\n..two dots\r\nbare\nLF\r\n\r\n"
	before := time.Now().Add(-time.Second)
	r := c.send("a@sender.org", []string{"rcpt@example.com"}, body)
	if r.status() != "250 2.0.0" {
		t.Fatalf("got %v", r)
	}
	msgs := pub.messages()
	if len(msgs) != 1 {
		t.Fatalf("published %d messages", len(msgs))
	}
	m := msgs[0]
	loc := receivedRE.FindSubmatchIndex(m.Raw)
	if loc == nil || loc[0] != 0 {
		t.Fatalf("no well-formed Received header at the start:\n%q", m.Raw[:min(len(m.Raw), 300)])
	}
	id, date := string(m.Raw[loc[2]:loc[3]]), string(m.Raw[loc[4]:loc[5]])
	if got, want := string(m.Raw[loc[1]:]), strings.Replace(body, "bare\nLF", "bare\r\nLF", 1); got != want {
		t.Fatalf("body changed:\n got %q\nwant %q", got, want)
	}
	// The body has neither Message-ID nor Date: its id holds the day too.
	if id != m.ID || id != mail.UndatedID("a@sender.org", []string{"rcpt@example.com"}, m.Raw[loc[1]:], m.Envelope.ReceivedAt) {
		t.Fatalf("header id %s, message id %s: want the id of the body as sent", id, m.ID)
	}
	at, err := time.Parse(time.RFC1123Z, date)
	if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
		t.Fatalf("date %q: %v", date, err)
	}
	if m.Size != int64(len(m.Raw)) {
		t.Errorf("Size %d, len(Raw) %d", m.Size, len(m.Raw))
	}
	e := m.Envelope
	if e.From != "a@sender.org" || len(e.To) != 1 || e.To[0] != "rcpt@example.com" ||
		e.Helo != "client.example" || !strings.HasPrefix(e.RemoteAddr, "127.0.0.1:") || !e.ReceivedAt.Truncate(time.Second).Equal(at) {
		t.Errorf("envelope %+v", e)
	}
	// Every header line is folded well under RFC 5322's 998 octets and
	// ends in CRLF.
	hdr := m.Raw[:loc[1]]
	for line := range bytes.Lines(hdr) {
		if !bytes.HasSuffix(line, []byte("\r\n")) || len(line) > 100 || bytes.Count(line, []byte("\r")) != 1 {
			t.Errorf("bad header line %q", line)
		}
	}
}

// Two sends of the same message give the same id (the second is reported as
// a duplicate by the queue and still answered 250).
func TestIDStableAcrossRetransmission(t *testing.T) {
	pub := &fakePublisher{}
	srv, addr := startServer(t, baseConfig(), pub, nil)
	var ids []string
	for range 2 {
		c := greet(t, addr)
		r := c.send("a@sender.org", []string{"rcpt@example.com", "other@example.com"}, simpleBody)
		if r.status() != "250 2.0.0" {
			t.Fatalf("got %v", r)
		}
		ids = append(ids, strings.TrimPrefix(r.text, "Ok: queued as "))
		c.expect("QUIT", "221")
	}
	if ids[0] != ids[1] {
		t.Fatalf("ids differ: %v", ids)
	}
	// Recipient order does not matter either.
	c := greet(t, addr)
	r := c.send("a@sender.org", []string{"other@example.com", "rcpt@example.com"}, simpleBody)
	if got := strings.TrimPrefix(r.text, "Ok: queued as "); got != ids[0] {
		t.Fatalf("reordered recipients: id %s, want %s", got, ids[0])
	}
	if msgCount(srv, resultAccepted, "250") != 1 || msgCount(srv, resultDuplicate, "250") != 2 {
		t.Fatalf("accepted %v duplicate %v, want 1 and 2",
			msgCount(srv, resultAccepted, "250"), msgCount(srv, resultDuplicate, "250"))
	}
	// With two recipients the header names neither.
	raw := string(pub.messages()[0].Raw)
	if strings.Contains(raw[:strings.Index(raw, "From:")], "for <") {
		t.Errorf("Received header discloses a recipient of many:\n%s", raw)
	}
}

func TestReceivedHeaderUnit(t *testing.T) {
	at := time.Date(2024, 11, 29, 8, 30, 0, 0, time.FixedZone("X", 3600))
	cases := []struct {
		name string
		in   receivedInfo
		want string
	}{
		{
			"ipv6 and one recipient",
			receivedInfo{helo: "mta.example", remote: "[2001:db8::1]:4567", hostname: "mx.test", id: "abc", rcpt: "u@example.com", at: at},
			"Received: from mta.example ([IPv6:2001:db8::1])\r\n\tby mx.test (Levee) with ESMTP id abc\r\n\tfor <u@example.com>; Fri, 29 Nov 2024 07:30:00 +0000\r\n",
		},
		{
			"hostile helo, no recipient clause",
			receivedInfo{helo: "evil)\r\nX-Injected: 1 (", remote: "192.0.2.7:25", hostname: "mx.test", id: "abc", at: at},
			"Received: from evil???X-Injected:?1?? ([192.0.2.7])\r\n\tby mx.test (Levee) with ESMTP id abc;\r\n\tFri, 29 Nov 2024 07:30:00 +0000\r\n",
		},
		{
			"unsafe recipient is left out, not mangled",
			receivedInfo{helo: "h", remote: "pipe", hostname: "mx.test", id: "abc", rcpt: "a>b@example.com", at: at},
			"Received: from h\r\n\tby mx.test (Levee) with ESMTP id abc;\r\n\tFri, 29 Nov 2024 07:30:00 +0000\r\n",
		},
		{
			"SMTPUTF8",
			receivedInfo{helo: "bücher.example", remote: "[::ffff:192.0.2.1]:1", hostname: "mx.test", id: "abc", rcpt: "jürgen@example.com", utf8: true, at: at},
			"Received: from bücher.example ([192.0.2.1])\r\n\tby mx.test (Levee) with UTF8SMTP id abc\r\n\tfor <jürgen@example.com>; Fri, 29 Nov 2024 07:30:00 +0000\r\n",
		},
		{
			"UTF-8 without SMTPUTF8 is masked",
			receivedInfo{helo: "bücher.example", remote: "", hostname: "mx.test", id: "abc", at: at},
			"Received: from b?cher.example\r\n\tby mx.test (Levee) with ESMTP id abc;\r\n\tFri, 29 Nov 2024 07:30:00 +0000\r\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(receivedHeader(tc.in)); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestPrependHeaderFallsBackToCopy(t *testing.T) {
	buf := append(make([]byte, receivedHeadroom), "body"...)
	long := bytes.Repeat([]byte("h"), receivedHeadroom+10)
	if got := prependHeader(buf, long); string(got) != string(long)+"body" {
		t.Fatalf("long header: got %d bytes", len(got))
	}
	if got := prependHeader(buf, []byte("H: 1\r\n")); string(got) != "H: 1\r\nbody" {
		t.Fatalf("short header: got %q", got)
	}
}
