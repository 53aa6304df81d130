package web

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/store"
)

func TestMailboxes(t *testing.T) {
	f := newFixture(t, fixtureOpts{})

	rec := f.get(t, "/api/v1/mailboxes")
	var empty map[string]any
	decode(t, rec, http.StatusOK, &empty)
	if got := strings.TrimSpace(rec.Body.String()); got != `{"mailboxes":[]}` {
		t.Fatalf("empty listing = %s, want an empty array (not null)", got)
	}

	f.reader.deliver("s@example.org", []string{"B@Example.com", "a@example.com"}, simpleMessage(1), baseTime)
	f.reader.deliver("s@example.org", []string{"b@example.com"}, simpleMessage(2), baseTime.Add(time.Minute))

	var got struct{ Mailboxes []store.Mailbox }
	decode(t, f.get(t, "/api/v1/mailboxes"), http.StatusOK, &got)
	want := []store.Mailbox{
		{Address: "a@example.com", Messages: 1, LatestAt: baseTime},
		{Address: "b@example.com", Messages: 2, LatestAt: baseTime.Add(time.Minute)},
	}
	if len(got.Mailboxes) != len(want) {
		t.Fatalf("mailboxes = %+v, want %+v", got.Mailboxes, want)
	}
	for i := range want {
		g := got.Mailboxes[i]
		if g.Address != want[i].Address || g.Messages != want[i].Messages || !g.LatestAt.Equal(want[i].LatestAt) {
			t.Errorf("mailbox %d = %+v, want %+v", i, g, want[i])
		}
	}
}

func TestMessagesPaginationNewestFirst(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	// Two messages share a StoredAt so that the ID tie-break is exercised.
	stored := []time.Time{baseTime, baseTime.Add(3 * time.Second), baseTime.Add(time.Second),
		baseTime.Add(time.Second), baseTime.Add(5 * time.Second), baseTime.Add(2 * time.Second), baseTime.Add(4 * time.Second)}
	type key struct {
		at time.Time
		id string
	}
	var want []key
	for i, at := range stored {
		m := f.reader.deliver("s@example.org", []string{"a@example.com"}, simpleMessage(i), at)
		want = append(want, key{at, m.ID})
	}
	f.reader.deliver("s@example.org", []string{"other@example.com"}, simpleMessage(99), baseTime.Add(time.Hour))
	slices.SortFunc(want, func(a, b key) int { return newer(a.at, a.id, b.at, b.id) })

	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > len(stored) {
			t.Fatal("pagination does not end")
		}
		target := "/api/v1/mailboxes/a@example.com/messages?limit=3"
		if cursor != "" {
			target += "&cursor=" + cursor
		}
		rec := f.get(t, target)
		var page store.MessagePage
		decode(t, rec, http.StatusOK, &page)
		if len(page.Messages) > 3 {
			t.Fatalf("page has %d messages, limit was 3", len(page.Messages))
		}
		for _, s := range page.Messages {
			got = append(got, s.ID)
			if !strings.HasPrefix(s.Subject, "message ") || s.From == "" || s.Size == 0 || s.StoredAt.IsZero() {
				t.Errorf("summary lacks fields: %+v", s)
			}
		}
		if page.NextCursor == "" {
			if strings.Contains(rec.Body.String(), "next_cursor") {
				t.Errorf("last page carries an empty next_cursor: %s", rec.Body)
			}
			break
		}
		cursor = page.NextCursor
	}
	var wantIDs []string
	for _, k := range want {
		wantIDs = append(wantIDs, k.id)
	}
	if !slices.Equal(got, wantIDs) {
		t.Fatalf("walked ids = %v, want newest first %v", got, wantIDs)
	}
}

func TestMessagesDefaultAndMaxLimit(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	const n = store.DefaultPageLimit + 5
	for i := range n {
		f.reader.deliver("s@example.org", []string{"a@example.com"}, simpleMessage(i), baseTime.Add(time.Duration(i)*time.Second))
	}
	var page store.MessagePage
	decode(t, f.get(t, "/api/v1/mailboxes/a@example.com/messages"), http.StatusOK, &page)
	if len(page.Messages) != store.DefaultPageLimit || page.NextCursor == "" {
		t.Fatalf("default page: %d messages, next_cursor %q; want %d and a cursor", len(page.Messages), page.NextCursor, store.DefaultPageLimit)
	}
	if !page.Messages[0].StoredAt.Equal(baseTime.Add((n - 1) * time.Second)) {
		t.Errorf("first message stored at %s, want the newest", page.Messages[0].StoredAt)
	}
	page = store.MessagePage{}
	decode(t, f.get(t, "/api/v1/mailboxes/a@example.com/messages?limit="+strconv.Itoa(store.MaxPageLimit)), http.StatusOK, &page)
	if len(page.Messages) != n || page.NextCursor != "" {
		t.Fatalf("max page: %d messages, next_cursor %q; want all %d and none", len(page.Messages), page.NextCursor, n)
	}
}

func TestMessagesBadRequests(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.reader.deliver("s@example.org", []string{"a@example.com"}, simpleMessage(1), baseTime)
	limitMsg := fmt.Sprintf("limit: must be an integer between 1 and %d", store.MaxPageLimit)
	for _, limit := range []string{"0", "-1", "abc", "1.5", "%20", strconv.Itoa(store.MaxPageLimit + 1), "99999999999999999999"} {
		t.Run("limit="+limit, func(t *testing.T) {
			wantError(t, f.get(t, "/api/v1/mailboxes/a@example.com/messages?limit="+limit), http.StatusBadRequest, limitMsg)
		})
	}
	t.Run("bad cursor", func(t *testing.T) {
		wantError(t, f.get(t, "/api/v1/mailboxes/a@example.com/messages?cursor=!!not-a-cursor"),
			http.StatusBadRequest, "cursor: not a cursor this server issued")
	})
	t.Run("foreign cursor", func(t *testing.T) {
		c := base64.RawURLEncoding.EncodeToString([]byte("garbage"))
		wantError(t, f.get(t, "/api/v1/mailboxes/a@example.com/messages?cursor="+c),
			http.StatusBadRequest, "cursor: not a cursor this server issued")
	})
}

func TestMessagesMailboxLookup(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	m := f.reader.deliver("s@example.org", []string{"A@Example.com"}, simpleMessage(1), baseTime)

	wantError(t, f.get(t, "/api/v1/mailboxes/nobody@example.com/messages"), http.StatusNotFound, "mailbox not found")
	// Addresses are case-insensitive and may arrive percent-encoded.
	for _, path := range []string{"a@example.com", "A@EXAMPLE.COM", "a%40example.com"} {
		var page store.MessagePage
		decode(t, f.get(t, "/api/v1/mailboxes/"+path+"/messages"), http.StatusOK, &page)
		if len(page.Messages) != 1 || page.Messages[0].ID != m.ID {
			t.Errorf("%s: messages = %+v, want [%s]", path, page.Messages, m.ID)
		}
	}
}

// withAttachment is a multipart message whose attachment content must never
// appear in the message JSON.
const attachmentSecret = "ATTACHMENT-CONTENT-NOT-FOR-JSON"

func withAttachment() []byte {
	enc := base64.StdEncoding.EncodeToString([]byte(attachmentSecret))
	return []byte("From: Sender <s@example.org>\r\nTo: a@example.com\r\nSubject: report\r\n" +
		"Message-ID: <att@example.org>\r\nDate: Mon, 24 Nov 2025 09:00:00 +0000\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		enc + "\r\n--b1--\r\n")
}

func TestMessage(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	m := f.reader.deliver("s@example.org", []string{"a@example.com"}, withAttachment(), baseTime)

	rec := f.get(t, "/api/v1/messages/"+m.ID)
	var got map[string]any
	decode(t, rec, http.StatusOK, &got)
	if got["id"] != m.ID || got["size"] != float64(m.Size) {
		t.Errorf("id/size = %v/%v, want %s/%d", got["id"], got["size"], m.ID, m.Size)
	}
	if _, ok := got["raw"]; ok {
		t.Error("message JSON carries the raw bytes")
	}
	env, _ := got["envelope"].(map[string]any)
	if env["from"] != "s@example.org" {
		t.Errorf("envelope = %v", env)
	}
	parsed, _ := got["parsed"].(map[string]any)
	if parsed["subject"] != "report" || !strings.Contains(fmt.Sprint(parsed["text"]), "see attached") {
		t.Errorf("parsed = %v", parsed)
	}
	atts, _ := parsed["attachments"].([]any)
	if len(atts) != 1 {
		t.Fatalf("attachments = %v, want one", parsed["attachments"])
	}
	att := atts[0].(map[string]any)
	if att["filename"] != "data.bin" || att["size"] != float64(len(attachmentSecret)) || att["content_type"] != "application/octet-stream" {
		t.Errorf("attachment metadata = %v", att)
	}
	body := rec.Body.String()
	if strings.Contains(body, attachmentSecret) || strings.Contains(body, base64.StdEncoding.EncodeToString([]byte(attachmentSecret))) {
		t.Errorf("message JSON carries attachment content: %s", body)
	}

	wantError(t, f.get(t, "/api/v1/messages/0000000000000000000000000000000000000000"), http.StatusNotFound, "message not found")
}

func TestRawIsExactAndBinarySafe(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	raw := []byte("From: s@example.org\r\nTo: a@example.com\r\nSubject: binary\r\n\r\n")
	for b := range 256 {
		raw = append(raw, byte(b))
	}
	raw = append(raw, "\r\n.\r\n\n\r\x00 lone LF and CR\n"...)
	m := f.reader.deliver("s@example.org", []string{"a@example.com"}, raw, baseTime)

	rec := f.get(t, "/api/v1/messages/"+m.ID+"/raw")
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d; body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "message/rfc822" {
		t.Errorf("Content-Type = %q, want message/rfc822", ct)
	}
	if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(len(raw)) {
		t.Errorf("Content-Length = %q, want %d", cl, len(raw))
	}
	if !bytes.Equal(rec.Body.Bytes(), raw) {
		t.Errorf("raw body differs from the stored bytes (%d vs %d bytes)", rec.Body.Len(), len(raw))
	}

	wantError(t, f.get(t, "/api/v1/messages/nope/raw"), http.StatusNotFound, "message not found")
}

func TestStoreFailureIsGeneric500(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	m := f.reader.deliver("s@example.org", []string{"a@example.com"}, simpleMessage(1), baseTime)
	secret := "disk I/O error at /var/lib/secret-path"
	f.reader.setFail(errors.New(secret))

	for _, target := range []string{
		"/api/v1/mailboxes",
		"/api/v1/mailboxes/a@example.com/messages",
		"/api/v1/messages/" + m.ID,
		"/api/v1/messages/" + m.ID + "/raw",
	} {
		rec := f.get(t, target)
		wantError(t, rec, http.StatusInternalServerError, "internal server error")
		if strings.Contains(rec.Body.String(), "secret") {
			t.Errorf("%s: response leaks the internal error: %s", target, rec.Body)
		}
	}
	if n := strings.Count(f.logs.String(), secret); n != 4 {
		t.Errorf("internal error logged %d times, want 4; logs:\n%s", n, f.logs)
	}
}

func TestRouting(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, target := range []string{"/nope", "/api/v1", "/api/v1/messages/", "/api/v1/mailboxes/a@example.com", "/api/v2/mailboxes"} {
		wantError(t, f.get(t, target), http.StatusNotFound, "not found")
	}
	for _, tc := range []struct{ method, target string }{
		{http.MethodPost, "/api/v1/mailboxes"},
		{http.MethodDelete, "/api/v1/messages/abc"},
		{http.MethodPut, "/api/v1/messages/abc/raw"},
		{http.MethodPost, "/healthz"},
	} {
		rec := f.do(t, tc.method, tc.target)
		wantError(t, rec, http.StatusMethodNotAllowed, "method not allowed")
		if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "GET") {
			t.Errorf("%s %s: Allow = %q, want GET listed", tc.method, tc.target, allow)
		}
	}
	if got := f.get(t, "/nope").Header().Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q", got)
	}

	var index struct {
		Service   string
		Endpoints []string
	}
	decode(t, f.get(t, "/"), http.StatusOK, &index)
	for _, want := range []string{"GET /api/v1/mailboxes", "GET /api/v1/messages/{id}/raw", "GET /readyz", "GET /metrics"} {
		if !slices.Contains(index.Endpoints, want) {
			t.Errorf("index lacks %q: %v", want, index.Endpoints)
		}
	}
}
