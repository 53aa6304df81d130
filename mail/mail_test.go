package mail

import (
	"strings"
	"testing"
	"time"
)

func TestIDIgnoresRecipientOrderAndCaseButNotContent(t *testing.T) {
	body := []byte("Subject: x\r\n\r\nhello\r\n")
	a := ID("Sender@Example.test", []string{"b@x.test", "A@x.test"}, body)
	if b := ID("sender@example.test", []string{"a@x.test", "b@x.test"}, body); a != b {
		t.Fatalf("same envelope in another order or case: %s != %s", a, b)
	}
	for name, other := range map[string]string{
		"body":       ID("sender@example.test", []string{"a@x.test", "b@x.test"}, []byte("Subject: x\r\n\r\nhello!\r\n")),
		"sender":     ID("other@example.test", []string{"a@x.test", "b@x.test"}, body),
		"recipients": ID("sender@example.test", []string{"a@x.test"}, body),
		// Without separators "ab"+"c" and "a"+"bc" would collide.
		"boundaries": ID("sender@example.test", []string{"a@x.testb@x.test"}, body),
	} {
		if other == a {
			t.Errorf("different %s, same id %s", name, a)
		}
	}
	if len(a) != 40 {
		t.Fatalf("id %q: want 40 hex characters", a)
	}
}

func TestDomain(t *testing.T) {
	for in, want := range map[string]string{"a@Example.COM": "example.com", "a@b@c.test": "c.test", "nodomain": "", "": ""} {
		if got := Domain(in); got != want {
			t.Errorf("Domain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseMultipart(t *testing.T) {
	raw := "From: Alice <a@x.test>\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\nMessage-ID: <m1@x.test>\r\n" +
		"Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nhello text\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b1--\r\n"
	p, err := Parse([]byte(raw), DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "café" || p.MessageID != "m1@x.test" || !strings.Contains(p.Text, "hello text") {
		t.Fatalf("parsed %+v", p)
	}
	if p.Date.IsZero() || p.Date.Location().String() != "UTC" || p.Date.Hour() != 9 {
		t.Fatalf("date %v: want 09:00 UTC", p.Date)
	}
	if len(p.Attachments) != 1 || p.Attachments[0].Filename != "a.bin" || p.Attachments[0].Size != 3 {
		t.Fatalf("attachments %+v", p.Attachments)
	}
	if got := p.Headers["Message-Id"]; len(got) != 1 {
		t.Fatalf("headers not canonical: %v", p.Headers)
	}
}

func TestParseOverLimitsKeepsHeaders(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: a@x.test\r\nSubject: many parts\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n")
	for range 50 {
		b.WriteString("--z\r\nContent-Type: text/plain\r\n\r\npart\r\n")
	}
	b.WriteString("--z--\r\n")
	p, err := Parse([]byte(b.String()), ParseLimits{MaxParts: 10, MaxDepth: 5})
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "many parts" || p.From != "a@x.test" || p.Text != "" {
		t.Fatalf("over the part limit: %+v", p)
	}
	if len(p.Warnings) == 0 || !strings.Contains(p.Warnings[0], "more than 10 MIME parts") {
		t.Fatalf("warnings %v", p.Warnings)
	}

	deep := "Subject: deep\r\n" + strings.Repeat("Content-Type: multipart/mixed; boundary=q\r\n", 8) + "\r\nbody\r\n"
	p, err = Parse([]byte(deep), ParseLimits{MaxParts: 100, MaxDepth: 5})
	if err != nil || len(p.Warnings) == 0 || !strings.Contains(p.Warnings[0], "nesting deeper than 5") {
		t.Fatalf("over the depth limit: %+v, %v", p, err)
	}
}

func TestParseNeverRejectsMessyMail(t *testing.T) {
	for name, raw := range map[string]string{
		"no headers":       "just a body line\r\n",
		"empty":            "",
		"broken boundary":  "Content-Type: multipart/mixed; boundary=\"\r\n\r\n--\r\n",
		"binary":           "Subject: bin\r\n\r\n\x00\xff\xfe\r\n",
		"bad encoded word": "Subject: =?bogus?Q?x?=\r\n\r\nbody\r\n",
	} {
		p, err := Parse([]byte(raw), DefaultParseLimits)
		if err != nil || p == nil || p.Headers == nil {
			t.Errorf("%s: Parse = %+v, %v; want a result, never an error", name, p, err)
		}
	}
}

// TestObsoleteZoneNamesKeepTheirOffsets: RFC 5322's obsolete zone names are
// read with their offsets (net/mail took an unknown abbreviation as UTC);
// numeric zones and GMT are as before.
func TestObsoleteZoneNamesKeepTheirOffsets(t *testing.T) {
	for _, tc := range []struct{ date, want string }{
		{"Tue, 1 Jul 2003 12:09:26 EDT", "2003-07-01T16:09:26Z"},
		{"Tue, 1 Jul 2003 12:09:26 PST", "2003-07-01T20:09:26Z"},
		{"Tue, 1 Jul 2003 12:09:26 CDT", "2003-07-01T17:09:26Z"},
		{"Tue, 1 Jul 2003 12:09:26 GMT", "2003-07-01T12:09:26Z"},
		{"Tue, 1 Jul 2003 12:09:26 +0200", "2003-07-01T10:09:26Z"},
	} {
		raw := "From: a@b.example\r\nDate: " + tc.date + "\r\nSubject: z\r\n\r\nbody\r\n"
		p, err := Parse([]byte(raw), DefaultParseLimits)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Date.Format(time.RFC3339); got != tc.want {
			t.Errorf("Date: %s read as %s, want %s", tc.date, got, tc.want)
		}
	}
}

// TestMessageIDIsTheAddrSpec: the id between the first '<' and its '>',
// without a trailing comment or folding white space; a bare id is taken
// whole, so a look-up with or without brackets finds the same.
func TestMessageIDIsTheAddrSpec(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"<id@host>", "id@host"},
		{"<id@host> (added by postmaster)", "id@host"},
		{"<abc.\r\n def@host>", "abc.def@host"},
		{"<x@   >", "x@"},
		{"x@   ", "x@"},
		{"id@host", "id@host"},
		{"", ""},
	} {
		if got := NormalizeMessageID(tc.in); got != tc.want {
			t.Errorf("NormalizeMessageID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	raw := "From: a@b.example\r\nMessage-ID: <id@host> (added by postmaster)\r\nSubject: z\r\n\r\nbody\r\n"
	p, err := Parse([]byte(raw), DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	if p.MessageID != "id@host" {
		t.Errorf("stored Message-ID %q, want id@host", p.MessageID)
	}
}
