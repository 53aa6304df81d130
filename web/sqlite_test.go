package web

import (
	"bytes"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/sqlite"
	"github.com/prometheus/client_golang/prometheus"
)

// These tests run the API against the real SQLite store: the fake above
// covers failure injection, this covers that the two agree.

func queued(t *testing.T, from string, to []string, raw []byte) *mail.Message {
	t.Helper()
	p, err := mail.Parse(raw, mail.DefaultParseLimits)
	if err != nil {
		t.Fatal(err)
	}
	return &mail.Message{
		ID:       mail.ID(from, to, raw),
		Envelope: mail.Envelope{From: from, To: to, ReceivedAt: time.Now().UTC()},
		Raw:      raw,
		Size:     int64(len(raw)),
		Parsed:   p,
	}
}

func TestAgainstSQLiteStore(t *testing.T) {
	ctx := t.Context()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "levee.db")})
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			st.Close()
		}
	})

	binary := []byte("From: s@example.org\r\nTo: a@example.com\r\nSubject: binary\r\n\r\n")
	for b := range 256 {
		binary = append(binary, byte(b))
	}
	msgs := []*mail.Message{
		queued(t, "s@example.org", []string{"A@Example.com"}, simpleMessage(1)),
		queued(t, "s@example.org", []string{"a@example.com", "b@example.com"}, simpleMessage(2)),
		queued(t, "s@example.org", []string{"a@example.com"}, withAttachment()),
		queued(t, "s@example.org", []string{"a@example.com"}, binary),
		queued(t, "s@example.org", []string{"a@example.com"}, simpleMessage(5)),
	}
	// One Deliver per message: the store orders by delivery.
	for _, m := range msgs {
		if _, err := st.Deliver(ctx, []*mail.Message{m}); err != nil {
			t.Fatalf("deliver: %v", err)
		}
	}

	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	srv, err := New(Config{}, Deps{Reader: st, Gatherer: reg, Ready: map[string]Check{"store": st.Ping}, Registerer: reg, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, reg: reg, logs: logs}

	var boxes struct{ Mailboxes []store.Mailbox }
	decode(t, f.get(t, "/api/v1/mailboxes"), http.StatusOK, &boxes)
	if len(boxes.Mailboxes) != 2 || boxes.Mailboxes[0].Address != "a@example.com" || boxes.Mailboxes[0].Messages != 5 ||
		boxes.Mailboxes[1].Address != "b@example.com" || boxes.Mailboxes[1].Messages != 1 {
		t.Fatalf("mailboxes = %+v", boxes.Mailboxes)
	}

	// Walk a@example.com two at a time: newest (last delivered) first.
	var got []string
	cursor := ""
	for range len(msgs) + 1 {
		target := "/api/v1/mailboxes/A@EXAMPLE.COM/messages?limit=2"
		if cursor != "" {
			target += "&cursor=" + cursor
		}
		var page store.MessagePage
		decode(t, f.get(t, target), http.StatusOK, &page)
		for _, s := range page.Messages {
			got = append(got, s.ID)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	var want []string
	for _, m := range slices.Backward(msgs) {
		want = append(want, m.ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages = %v, want %v", got, want)
	}

	wantError(t, f.get(t, "/api/v1/mailboxes/nobody@example.com/messages"), http.StatusNotFound, "mailbox not found")
	wantError(t, f.get(t, "/api/v1/mailboxes/a@example.com/messages?cursor=bogus"), http.StatusBadRequest,
		"cursor: not a cursor this server issued")
	wantError(t, f.get(t, "/api/v1/mailboxes/a@example.com/messages?limit=500"), http.StatusBadRequest,
		"limit: must be an integer between 1 and 200")

	rec := f.get(t, "/api/v1/messages/"+msgs[2].ID)
	var m struct {
		ID     string
		Parsed struct {
			Subject     string
			Attachments []mail.Attachment
		}
	}
	decode(t, rec, http.StatusOK, &m)
	if m.ID != msgs[2].ID || m.Parsed.Subject != "report" || len(m.Parsed.Attachments) != 1 ||
		m.Parsed.Attachments[0].Filename != "data.bin" || m.Parsed.Attachments[0].Size != int64(len(attachmentSecret)) {
		t.Errorf("message = %+v", m)
	}
	if strings.Contains(rec.Body.String(), attachmentSecret) {
		t.Error("message JSON carries attachment content")
	}
	wantError(t, f.get(t, "/api/v1/messages/"+strings.Repeat("0", 40)), http.StatusNotFound, "message not found")

	rec = f.get(t, "/api/v1/messages/"+msgs[3].ID+"/raw")
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), binary) || rec.Header().Get("Content-Type") != "message/rfc822" {
		t.Errorf("raw: %d %q, %d bytes (want %d, exact)", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len(), len(binary))
	}
	wantError(t, f.get(t, "/api/v1/messages/"+strings.Repeat("0", 40)+"/raw"), http.StatusNotFound, "message not found")

	decode(t, f.get(t, "/readyz"), http.StatusOK, &map[string]any{})

	// A closed store: readiness fails, reads are a generic 500.
	closed = true
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var ready struct{ Error string }
	decode(t, f.get(t, "/readyz"), http.StatusServiceUnavailable, &ready)
	if ready.Error != "not ready: store" {
		t.Errorf("readyz error = %q", ready.Error)
	}
	wantError(t, f.get(t, "/api/v1/mailboxes"), http.StatusInternalServerError, "internal server error")
	if !strings.Contains(logs.String(), "sqlite") {
		t.Errorf("the store error is not logged:\n%s", logs)
	}
}
