package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// wantMailboxes checks Mailboxes against want, in order.
func wantMailboxes(t *testing.T, s store.Store, want ...store.Mailbox) {
	t.Helper()
	got, err := s.Mailboxes(t.Context())
	if err != nil {
		t.Fatalf("Mailboxes: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("Mailboxes = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Address != w.Address || g.Messages != w.Messages || !g.LatestAt.Equal(w.LatestAt) {
			t.Errorf("mailbox %d = %+v, want %+v", i, g, w)
		}
	}
}

func testMailboxes(t *testing.T, s store.Store) {
	wantMailboxes(t, s)
	// Delivered in an order unlike the address order, in several calls.
	deliver(t, s, simple(t, 1, "carol@example.com"), simple(t, 2, "alice@example.com"))
	deliver(t, s, simple(t, 3, "carol@example.com", "bob@example.com"))
	deliver(t, s, simple(t, 4, "carol@example.com"))

	newest := func(addr string) store.Summary {
		mp := page(t, s, addr, store.Page{Limit: 1})
		if len(mp.Messages) != 1 {
			t.Fatalf("Messages(%s) is empty", addr)
		}
		return mp.Messages[0]
	}
	wantMailboxes(t, s,
		store.Mailbox{Address: "alice@example.com", Messages: 1, LatestAt: newest("alice@example.com").StoredAt},
		store.Mailbox{Address: "bob@example.com", Messages: 1, LatestAt: newest("bob@example.com").StoredAt},
		store.Mailbox{Address: "carol@example.com", Messages: 3, LatestAt: newest("carol@example.com").StoredAt},
	)
}

// deliverMany stores n messages to address (every tenth also to
// other@example.com) in calls of uneven sizes, so that StoredAt both ties
// (within a call, on some backends) and differs.
func deliverMany(t *testing.T, s store.Store, first, n int, address string) []*mail.Message {
	t.Helper()
	msgs := make([]*mail.Message, n)
	for i := range msgs {
		to := []string{address}
		if i%10 == 0 {
			to = append(to, "other@example.com")
		}
		msgs[i] = simple(t, first+i, to...)
	}
	for rest, size := msgs, 1; len(rest) > 0; size = size*3 + 1 {
		k := min(size, len(rest))
		deliver(t, s, rest[:k]...)
		rest = rest[k:]
	}
	return msgs
}

func testPagination(t *testing.T, s store.Store) {
	const n = 205 // more than MaxPageLimit
	msgs := deliverMany(t, s, 0, n, "page@example.com")

	list := allPages(t, s, "page@example.com", 7)
	wantNewestFirst(t, list)
	wantSameIDs(t, ids(list), msgs)

	// A limit that divides the mailbox exactly leaves no empty last page.
	if got := allPages(t, s, "page@example.com", 41); len(got) != n {
		t.Errorf("paging by 41: %d summaries, want %d", len(got), n)
	}
	// The largest page and pages of 7 agree on the order.
	big := page(t, s, "page@example.com", store.Page{Limit: store.MaxPageLimit})
	if len(big.Messages) != store.MaxPageLimit || big.NextCursor == "" {
		t.Fatalf("Limit %d: %d summaries, cursor %q; want a full page and a cursor", store.MaxPageLimit, len(big.Messages), big.NextCursor)
	}
	if !slices.Equal(ids(big.Messages), ids(list[:store.MaxPageLimit])) {
		t.Errorf("a page of %d and pages of 7 list different orders", store.MaxPageLimit)
	}
	rest := page(t, s, "page@example.com", store.Page{Limit: store.MaxPageLimit, Cursor: big.NextCursor})
	if !slices.Equal(ids(rest.Messages), ids(list[store.MaxPageLimit:])) || rest.NextCursor != "" {
		t.Errorf("second page of %d = %v (cursor %q), want %v and no cursor",
			store.MaxPageLimit, ids(rest.Messages), rest.NextCursor, ids(list[store.MaxPageLimit:]))
	}

	other := allPages(t, s, "other@example.com", 5)
	if len(other) != (n+9)/10 {
		t.Errorf("other@example.com lists %d messages, want %d", len(other), (n+9)/10)
	}
	wantNewestFirst(t, other)
	wantMailboxes(t, s,
		store.Mailbox{Address: "other@example.com", Messages: int64(len(other)), LatestAt: other[0].StoredAt},
		store.Mailbox{Address: "page@example.com", Messages: n, LatestAt: list[0].StoredAt},
	)
}

func testPageLimits(t *testing.T, s store.Store) {
	deliverMany(t, s, 0, store.MaxPageLimit+5, "page@example.com")
	for _, tc := range []struct{ limit, want int }{
		{0, store.DefaultPageLimit},
		{-3, store.DefaultPageLimit},
		{1, 1},
		{store.MaxPageLimit + 1, store.MaxPageLimit},
		{1 << 30, store.MaxPageLimit},
	} {
		mp := page(t, s, "page@example.com", store.Page{Limit: tc.limit})
		if len(mp.Messages) != tc.want || mp.NextCursor == "" {
			t.Errorf("Limit %d: %d summaries, cursor %q; want %d and a cursor", tc.limit, len(mp.Messages), mp.NextCursor, tc.want)
		}
	}
}

// New mail arriving while a reader pages must not make it see a message
// twice or skip one that was there when it started.
func testArrivalsWhilePaging(t *testing.T, s store.Store) {
	const addr = "live@example.com"
	msgs := deliverMany(t, s, 0, 30, addr)
	seen := map[string]int{}
	mp := page(t, s, addr, store.Page{Limit: 10})
	for pages := 0; ; pages++ {
		for _, m := range mp.Messages {
			seen[m.ID]++
		}
		if mp.NextCursor == "" {
			break
		}
		if pages < 3 {
			deliverMany(t, s, 1000+pages*10, 2, addr)
		}
		mp = page(t, s, addr, store.Page{Limit: 10, Cursor: mp.NextCursor})
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s listed %d times", id, k)
		}
	}
	for _, m := range msgs {
		if seen[m.ID] != 1 {
			t.Errorf("%s, stored before paging began, was not listed", m.ID)
		}
	}
}

func testInvalidCursor(t *testing.T, s store.Store) {
	deliverMany(t, s, 0, 3, "bob@example.com")
	for _, c := range []string{"not a cursor", "AAAA", "\x00\xff", "eyJ4IjoxfQ"} {
		_, err := s.Messages(t.Context(), "bob@example.com", store.Page{Cursor: c})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("cursor %q: err = %v, want store.ErrInvalid", c, err)
		}
	}
}

func testNotFound(t *testing.T, s store.Store) {
	m := simple(t, 1, "bob@example.com")
	deliver(t, s, m)
	unknown := mail.ID("nobody@example.com", []string{"nobody@example.com"}, []byte("never delivered"))
	_, err := s.Message(t.Context(), unknown)
	wantNotFound(t, "Message(unknown id)", err)
	_, err = s.Raw(t.Context(), unknown)
	wantNotFound(t, "Raw(unknown id)", err)
	_, err = s.Messages(t.Context(), "nobody@example.com", store.Page{})
	wantNotFound(t, "Messages(unknown address)", err)
	_, err = s.Messages(t.Context(), "", store.Page{})
	wantNotFound(t, "Messages(empty address)", err)
}

func wantSameIDs(t *testing.T, got []string, want []*mail.Message) {
	t.Helper()
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			t.Errorf("%s listed twice", id)
		}
		seen[id] = true
	}
	for _, m := range want {
		if !seen[m.ID] {
			t.Errorf("%s not listed", m.ID)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d listed, want %d", len(got), len(want))
	}
}
