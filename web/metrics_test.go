package web

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRequestMetricsByRoutePattern(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	m := f.reader.deliver("s@example.org", []string{"secret.person@example.com"}, simpleMessage(1), baseTime)

	f.get(t, "/api/v1/mailboxes")
	f.get(t, "/api/v1/mailboxes/secret.person@example.com/messages")
	f.get(t, "/api/v1/mailboxes/secret.person@example.com/messages?limit=0")
	f.get(t, "/api/v1/mailboxes/nobody@example.com/messages")
	f.get(t, "/api/v1/messages/"+m.ID)
	f.get(t, "/api/v1/messages/"+m.ID+"/raw")
	f.get(t, "/no/such/route")
	f.do(t, http.MethodPost, "/api/v1/mailboxes")

	for _, tc := range []struct {
		route, code string
		want        float64
	}{
		{"/api/v1/mailboxes", "200", 1},
		{"/api/v1/mailboxes/{address}/messages", "200", 1},
		{"/api/v1/mailboxes/{address}/messages", "400", 1},
		{"/api/v1/mailboxes/{address}/messages", "404", 1},
		{"/api/v1/messages/{id}", "200", 1},
		{"/api/v1/messages/{id}/raw", "200", 1},
		{"unmatched", "404", 1},
		{"unmatched", "405", 1},
	} {
		if got := testutil.ToFloat64(f.srv.metrics.requests.WithLabelValues(tc.route, tc.code)); got != tc.want {
			t.Errorf("requests{route=%q,code=%q} = %v, want %v", tc.route, tc.code, got, tc.want)
		}
	}

	rec := f.get(t, "/metrics")
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: status %d, Content-Type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	body := rec.Body.String()
	for _, want := range []string{
		`levee_http_requests_total{code="200",route="/api/v1/mailboxes/{address}/messages"} 1`,
		`levee_http_request_duration_seconds_count{route="/api/v1/mailboxes/{address}/messages"} 3`,
		`levee_http_request_duration_seconds_count{route="unmatched"} 2`,
		"# HELP levee_http_requests_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, leak := range []string{"secret.person", "nobody@", m.ID, "/no/such/route"} {
		if strings.Contains(body, leak) {
			t.Errorf("/metrics exposes %q from a request path", leak)
		}
	}
	// The scrape itself is counted once it has finished.
	if got := testutil.ToFloat64(f.srv.metrics.requests.WithLabelValues("/metrics", "200")); got != 1 {
		t.Errorf("requests{route=/metrics} = %v, want 1", got)
	}
}

func TestRouteLabel(t *testing.T) {
	for in, want := range map[string]string{
		"GET /{$}":                  "/",
		"GET /api/v1/messages/{id}": "/api/v1/messages/{id}",
		"/plain":                    "/plain",
	} {
		if got := routeLabel(in); got != want {
			t.Errorf("routeLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
