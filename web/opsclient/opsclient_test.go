package opsclient

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/admin"
)

// TestAPIErrorsComeBackAsTheSentinels: an error answer's reason gives the
// admin package's sentinel back, so that a caller over HTTP tells a refused
// change from a missing dead letter as it does in process; an answer
// without a reason matches none.
func TestAPIErrorsComeBackAsTheSentinels(t *testing.T) {
	var answer struct {
		status int
		body   any
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("Authorization %q", r.Header.Get("Authorization"))
		}
		w.WriteHeader(answer.status)
		_ = json.NewEncoder(w).Encode(answer.body)
	}))
	defer srv.Close()
	c, err := HTTP(srv.URL, "tok")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, want := range []error{admin.ErrWouldDelete, admin.ErrWouldBounce, admin.ErrBusy, admin.ErrInvalidLimit,
		admin.ErrNotFound, queue.ErrTooLarge, queue.ErrMalformed, queue.ErrQueueFull} {
		answer.status, answer.body = 409, map[string]string{"error": "refused", "reason": admin.Reason(want)}
		_, err := c.UpdateLimits(context.Background(), admin.LimitsChange{MaxMsgs: 1})
		var apiErr *APIError
		if !errors.Is(err, want) || !errors.As(err, &apiErr) || apiErr.Status != 409 || apiErr.Msg != "refused" {
			t.Errorf("reason %q: %v, want %v", admin.Reason(want), err, want)
		}
	}
	answer.status, answer.body = 503, map[string]string{"error": "queue limits unavailable"}
	_, err = c.Limits(context.Background())
	if err == nil || errors.Is(err, admin.ErrBusy) || errors.Is(err, admin.ErrNotFound) || errors.Is(err, queue.ErrQueueFull) {
		t.Errorf("an error without a reason: %v", err)
	}
}

func TestHTTPNeedsAnHTTPURL(t *testing.T) {
	for _, bad := range []string{"127.0.0.1:8025", "nats://127.0.0.1:4222", "http://", ":"} {
		if _, err := HTTP(bad, ""); err == nil {
			t.Errorf("HTTP(%q) accepted", bad)
		}
	}
}
