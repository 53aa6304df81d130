package web

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// memReader is an in-memory MailReader that keeps the store.Store contract
// (case-folded mailboxes, newest first by StoredAt then ID, opaque cursors,
// ErrNotFound / ErrInvalid), plus a switch to fail on demand, which a real
// store cannot do.
type memReader struct {
	mu    sync.Mutex
	msgs  map[string]*mail.Message
	boxes map[string][]string // address -> ids
	fail  error
}

func newMemReader() *memReader {
	return &memReader{msgs: map[string]*mail.Message{}, boxes: map[string][]string{}}
}

// deliver stores raw for the recipients, parsed, at storedAt.
func (m *memReader) deliver(from string, to []string, raw []byte, storedAt time.Time) *mail.Message {
	p, err := mail.Parse(raw, mail.DefaultParseLimits)
	if err != nil {
		panic(err)
	}
	msg := &mail.Message{
		ID:       mail.ID(from, to, raw),
		Envelope: mail.Envelope{From: from, To: to, ReceivedAt: storedAt.Add(-time.Second)},
		Raw:      raw,
		Size:     int64(len(raw)),
		Parsed:   p,
		StoredAt: storedAt,
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.msgs[msg.ID]; ok {
		return msg
	}
	m.msgs[msg.ID] = msg
	for _, rcpt := range to {
		a := strings.ToLower(rcpt)
		m.boxes[a] = append(m.boxes[a], msg.ID)
	}
	return msg
}

func (m *memReader) setFail(err error) {
	m.mu.Lock()
	m.fail = err
	m.mu.Unlock()
}

func (m *memReader) Mailboxes(ctx context.Context) ([]store.Mailbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	var out []store.Mailbox
	for a, ids := range m.boxes {
		mb := store.Mailbox{Address: a, Messages: int64(len(ids))}
		for _, id := range ids {
			if t := m.msgs[id].StoredAt; t.After(mb.LatestAt) {
				mb.LatestAt = t
			}
		}
		out = append(out, mb)
	}
	slices.SortFunc(out, func(a, b store.Mailbox) int { return strings.Compare(a.Address, b.Address) })
	return out, nil
}

func encodeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixNano(), 10) + "|" + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("cursor: %w", store.ErrInvalid)
	}
	ns, id, ok := strings.Cut(string(b), "|")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil {
		return time.Time{}, "", fmt.Errorf("cursor: %w", store.ErrInvalid)
	}
	return time.Unix(0, n), id, nil
}

// newer orders newest first: StoredAt descending, then ID descending.
func newer(at time.Time, id string, bt time.Time, bid string) int {
	if c := bt.Compare(at); c != 0 {
		return c
	}
	return cmp.Compare(bid, id)
}

func (m *memReader) Messages(ctx context.Context, address string, page store.Page) (store.MessagePage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return store.MessagePage{}, m.fail
	}
	ids, ok := m.boxes[strings.ToLower(address)]
	if !ok {
		return store.MessagePage{}, fmt.Errorf("mailbox %q: %w", address, store.ErrNotFound)
	}
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, func(a, b string) int {
		return newer(m.msgs[a].StoredAt, a, m.msgs[b].StoredAt, b)
	})
	start := 0
	if page.Cursor != "" {
		at, id, err := decodeCursor(page.Cursor)
		if err != nil {
			return store.MessagePage{}, err
		}
		start = len(sorted)
		for i, s := range sorted {
			if newer(at, id, m.msgs[s].StoredAt, s) < 0 { // s comes after the cursor
				start = i
				break
			}
		}
	}
	limit := page.EffectiveLimit()
	var out store.MessagePage
	for _, id := range sorted[start:min(start+limit, len(sorted))] {
		msg := m.msgs[id]
		out.Messages = append(out.Messages, store.Summary{
			ID: id, From: msg.Parsed.From, Subject: msg.Parsed.Subject, Date: msg.Parsed.Date,
			MessageID: msg.Parsed.MessageID, Size: msg.Size, Attachments: len(msg.Parsed.Attachments),
			ReceivedAt: msg.Envelope.ReceivedAt, StoredAt: msg.StoredAt,
		})
	}
	if start+limit < len(sorted) {
		last := out.Messages[len(out.Messages)-1]
		out.NextCursor = encodeCursor(last.StoredAt, last.ID)
	}
	return out, nil
}

func (m *memReader) Message(ctx context.Context, id string) (*mail.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	msg, ok := m.msgs[id]
	if !ok {
		return nil, fmt.Errorf("message %q: %w", id, store.ErrNotFound)
	}
	// As the contract says: Parsed with attachment metadata only, no Raw.
	cp := *msg
	cp.Raw = nil
	p := *msg.Parsed
	p.Attachments = slices.Clone(p.Attachments)
	for i := range p.Attachments {
		p.Attachments[i].Content = nil
	}
	cp.Parsed = &p
	return &cp, nil
}

func (m *memReader) Raw(ctx context.Context, id string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	msg, ok := m.msgs[id]
	if !ok {
		return nil, fmt.Errorf("message %q: %w", id, store.ErrNotFound)
	}
	return slices.Clone(msg.Raw), nil
}

func (m *memReader) FindByMessageID(ctx context.Context, ids []string) (map[string][]store.Summary, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return nil, m.fail
	}
	if len(ids) > store.MaxLookup {
		return nil, fmt.Errorf("%d ids: %w", len(ids), store.ErrInvalid)
	}
	out := map[string][]store.Summary{}
	for _, want := range ids {
		for _, msg := range m.msgs {
			if msg.Parsed.MessageID == want {
				out[want] = append(out[want], store.Summary{ID: msg.ID, MessageID: want, Subject: msg.Parsed.Subject,
					Size: msg.Size, ReceivedAt: msg.Envelope.ReceivedAt, StoredAt: msg.StoredAt})
			}
		}
	}
	return out, nil
}
