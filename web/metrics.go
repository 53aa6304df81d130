package web

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// newMetrics labels by route pattern, never by the raw path: paths carry
// mailbox addresses and message ids, which must not become label values.
func newMetrics(reg prometheus.Registerer, routes []string, extra []prometheus.Collector) (*metrics, error) {
	routeHelp := "route is one of " + strings.Join(routes, ", ") + " or " + routeUnmatched
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_http_requests_total",
			Help: "HTTP requests answered, by route and status code. " + routeHelp + "; code is the HTTP status (200, 400, 404, 405, 500, 503, ...).",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "levee_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route. " + routeHelp + ".",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
	}
	if reg != nil {
		for _, c := range append([]prometheus.Collector{m.requests, m.duration}, extra...) {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("web: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// routeLabel is the path part of a ServeMux pattern ("GET /api/v1/x" ->
// "/api/v1/x"), with the exact-match marker dropped ("/{$}" -> "/").
func routeLabel(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		pattern = pattern[i+1:]
	}
	if p := strings.TrimSuffix(pattern, "{$}"); p != "" {
		return p
	}
	return pattern
}
