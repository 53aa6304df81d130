package mail

import (
	"fmt"
	"strings"
	"testing"
)

// nested is a message of depth multipart/mixed levels, each opening one
// part that holds the next level, with a text part at the bottom. Unclosed,
// it is the 1.6 KB "MIME bomb" of issue 12: no level has its closing boundary.
func nested(depth, padding int, closed bool) []byte {
	var b strings.Builder
	b.WriteString("From: a@x.test\r\nSubject: nested\r\nMIME-Version: 1.0\r\n")
	for i := range depth {
		fmt.Fprintf(&b, "Content-Type:%s multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", strings.Repeat(" ", padding), i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\nbottom\r\n")
	if closed {
		for i := depth - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "--b%d--\r\n", i)
		}
	}
	return []byte(b.String())
}

// TestUnclosedNestedPartsCostLinearWork: enmime re-reads each unclosed
// level's parent at its end, so the work doubled with every level (depth 22
// took 2.4 s, 27 took 73 s, all within MaxDepth 30). Over the work budget the
// message is kept with its headers and a warning, as over the other limits.
func TestUnclosedNestedPartsCostLinearWork(t *testing.T) {
	p, err := Parse(nested(22, 0, false), DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	if !p.HeadersOnly || p.Subject != "nested" || len(p.Warnings) == 0 || !strings.Contains(p.Warnings[0], "work budget") {
		t.Fatalf("a 22-level unclosed message: headers only %v, subject %q, warnings %q; want headers only over the work budget", p.HeadersOnly, p.Subject, p.Warnings)
	}
}

// TestShallowUnclosedPartsStillParse: the budget leaves room for the truncated
// real mail it was not made for (a few unclosed levels).
func TestShallowUnclosedPartsStillParse(t *testing.T) {
	for depth := 1; depth <= 8; depth++ {
		p, err := Parse(nested(depth, 0, false), DefaultParseLimits)
		if err != nil || p.HeadersOnly || !strings.Contains(p.Text, "bottom") {
			t.Fatalf("depth %d: headers only %v, text %q, warnings %q, err %v", depth, p.HeadersOnly, p.Text, p.Warnings, err)
		}
	}
}

// TestDepthCheckSeesPaddedContentType: the depth limit counted multipart
// Content-Types in the first 200 bytes of a line only, so padding the field
// with white space let 490 levels through.
func TestDepthCheckSeesPaddedContentType(t *testing.T) {
	for _, raw := range [][]byte{
		nested(40, 250, true),
		[]byte("Subject: folded\r\n" + strings.Repeat("Content-Type:\r\n \r\n multipart/mixed; boundary=q\r\n", 40) + "\r\nbody\r\n"),
	} {
		p, err := Parse(raw, DefaultParseLimits)
		if err != nil {
			t.Fatal(err)
		}
		if !p.HeadersOnly || len(p.Warnings) == 0 || !strings.Contains(p.Warnings[0], "nesting deeper than 30") {
			t.Fatalf("40 padded levels: headers only %v, warnings %q; want the depth limit", p.HeadersOnly, p.Warnings)
		}
	}
}
