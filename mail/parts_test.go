package mail

import (
	"strings"
	"testing"
)

func partSummary(p *Parsed) []string {
	var out []string
	for _, a := range p.Attachments {
		out = append(out, a.ContentType+"|"+a.Filename+"|"+a.ContentID)
	}
	return out
}

// TestEveryNonBodyPartIsListed: parts without a Content-Disposition were
// invisible (only enmime's Attachments and Inlines were listed): signatures,
// images of multipart/related, TNEF, a forwarded message (issue 13 item 1).
func TestEveryNonBodyPartIsListed(t *testing.T) {
	raw := "From: a@x.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n" +
		"--m\r\nContent-Type: multipart/signed; boundary=s; protocol=\"application/pgp-signature\"\r\n\r\n" +
		"--s\r\nContent-Type: multipart/related; boundary=r\r\n\r\n" +
		"--r\r\nContent-Type: text/html\r\n\r\n<p>see <img src=\"cid:logo@x\"></p>\r\n" +
		"--r\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n" +
		"--s\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\nxyz\r\n-----END PGP SIGNATURE-----\r\n--s--\r\n" +
		"--m\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\nContent-Transfer-Encoding: base64\r\n\r\neJ8+IgAA\r\n" +
		"--m\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@y.test\r\nSubject: forwarded\r\n\r\nthe forwarded body\r\n" +
		"--m--\r\n"
	p, err := Parse([]byte(raw), DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(partSummary(p), ", ")
	want := "image/png||logo@x, application/pgp-signature|signature.asc|, application/ms-tnef|winmail.dat|, message/rfc822||"
	if got != want {
		t.Fatalf("parts:\n got %s\nwant %s", got, want)
	}
	for _, a := range p.Attachments {
		if a.Size != int64(len(a.Content)) || a.Size == 0 {
			t.Errorf("%s: size %d, content %d bytes", a.ContentType, a.Size, len(a.Content))
		}
	}
	if !strings.Contains(p.HTML, "cid:logo@x") {
		t.Errorf("html body %q", p.HTML)
	}
}

// TestInlineBodyPartsAreNotAttachments: Mutt marks the text body
// "Content-Disposition: inline"; it is the body, not an attachment (it was
// listed as both: issue 13 item 2). An inline part with a file name is a file.
func TestInlineBodyPartsAreNotAttachments(t *testing.T) {
	raw := "From: a@x.test\r\nSubject: mutt\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n" +
		"--m\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Disposition: inline\r\n\r\nHello from Mutt.\r\n" +
		"--m\r\nContent-Type: text/html\r\nContent-Disposition: inline\r\n\r\n<p>Hello</p>\r\n" +
		"--m\r\nContent-Type: text/plain\r\nContent-Disposition: inline; filename=\"notes.txt\"\r\n\r\nnotes\r\n" +
		"--m\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\r\n%PDF-1.4\r\n" +
		"--m--\r\n"
	p, err := Parse([]byte(raw), DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(partSummary(p), ", "), "text/plain|notes.txt|, application/pdf|a.pdf|"; got != want {
		t.Fatalf("attachments:\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(p.Text, "Hello from Mutt.") || !strings.Contains(p.HTML, "<p>Hello</p>") {
		t.Fatalf("body: text %q, html %q", p.Text, p.HTML)
	}
}

// TestAlternativeWithoutContentTypeIsText: RFC 2045 5.2 makes a part without
// Content-Type text/plain (us-ascii); it was ignored and the text converted
// from the HTML instead, losing content (issue 13 item 3).
func TestAlternativeWithoutContentTypeIsText(t *testing.T) {
	raw := "From: a@x.test\r\nSubject: alt\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n" +
		"--a\r\n\r\nThe plain text, with a detail the HTML lacks.\r\n" +
		"--a\r\nContent-Type: text/html\r\n\r\n<p>The HTML</p>\r\n" +
		"--a--\r\n"
	p, err := Parse([]byte(raw), DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Text, "a detail the HTML lacks") {
		t.Fatalf("text %q: want the part without Content-Type", p.Text)
	}
	if len(p.Attachments) != 0 {
		t.Fatalf("attachments %v, want none", partSummary(p))
	}
}

// TestTextPartsNotInTheBodyAreListed: Apple Mail sends an HTML body in two
// halves around an inline image (alternative: text, mixed: html, image,
// html). enmime's HTML is the first half only; the second half was neither
// body nor attachment, so it showed nowhere.
func TestTextPartsNotInTheBodyAreListed(t *testing.T) {
	raw := "From: a@x.test\r\nSubject: apple\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n" +
		"--a\r\nContent-Type: text/plain\r\n\r\nplain version\r\n" +
		"--a\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n" +
		"--m\r\nContent-Type: text/html\r\n\r\n<p>first half</p>\r\n" +
		"--m\r\nContent-Type: image/png; name=\"pic.png\"\r\nContent-Disposition: inline; filename=\"pic.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n" +
		"--m\r\nContent-Type: text/html\r\n\r\n<p>second half</p>\r\n" +
		"--m--\r\n--a--\r\n"
	p, err := Parse([]byte(raw), DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(partSummary(p), ", "), "image/png|pic.png|, text/html||"; got != want {
		t.Fatalf("parts:\n got %s\nwant %s", got, want)
	}
	if last := p.Attachments[len(p.Attachments)-1]; !strings.Contains(string(last.Content), "second half") {
		t.Fatalf("the listed text/html part is %q, want the second half", last.Content)
	}
	if !strings.Contains(p.HTML, "first half") || !strings.Contains(p.Text, "plain version") {
		t.Fatalf("body: text %q, html %q", p.Text, p.HTML)
	}
}
