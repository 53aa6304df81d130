package web

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/admin"
)

// fakeOps records the limits it was asked to set and answers the other
// operations from its fields.
type fakeOps struct {
	QueueOps // not called unless set below
	got      []admin.LimitsChange
	limitErr error
	samples  []admin.Sample
	replayed []uint64
}

func (f *fakeOps) UpdateLimits(_ context.Context, l admin.LimitsChange) (admin.LimitsUpdate, error) {
	f.got = append(f.got, l)
	if f.limitErr != nil {
		return admin.LimitsUpdate{}, f.limitErr
	}
	return admin.LimitsUpdate{Limits: admin.StreamLimits{MaxMsgs: l.MaxMsgs}, Notes: []string{"a note"}}, nil
}

func (f *fakeOps) History(since time.Time) []admin.Sample {
	var out []admin.Sample
	for _, s := range f.samples {
		if s.At.After(since) {
			out = append(out, s)
		}
	}
	return out
}

func (f *fakeOps) SampleInterval() time.Duration { return 2 * time.Second }

func (f *fakeOps) Replay(_ context.Context, seq uint64) error {
	if seq == 404 {
		return fmt.Errorf("%w: no dead letter 404", admin.ErrNotFound)
	}
	f.replayed = append(f.replayed, seq)
	return nil
}

func (f *fakeOps) send(t *testing.T, srv *Server, method, target, token, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := newRequest(method, target, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	return rec
}

func TestOpsChangesNeedTheAdminToken(t *testing.T) {
	ops := &fakeOps{}
	off := newFixture(t, fixtureOpts{queue: ops})
	wantError(t, ops.send(t, off.srv, http.MethodPut, "/api/v1/queue/limits", "anything", `{"max_msgs":5}`), http.StatusForbidden,
		"changes over HTTP are disabled: set http.admin_token (LEVEE_HTTP_ADMIN_TOKEN) to enable them")
	on := newFixture(t, fixtureOpts{queue: ops, cfg: Config{AdminToken: "tok"}})
	for _, tok := range []string{"", "to", "tokk"} {
		rec := ops.send(t, on.srv, http.MethodPost, "/api/v1/dlq/7/replay", tok, "")
		wantError(t, rec, http.StatusUnauthorized, "admin token missing or wrong (Authorization: Bearer <http.admin_token>)")
		if rec.Header().Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
	}
	if len(ops.got) != 0 || len(ops.replayed) != 0 {
		t.Fatalf("a refused request reached the queue: %v %v", ops.got, ops.replayed)
	}
	var out map[string]int
	decode(t, ops.send(t, on.srv, http.MethodPost, "/api/v1/dlq/7/replay", "tok", ""), http.StatusOK, &out)
	if out["replayed"] != 1 || len(ops.replayed) != 1 || ops.replayed[0] != 7 {
		t.Errorf("replay: %v %v", out, ops.replayed)
	}
	wantReason(t, ops.send(t, on.srv, http.MethodPost, "/api/v1/dlq/404/replay", "tok", ""), http.StatusNotFound, "admin: not found: no dead letter 404", "not_found")
	wantError(t, ops.send(t, on.srv, http.MethodPost, "/api/v1/dlq/x/replay", "tok", ""), http.StatusBadRequest,
		"dead letter: want its sequence number (levee dlq list shows them)")
}

func TestOpsLimitsRequest(t *testing.T) {
	cases := []struct {
		body string
		code int
		want admin.LimitsChange // when 200
		msg  string             // when not
	}{
		{`{"max_msgs":5,"max_age":"48h","per_domain_max_msgs":0}`, 200, admin.LimitsChange{MaxMsgs: 5, MaxAge: 48 * time.Hour, PerDomainMaxMsgs: -1}, ""},
		{`{"max_bytes":1073741824,"per_domain_max_msgs":30,"force":true}`, 200, admin.LimitsChange{MaxBytes: 1 << 30, PerDomainMaxMsgs: 30, Force: true}, ""},
		{`{}`, 400, admin.LimitsChange{}, "no limit given: set one or more of max_msgs, max_bytes, max_age, max_msg_size, per_domain_max_msgs"},
		{`{"max_msgs":-1}`, 400, admin.LimitsChange{}, "max_msgs: must be > 0, got -1"},
		{`{"max_age":"soon"}`, 400, admin.LimitsChange{}, `max_age: want a positive duration like "48h", got "soon"`},
		{`{"per_domain_max_msgs":-2}`, 400, admin.LimitsChange{}, "per_domain_max_msgs: must be >= 0 (0 removes the cap), got -2"},
		{`{"max_mgs":5}`, 400, admin.LimitsChange{}, `body: want a JSON object of limits: json: unknown field "max_mgs"`},
		{`[1]`, 400, admin.LimitsChange{}, "body: want a JSON object of limits: json: cannot unmarshal array into Go value of type web.limitsRequest"},
	}
	for _, c := range cases {
		t.Run(c.body, func(t *testing.T) {
			ops := &fakeOps{}
			f := newFixture(t, fixtureOpts{queue: ops, cfg: Config{AdminToken: "tok"}})
			rec := ops.send(t, f.srv, http.MethodPut, "/api/v1/queue/limits", "tok", c.body)
			if c.code != 200 {
				wantReason(t, rec, c.code, c.msg, "invalid_limit")
				if len(ops.got) != 0 {
					t.Errorf("an invalid request reached the queue: %+v", ops.got)
				}
				return
			}
			var u admin.LimitsUpdate
			decode(t, rec, http.StatusOK, &u)
			if len(ops.got) != 1 || ops.got[0] != c.want || len(u.Notes) != 1 {
				t.Errorf("queue asked for %+v (answer %+v), want %+v", ops.got, u, c.want)
			}
		})
	}
}

// TestEveryOpsErrorHasAStatus: every error the admin package names by a
// reason has its place in opsErrors, so that none falls to a reasonless 503.
func TestEveryOpsErrorHasAStatus(t *testing.T) {
	for _, e := range opsErrors {
		if admin.Reason(e.err) == "" {
			t.Errorf("%v has a status but no reason", e.err)
		}
	}
	for _, reason := range []string{"invalid_limit", "would_delete", "would_bounce", "busy", "not_found", "queue_full", "too_large", "malformed"} {
		sentinel := admin.ErrorFor(reason)
		if sentinel == nil {
			t.Fatalf("admin knows no reason %q", reason)
		}
		found := false
		for _, e := range opsErrors {
			found = found || e.err == sentinel
		}
		if !found {
			t.Errorf("reason %q has no HTTP status in opsErrors", reason)
		}
	}
}

func TestOpsQueueErrorsMapToStatuses(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   int
		msg    string
		reason string
	}{
		{fmt.Errorf("%w: too small", admin.ErrInvalidLimit), 400, "admin: invalid limit: too small", "invalid_limit"},
		{fmt.Errorf("%w: max_age 1h: ...", admin.ErrWouldDelete), 409, "admin: change would delete queued mail: max_age 1h: ...", "would_delete"},
		{fmt.Errorf("%w: 552", admin.ErrWouldBounce), 409, "admin: change would bounce mail the receivers accept: 552", "would_bounce"},
		{fmt.Errorf("%w: frozen", admin.ErrBusy), 409, "admin: another limit change is in progress: frozen", "busy"},
		{fmt.Errorf("replay 3: %w", queue.ErrTooLarge), 409, "replay 3: queue: message too large", "too_large"},
		{fmt.Errorf("replay 3: %w", queue.ErrMalformed), 409, "replay 3: queue: malformed message", "malformed"},
		{fmt.Errorf("replay 3: %w", queue.ErrQueueFull), 503, "the mail queue is full: try again once the workers drained some of it", "queue_full"},
		{fmt.Errorf("nats: no responders from nats://internal:4222"), 503, "queue limits unavailable", ""},
	} {
		ops := &fakeOps{limitErr: c.err}
		f := newFixture(t, fixtureOpts{queue: ops, cfg: Config{AdminToken: "tok"}})
		wantReason(t, ops.send(t, f.srv, http.MethodPut, "/api/v1/queue/limits", "tok", `{"max_msgs":9}`), c.code, c.msg, c.reason)
	}
}

func TestOpsHistory(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 11, 40, 0, 0, time.UTC)
	ops := &fakeOps{samples: []admin.Sample{{At: t0, Messages: 1}, {At: t0.Add(2 * time.Second), Messages: 2}}}
	f := newFixture(t, fixtureOpts{queue: ops})
	var h history
	decode(t, f.get(t, "/api/v1/queue/history"), http.StatusOK, &h)
	if h.IntervalSeconds != 2 || len(h.Samples) != 2 || h.Samples[1].Messages != 2 {
		t.Errorf("history %+v", h)
	}
	decode(t, f.get(t, "/api/v1/queue/history?since="+t0.Format(time.RFC3339)), http.StatusOK, &h)
	if len(h.Samples) != 1 || h.Samples[0].Messages != 2 {
		t.Errorf("history since t0: %+v", h)
	}
	wantError(t, f.get(t, "/api/v1/queue/history?since=yesterday"), http.StatusBadRequest, "since: want an RFC 3339 time, like 2026-11-30T11:40:00Z")
	wantError(t, newFixture(t, fixtureOpts{}).get(t, "/api/v1/queue/history"), http.StatusServiceUnavailable, "queue status not available")
}
