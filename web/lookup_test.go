package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
		req := httptest.NewRequest(method, path, strings.NewReader(body))
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
