package storetest

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// A null sender, no headers at all, no date, no attachments, no receive
// time and raw bytes that are not text: all kept as they are.
func testSparseMessage(t *testing.T, s store.Store) {
	raw := []byte("\x00\xff\xfe not mail \x80\r\n\xc3\x28")
	for b := range 256 {
		raw = append(raw, byte(b))
	}
	m := handBuilt("sparse-0001", raw, &mail.Parsed{}, "Null@Example.com")
	m.Envelope = mail.Envelope{To: []string{"Null@Example.com"}}
	wantDuplicates(t, deliver(t, s, m), false)

	got := getMessage(t, s, m.ID)
	wantMessage(t, got, m)
	if !got.Parsed.Date.IsZero() || !got.Envelope.ReceivedAt.IsZero() {
		t.Errorf("Date %v, ReceivedAt %v: want zero times back", got.Parsed.Date, got.Envelope.ReceivedAt)
	}
	wantRaw(t, s, m.ID, raw)
	list := allPages(t, s, "null@example.com", 10)
	if len(list) != 1 {
		t.Fatalf("null@example.com lists %d messages, want 1", len(list))
	}
	wantSummary(t, list[0], m, got.StoredAt)
}

// Messy mail is stored, never rejected: parsed text with invalid UTF-8 and
// NUL bytes must not fail the batch it is in.
func testMessyText(t *testing.T, s store.Store) {
	p := &mail.Parsed{
		Headers:  map[string][]string{"Subject": {"Caf\xe9 \x00menu"}, "X-Bin": {"\xff"}},
		Subject:  "Caf\xe9 \x00menu",
		From:     "J\xfcrgen <j@sender.example>",
		Text:     "line\x00one \xe9",
		HTML:     "<p>\xe9</p>",
		Warnings: []string{"charset \xe9 unknown"},
		Attachments: []mail.Attachment{
			{Filename: "r\xe9sum\xe9.txt", ContentType: "text/plain", Size: 3, Content: []byte("\x00\xff\x01")},
		},
	}
	m := handBuilt("messy-0001", []byte("Subject: Caf\xe9 \x00menu\r\n\r\nline\x00one \xe9\r\n"), p, "bob@example.com")
	other := simple(t, 1, "bob@example.com")
	wantDuplicates(t, deliver(t, s, m, other), false, false)

	wantRaw(t, s, m.ID, m.Raw)
	got := getMessage(t, s, m.ID).Parsed
	for _, f := range []struct{ name, got, want string }{
		{"Subject", got.Subject, p.Subject},
		{"From", got.From, p.From},
		{"Text", got.Text, p.Text},
		{"HTML", got.HTML, p.HTML},
		{"Subject header", strings.Join(got.Headers["Subject"], ""), p.Subject},
		{"X-Bin header", strings.Join(got.Headers["X-Bin"], ""), "\xff"},
		{"Warnings", strings.Join(got.Warnings, ""), p.Warnings[0]},
	} {
		if !sameOrSanitized(f.got, f.want) {
			t.Errorf("%s = %q, want %q or its sanitized form", f.name, f.got, f.want)
		}
	}
	if len(got.Attachments) != 1 || got.Attachments[0].Size != 3 || !sameOrSanitized(got.Attachments[0].Filename, p.Attachments[0].Filename) {
		t.Errorf("Attachments = %+v, want the one with its name kept", got.Attachments)
	}
	wantMessage(t, getMessage(t, s, other.ID), other)
}

func testLargeRaw(t *testing.T, s store.Store) {
	const size = 5 << 20
	raw := make([]byte, 0, size)
	raw = append(raw, "Subject: large\r\n\r\n"...)
	rng := rand.New(rand.NewChaCha8([32]byte{'l', 'e', 'v', 'e', 'e'}))
	body := make([]byte, size-len(raw))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	raw = append(raw, body...)
	m := handBuilt("large-0001", raw, &mail.Parsed{Subject: "large", Headers: map[string][]string{"Subject": {"large"}}}, "big@example.com")
	deliver(t, s, m)

	got, err := s.Raw(t.Context(), m.ID)
	if err != nil {
		t.Fatalf("Raw: %v", err)
	}
	if !bytes.Equal(got, raw) {
		t.Fatalf("Raw: %d bytes back, differ from the %d delivered", len(got), len(raw))
	}
	if msg := getMessage(t, s, m.ID); msg.Size != size {
		t.Errorf("Size = %d, want %d", msg.Size, size)
	}
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	stored := simple(t, 1, "bob@example.com")
	deliver(t, s, stored)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m := simple(t, 2, "bob@example.com")
	_, err := s.Deliver(ctx, []*mail.Message{m})
	wantCanceled(t, "Deliver", err)
	_, err = s.Raw(t.Context(), m.ID)
	wantNotFound(t, "Raw of a message whose Deliver was cancelled", err)

	_, err = s.Mailboxes(ctx)
	wantCanceled(t, "Mailboxes", err)
	_, err = s.Messages(ctx, "bob@example.com", store.Page{})
	wantCanceled(t, "Messages", err)
	_, err = s.Message(ctx, stored.ID)
	wantCanceled(t, "Message", err)
	_, err = s.Raw(ctx, stored.ID)
	wantCanceled(t, "Raw", err)
	wantCanceled(t, "Ping", s.Ping(ctx))

	// An expired deadline is a context error too, not "not found".
	dctx, dcancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer dcancel()
	_, err = s.Message(dctx, stored.ID)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Message with an expired deadline: err = %v, want context.DeadlineExceeded", err)
	}
	// The store still works afterwards.
	wantMessage(t, getMessage(t, s, stored.ID), stored)
}

func wantCanceled(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("%s with a cancelled context: err = %v, want context.Canceled", what, err)
	}
}
