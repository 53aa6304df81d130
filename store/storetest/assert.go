package storetest

import (
	"bytes"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

func deliver(t *testing.T, s store.Store, msgs ...*mail.Message) []store.DeliveryResult {
	t.Helper()
	res, err := s.Deliver(t.Context(), msgs)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(res) != len(msgs) {
		t.Fatalf("Deliver returned %d results for %d messages", len(res), len(msgs))
	}
	for i, r := range res {
		if r.ID != msgs[i].ID {
			t.Fatalf("result %d has ID %q, want %q (results follow the input order)", i, r.ID, msgs[i].ID)
		}
	}
	return res
}

func wantDuplicates(t *testing.T, res []store.DeliveryResult, want ...bool) {
	t.Helper()
	for i, r := range res {
		if r.Duplicate != want[i] {
			t.Errorf("result %d (%s): Duplicate = %v, want %v", i, r.ID, r.Duplicate, want[i])
		}
	}
}

func getMessage(t *testing.T, s store.Store, id string) *mail.Message {
	t.Helper()
	m, err := s.Message(t.Context(), id)
	if err != nil {
		t.Fatalf("Message(%s): %v", id, err)
	}
	return m
}

func wantRaw(t *testing.T, s store.Store, id string, want []byte) {
	t.Helper()
	got, err := s.Raw(t.Context(), id)
	if err != nil {
		t.Fatalf("Raw(%s): %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Raw(%s): %d bytes differ from the %d delivered", id, len(got), len(want))
	}
}

func page(t *testing.T, s store.Store, address string, p store.Page) store.MessagePage {
	t.Helper()
	mp, err := s.Messages(t.Context(), address, p)
	if err != nil {
		t.Fatalf("Messages(%s, %+v): %v", address, p, err)
	}
	return mp
}

// allPages walks a mailbox with the given limit and checks the page shapes.
func allPages(t *testing.T, s store.Store, address string, limit int) []store.Summary {
	t.Helper()
	var all []store.Summary
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatalf("Messages(%s): pagination does not end", address)
		}
		mp := page(t, s, address, store.Page{Limit: limit, Cursor: cursor})
		all = append(all, mp.Messages...)
		if mp.NextCursor == "" {
			return all
		}
		if len(mp.Messages) != limit {
			t.Fatalf("Messages(%s): page %d has %d summaries and a next cursor, want full pages of %d", address, pages, len(mp.Messages), limit)
		}
		cursor = mp.NextCursor
	}
}

func wantNewestFirst(t *testing.T, list []store.Summary) {
	t.Helper()
	for i := 1; i < len(list); i++ {
		prev, cur := list[i-1], list[i]
		if !(prev.StoredAt.After(cur.StoredAt) || prev.StoredAt.Equal(cur.StoredAt) && prev.ID > cur.ID) {
			t.Fatalf("summaries %d and %d out of order: (%v, %s) then (%v, %s); want StoredAt, then ID, descending",
				i-1, i, prev.StoredAt, prev.ID, cur.StoredAt, cur.ID)
		}
	}
}

func ids(list []store.Summary) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = s.ID
	}
	return out
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: err = %v, want store.ErrNotFound", what, err)
	}
}

// wantMessage compares what Message returned with what was delivered.
func wantMessage(t *testing.T, got, want *mail.Message) {
	t.Helper()
	if got.ID != want.ID {
		t.Errorf("ID = %q, want %q", got.ID, want.ID)
	}
	ge, we := got.Envelope, want.Envelope
	if ge.From != we.From || !slices.Equal(ge.To, we.To) || ge.RemoteAddr != we.RemoteAddr || ge.Helo != we.Helo {
		t.Errorf("Envelope = %+v, want %+v", ge, we)
	}
	if !ge.ReceivedAt.Equal(we.ReceivedAt) {
		t.Errorf("Envelope.ReceivedAt = %v, want %v", ge.ReceivedAt, we.ReceivedAt)
	}
	if got.Size != int64(len(want.Raw)) {
		t.Errorf("Size = %d, want %d", got.Size, len(want.Raw))
	}
	if got.Raw != nil {
		t.Errorf("Message returned %d Raw bytes, want none (Raw is read with Raw)", len(got.Raw))
	}
	if got.StoredAt.IsZero() {
		t.Errorf("StoredAt is zero")
	}
	if got.Parsed == nil {
		t.Fatalf("Parsed is nil")
	}
	gp, wp := got.Parsed, want.Parsed
	if gp.Subject != wp.Subject || gp.From != wp.From || gp.MessageID != wp.MessageID {
		t.Errorf("Subject/From/MessageID = %q/%q/%q, want %q/%q/%q", gp.Subject, gp.From, gp.MessageID, wp.Subject, wp.From, wp.MessageID)
	}
	if !gp.Date.Equal(wp.Date) {
		t.Errorf("Date = %v, want %v", gp.Date, wp.Date)
	}
	if gp.Text != wp.Text || gp.HTML != wp.HTML {
		t.Errorf("Text/HTML = %q/%q, want %q/%q", gp.Text, gp.HTML, wp.Text, wp.HTML)
	}
	if !maps.EqualFunc(gp.Headers, wp.Headers, slices.Equal) {
		t.Errorf("Headers = %q, want %q", gp.Headers, wp.Headers)
	}
	if !slices.Equal(gp.Warnings, wp.Warnings) {
		t.Errorf("Warnings = %q, want %q", gp.Warnings, wp.Warnings)
	}
	wantAttachments(t, gp.Attachments, wp.Attachments)
}

func wantAttachments(t *testing.T, got, want []mail.Attachment) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d attachments, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Filename != w.Filename || g.ContentType != w.ContentType || g.ContentID != w.ContentID || g.Size != w.Size {
			t.Errorf("attachment %d = %q %q %q size %d, want %q %q %q size %d",
				i, g.Filename, g.ContentType, g.ContentID, g.Size, w.Filename, w.ContentType, w.ContentID, w.Size)
		}
		if g.Content != nil {
			t.Errorf("attachment %d: Message returned content, want metadata only", i)
		}
	}
}

// wantSummary compares a listing entry with the stored message.
func wantSummary(t *testing.T, got store.Summary, want *mail.Message, storedAt time.Time) {
	t.Helper()
	p := want.Parsed
	if got.ID != want.ID || got.From != p.From || got.Subject != p.Subject || got.MessageID != p.MessageID ||
		got.Size != int64(len(want.Raw)) || got.Attachments != len(p.Attachments) {
		t.Errorf("summary = %+v, want ID %s From %q Subject %q MessageID %q Size %d Attachments %d",
			got, want.ID, p.From, p.Subject, p.MessageID, len(want.Raw), len(p.Attachments))
	}
	if !got.Date.Equal(p.Date) || !got.ReceivedAt.Equal(want.Envelope.ReceivedAt) || !got.StoredAt.Equal(storedAt) {
		t.Errorf("summary times Date %v ReceivedAt %v StoredAt %v, want %v %v %v",
			got.Date, got.ReceivedAt, got.StoredAt, p.Date, want.Envelope.ReceivedAt, storedAt)
	}
}

// sameOrSanitized accepts text stored exactly or in the form a backend that
// cannot keep invalid UTF-8 or NUL bytes stores it (see the package doc).
func sameOrSanitized(got, want string) bool {
	return got == want ||
		got == strings.ToValidUTF8(want, "\uFFFD") ||
		got == strings.ToValidUTF8(strings.ReplaceAll(want, "\x00", ""), "\uFFFD")
}
