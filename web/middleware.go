package web

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// routeUnmatched labels requests that no route handled (404, 405, redirects),
// so that arbitrary client paths never become label values.
const routeUnmatched = "unmatched"

// recorder sits between net/http and the mux. A route's handler stamps its
// route on it; a response written while route is still empty came from the
// mux itself (no route or wrong method), and its 404/405 plain-text body is
// replaced by the JSON error every client of this API expects.
type recorder struct {
	http.ResponseWriter
	route       string
	code        int
	wroteHeader bool
	intercepted bool
}

func (rw *recorder) WriteHeader(code int) {
	if rw.wroteHeader {
		return
	}
	rw.wroteHeader = true
	rw.code = code
	if rw.route == "" && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		rw.intercepted = true
		body := []byte(`{"error":"not found"}` + "\n")
		if code == http.StatusMethodNotAllowed {
			body = []byte(`{"error":"method not allowed"}` + "\n")
		}
		h := rw.Header()
		h.Set("Content-Type", contentTypeJSON)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		rw.ResponseWriter.WriteHeader(code)
		_, _ = rw.ResponseWriter.Write(body)
		return
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(p []byte) (int, error) {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.intercepted {
		return len(p), nil // the mux's plain-text body; the JSON one is already sent
	}
	return rw.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// routeOf returns the route a response belongs to, for logs.
func routeOf(w http.ResponseWriter) string {
	if rw, ok := w.(*recorder); ok && rw.route != "" {
		return rw.route
	}
	return routeUnmatched
}

// handle registers h under pattern and makes it stamp its route (the
// pattern's path, "/" for the index) on the recorder for metrics and logs.
// Every route but the probes and /metrics answers only to the allowed
// hosts (checkHost).
func (s *Server) handle(pattern string, h http.HandlerFunc) {
	route := routeLabel(pattern)
	if !hostExempt[route] {
		h = s.checkHost(h)
	}
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rw, ok := w.(*recorder); ok {
			rw.route = route
		}
		h(w, r)
	}))
}

// serveHTTP is the outermost handler: it records the status and duration of
// every request by route, and turns a panicking handler into a logged 500
// rather than a dropped connection.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &recorder{ResponseWriter: w}
	// Every body here is JSON or a message the browser must not interpret.
	w.Header().Set("X-Content-Type-Options", "nosniff")
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				s.observe(rw, start)
				panic(p)
			}
			if !rw.wroteHeader {
				s.internalError(rw, r, "handler panic", panicError{p})
			} else {
				s.log.Error("http handler panicked after writing", "route", routeOf(rw), "panic", p)
			}
		}
		s.observe(rw, start)
	}()
	s.mux.ServeHTTP(rw, r)
}

// handleRead is handle for a reader's route, whose latency counts in
// ReadLatency.
func (s *Server) handleRead(pattern string, h http.HandlerFunc) {
	s.readRoutes[routeLabel(pattern)] = true
	s.handle(pattern, h)
}

func (s *Server) observe(rw *recorder, start time.Time) {
	code := rw.code
	if !rw.wroteHeader {
		code = http.StatusOK // net/http sends 200 for a handler that wrote nothing
	}
	route := rw.route
	if route == "" {
		route = routeUnmatched
	}
	s.metrics.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	took := time.Since(start)
	s.metrics.duration.WithLabelValues(route).Observe(took.Seconds())
	if s.readRoutes[route] {
		if code >= 500 {
			// A read the store failed (a timeout, a lock) is a reader left
			// waiting: count it as slow, not as absent.
			took = max(took, failedReadCounts)
		}
		s.reads.observe(took)
	}
}

type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprintf("panic: %v", p.v) }

// failedReadCounts is what a failed read counts as in ReadLatency.
const failedReadCounts = time.Second
