package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/store"
)

func TestLookupByMessageID(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	reader := f.reader
	raw := []byte("From: a@x.test\r\nSubject: hi\r\nMessage-ID: <one@x.test>\r\n\r\nbody\r\n")
	now := time.Now()
	first := reader.deliver("a@x.test", []string{"r@example.test"}, raw, now)
	reader.deliver("b@x.test", []string{"r@example.test"}, raw, now.Add(time.Second)) // same header, other envelope

	do := func(method, path, body string) (int, []byte) {
		req := newRequest(method, path, strings.NewReader(body))
		rec := httptest.NewRecorder()
		f.srv.Handler().ServeHTTP(rec, req)
		return rec.Code, rec.Body.Bytes()
	}

	code, body := do("GET", "/api/v1/messages?message_id=%3Cone@x.test%3E", "")
	var one struct {
		Messages []store.Summary `json:"messages"`
	}
	if code != 200 || json.Unmarshal(body, &one) != nil || len(one.Messages) != 2 {
		t.Fatalf("GET by message_id: %d %s", code, body)
	}
	if code, _ := do("GET", "/api/v1/messages", ""); code != http.StatusBadRequest {
		t.Fatalf("GET without message_id: %d, want 400", code)
	}
	code, body = do("GET", "/api/v1/messages?message_id=none@x.test", "")
	if code != 200 || !strings.Contains(string(body), `"messages":[]`) {
		t.Fatalf("GET unknown message_id: %d %s", code, body)
	}

	code, body = do("POST", "/api/v1/messages/lookup", `{"message_ids":["one@x.test","<none@x.test>"]}`)
	var resp lookupResponse
	if code != 200 || json.Unmarshal(body, &resp) != nil {
		t.Fatalf("POST lookup: %d %s", code, body)
	}
	if len(resp.Found["one@x.test"]) != 2 || resp.Found["one@x.test"][0].ID == "" {
		t.Fatalf("lookup result %+v", resp)
	}
	if _, ok := resp.Found["none@x.test"]; ok {
		t.Fatal("unknown id reported found")
	}
	found := false
	for _, sum := range resp.Found["one@x.test"] {
		found = found || sum.ID == first.ID
	}
	if !found {
		t.Fatal("lookup lacks the first message")
	}

	tooMany := `{"message_ids":[` + strings.Repeat(`"x",`, store.MaxLookup) + `"x"]}`
	if code, _ := do("POST", "/api/v1/messages/lookup", tooMany); code != http.StatusBadRequest {
		t.Fatalf("lookup of %d ids: %d, want 400", store.MaxLookup+1, code)
	}
	if code, _ := do("POST", "/api/v1/messages/lookup", `{"ids":[]}`); code != http.StatusBadRequest {
		t.Fatalf("lookup with unknown field: %d, want 400", code)
	}
	if code, _ := do("POST", "/api/v1/messages/lookup", `{"message_ids":["`+strings.Repeat("a", 2<<20)+`"]}`); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("lookup with a 2 MiB body: %d, want 413", code)
	}
}

// TestREADMEShowsTheLookupBody: the README's example of POST
// /api/v1/messages/lookup has a body, and this server answers it as the
// README says: the stored id under "found", the missing one absent.
func TestREADMEShowsTheLookupBody(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)-X POST \S*/api/v1/messages/lookup.*?-d '([^']+)'.*?# (\{"found".*?)\n`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README shows no request body for POST /api/v1/messages/lookup (curl -X POST ... -d '{...}' followed by '# {\"found\": ...}')")
	}
	body, answer := string(m[1]), string(m[2])
	var req lookupRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil || len(req.MessageIDs) < 2 {
		t.Fatalf("README's body %s: %v, want two or more message_ids", body, err)
	}
	f := newFixture(t, fixtureOpts{})
	stored := req.MessageIDs[0]
	raw := []byte("From: a@x.test\r\nSubject: hi\r\nMessage-ID: " + stored + "\r\n\r\nbody\r\n")
	f.reader.deliver("a@x.test", []string{"r@example.test"}, raw, time.Now())
	httpReq := newRequest(http.MethodPost, "/api/v1/messages/lookup", strings.NewReader(body))
	httpReq.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, httpReq)
	var resp lookupResponse
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &resp) != nil {
		t.Fatalf("README's request: %d %s", rec.Code, rec.Body)
	}
	key := strings.Trim(stored, "<>")
	if len(resp.Found) != 1 || len(resp.Found[key]) != 1 {
		t.Fatalf("README's request found %+v, want only %s", resp.Found, key)
	}
	if !strings.Contains(answer, `"`+key+`"`) {
		t.Errorf("README's answer %s does not show the found id %q as the key", answer, key)
	}
}
