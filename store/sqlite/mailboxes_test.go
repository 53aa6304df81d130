package sqlite

import (
	"fmt"
	"testing"
)

// TestMailboxesWithTabsAndNewlines: an address holding a tab or a newline
// (a quoted local part may) cannot ride in Mailboxes' one-value form; the
// list is then read row by row, and is the same as without such an address.
func TestMailboxesWithTabsAndNewlines(t *testing.T) {
	s := openTest(t)
	n := 0
	deliver := func(to ...string) {
		t.Helper()
		n++
		if _, err := s.Deliver(t.Context(), msgs(testMessage(t, n, to...))); err != nil {
			t.Fatal(err)
		}
	}
	deliver("b@example.com", "a@example.com")
	deliver("b@example.com")
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
	deliver("\"tab\there\"@example.com", "\"new\nline\"@example.com")
	got, err := s.Mailboxes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].Address != "\"new\nline\"@example.com" || got[1].Address != "\"tab\there\"@example.com" {
		t.Fatalf("with a tab and a newline: %+v", got)
	}
}
