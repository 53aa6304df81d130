package queue

import (
	"strings"
	"testing"
)

func TestSubjectFor(t *testing.T) {
	tests := []struct {
		to   []string
		want string
	}{
		{[]string{"bob@Example.COM"}, "levee.mail.example.com"},
		{[]string{"a@sub.example.co.uk", "b@other.org"}, "levee.mail.sub.example.co.uk"},
		{[]string{"postmaster"}, "levee.mail._"},
		{nil, "levee.mail._"},
		{[]string{"a@"}, "levee.mail._"},
		{[]string{"a@[192.0.2.1]"}, "levee.mail._192.0.2.1_"},
		{[]string{"a@ex*ample.>"}, "levee.mail.ex_ample._"},
		{[]string{"a@.example..com."}, "levee.mail._.example._.com._"},
		{[]string{"a@exa mple\tcom"}, "levee.mail.exa_mple_com"},
		{[]string{"a@bücher.de"}, "levee.mail.b__cher.de"},
		{[]string{"a@xn--bcher-kva.de"}, "levee.mail.xn--bcher-kva.de"},
	}
	for _, tt := range tests {
		if got := subjectFor("levee.mail", tt.to); got != tt.want {
			t.Errorf("subjectFor(%q) = %q, want %q", tt.to, got, tt.want)
		}
	}
	long := "a@" + strings.Repeat("x", 400) + ".com"
	if got := subjectFor("p", []string{long}); len(got) > len("p.")+maxDomainSubject {
		t.Errorf("subject not bounded: %d bytes", len(got))
	}
}

func TestEncodeKeepsHeadersOnOneLine(t *testing.T) {
	m := testMessage("id-1", 10)
	m.Envelope.Helo = "evil\r\nNats-Msg-Id: other"
	msg := encode(Partition{Stream: "S", Prefix: "levee.mail"}, m)
	if h := msg.Header.Get(HeaderHelo); strings.ContainsAny(h, "\r\n") {
		t.Errorf("helo header %q keeps CR/LF", h)
	}
	if got := msg.Header.Values(HeaderMsgID); len(got) != 1 || got[0] != "id-1" {
		t.Errorf("msg id %q", got)
	}
	if got := msg.Header.Values(HeaderRcptTo); len(got) != 2 {
		t.Errorf("one Levee-Rcpt-To per recipient, got %q", got)
	}
	if msg.Subject != "levee.mail.example.com" {
		t.Errorf("subject %q", msg.Subject)
	}
}
