package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

func testDeliverStoresEverything(t *testing.T, s store.Store) {
	m := multipart(t, "bob@example.com")
	before := time.Now()
	res := deliver(t, s, m)
	after := time.Now()
	wantDuplicates(t, res, false)

	got := getMessage(t, s, m.ID)
	wantMessage(t, got, m)
	// Some slack for a database server's own clock and its precision.
	if got.StoredAt.Before(before.Add(-time.Second)) || got.StoredAt.After(after.Add(time.Second)) {
		t.Errorf("StoredAt = %v, want between %v and %v", got.StoredAt, before, after)
	}
	wantRaw(t, s, m.ID, m.Raw)

	mp := page(t, s, "bob@example.com", store.Page{})
	if len(mp.Messages) != 1 || mp.NextCursor != "" {
		t.Fatalf("Messages = %+v, want the one message and no next cursor", mp)
	}
	wantSummary(t, mp.Messages[0], m, got.StoredAt)
}

func testDeliverEmptyBatch(t *testing.T, s store.Store) {
	res, err := s.Deliver(t.Context(), nil)
	if err != nil || len(res) != 0 {
		t.Fatalf("Deliver(nil) = %v, %v; want no results and no error", res, err)
	}
	boxes, err := s.Mailboxes(t.Context())
	if err != nil || len(boxes) != 0 {
		t.Fatalf("Mailboxes after an empty batch = %v, %v; want none", boxes, err)
	}
}

func testDuplicateInOneCall(t *testing.T, s store.Store) {
	m := simple(t, 1, "bob@example.com")
	res := deliver(t, s, m, m)
	wantDuplicates(t, res, false, true)

	list := allPages(t, s, "bob@example.com", 10)
	if len(list) != 1 {
		t.Fatalf("mailbox lists %d messages, want 1", len(list))
	}
	wantMailboxes(t, s, store.Mailbox{Address: "bob@example.com", Messages: 1, LatestAt: list[0].StoredAt})
}

// A message retransmitted after a lost 250 has the same ID but another
// Received header: the first stored version stays, with its recipients.
func testDuplicateAcrossCalls(t *testing.T, s store.Store) {
	m := simple(t, 1, "bob@example.com")
	wantDuplicates(t, deliver(t, s, m), false)
	first := getMessage(t, s, m.ID)

	again := *m
	again.Raw = append([]byte("Received: from retransmission\r\n"), m.Raw...)
	again.Size = int64(len(again.Raw))
	again.Envelope.To = []string{"bob@example.com", "carol@example.com"}
	again.Envelope.ReceivedAt = m.Envelope.ReceivedAt.Add(time.Hour)
	wantDuplicates(t, deliver(t, s, &again), true)

	wantRaw(t, s, m.ID, m.Raw)
	got := getMessage(t, s, m.ID)
	wantMessage(t, got, m)
	if !got.StoredAt.Equal(first.StoredAt) {
		t.Errorf("StoredAt changed from %v to %v on a duplicate", first.StoredAt, got.StoredAt)
	}
	if n := len(allPages(t, s, "bob@example.com", 10)); n != 1 {
		t.Errorf("bob@example.com lists %d messages, want 1", n)
	}
	_, err := s.Messages(t.Context(), "carol@example.com", store.Page{})
	wantNotFound(t, "Messages(carol) after a duplicate naming her", err)
	wantMailboxes(t, s, store.Mailbox{Address: "bob@example.com", Messages: 1, LatestAt: first.StoredAt})
}

func testBatchWithOneDuplicate(t *testing.T, s store.Store) {
	old := simple(t, 1, "bob@example.com")
	deliver(t, s, old)
	a, b := simple(t, 2, "bob@example.com"), simple(t, 3, "carol@example.com")
	wantDuplicates(t, deliver(t, s, a, old, b), false, true, false)

	for _, m := range []*mail.Message{old, a, b} {
		wantMessage(t, getMessage(t, s, m.ID), m)
		wantRaw(t, s, m.ID, m.Raw)
	}
	if n := len(allPages(t, s, "bob@example.com", 10)); n != 2 {
		t.Errorf("bob@example.com lists %d messages, want 2", n)
	}
	if n := len(allPages(t, s, "carol@example.com", 10)); n != 1 {
		t.Errorf("carol@example.com lists %d messages, want 1", n)
	}
}

func testMultipleRecipients(t *testing.T, s store.Store) {
	to := []string{"Alice@Example.com", "bob@example.com", "ALICE@example.COM"}
	m := simple(t, 1, to...)
	wantDuplicates(t, deliver(t, s, m), false)

	got := getMessage(t, s, m.ID)
	wantMessage(t, got, m) // Envelope.To comes back as given
	for _, addr := range []string{"alice@example.com", "ALICE@EXAMPLE.COM", "bob@example.com"} {
		list := allPages(t, s, addr, 10)
		if len(list) != 1 || list[0].ID != m.ID {
			t.Errorf("Messages(%s) = %v, want [%s]", addr, ids(list), m.ID)
		}
	}
	wantMailboxes(t, s,
		store.Mailbox{Address: "alice@example.com", Messages: 1, LatestAt: got.StoredAt},
		store.Mailbox{Address: "bob@example.com", Messages: 1, LatestAt: got.StoredAt},
	)
}

func testInvalidBatch(t *testing.T, s store.Store) {
	good := simple(t, 1, "bob@example.com")
	noID := simple(t, 2, "bob@example.com")
	noID.ID = ""
	noParsed := simple(t, 3, "bob@example.com")
	noParsed.Parsed = nil
	for name, batch := range map[string][]*mail.Message{
		"nil message": {good, nil},
		"empty ID":    {good, noID},
		"nil Parsed":  {good, noParsed},
	} {
		_, err := s.Deliver(t.Context(), batch)
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: err = %v, want store.ErrInvalid", name, err)
		}
	}
	_, err := s.Raw(t.Context(), good.ID)
	wantNotFound(t, "Raw of the valid message in a rejected batch", err)
	wantMailboxes(t, s)
}
