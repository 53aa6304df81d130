package sqlite

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
)

// TestMailboxesWithTabsAndNewlines: an address holding a tab or a newline
// (a quoted local part may) cannot ride in Mailboxes' one-value form; the
// list is then read row by row, and is the same as without such an address.
func TestMailboxesWithTabsAndNewlines(t *testing.T) {
	s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "tabs.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	parsed, err := mail.Parse([]byte("Subject: x\r\n\r\nhi\r\n"), mail.DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	deliver := func(id string, to ...string) {
		t.Helper()
		m := &mail.Message{ID: id, Envelope: mail.Envelope{From: "a@b.example", To: to, ReceivedAt: time.Now()},
			Raw: []byte("Subject: x\r\n\r\nhi\r\n"), Size: 18, Parsed: parsed}
		if _, err := s.Deliver(t.Context(), []*mail.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	deliver("m1", "b@example.com", "a@example.com")
	deliver("m2", "b@example.com")
	fast, err := s.Mailboxes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	slow, err := s.mailboxesByRow(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(fast) != fmt.Sprint(slow) || len(fast) != 2 || fast[0].Address != "a@example.com" || fast[1].Messages != 2 {
		t.Fatalf("one-value form %v, row by row %v", fast, slow)
	}
	deliver("m3", "\"tab\there\"@example.com", "\"new\nline\"@example.com")
	got, err := s.Mailboxes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].Address != "\"new\nline\"@example.com" || got[1].Address != "\"tab\there\"@example.com" {
		t.Fatalf("with a tab and a newline: %+v", got)
	}
}
