package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// healthz says only that the process serves HTTP; dependencies belong to
// readyz, so that an outage of the store does not get the process restarted.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

// Per-check outcomes in /readyz.
const (
	checkOK      = "ok"
	checkFailed  = "failed"
	checkTimeout = "timeout"
)

type readiness struct {
	Status string            `json:"status"`
	Error  string            `json:"error,omitempty"`
	Checks map[string]string `json:"checks"`
}

// readyz runs every check at once under ReadyTimeout. A check that ignores
// its ctx is reported as timed out when the deadline passes rather than
// holding the probe; its goroutine finishes on its own. Error texts go to
// the log, not to the (possibly public) response.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(s.ready)) // buffered: late checks never block
	out := readiness{Checks: make(map[string]string, len(s.ready))}
	for name, check := range s.ready {
		out.Checks[name] = checkTimeout // until it answers
		go func() { results <- result{name, runCheck(ctx, check)} }()
	}
wait:
	for range s.ready {
		select {
		case res := <-results:
			switch {
			case res.err == nil:
				out.Checks[res.name] = checkOK
			case errors.Is(res.err, context.DeadlineExceeded):
				s.log.WarnContext(r.Context(), "readiness check timed out", "check", res.name, "err", res.err)
			default:
				out.Checks[res.name] = checkFailed
				s.log.WarnContext(r.Context(), "readiness check failed", "check", res.name, "err", res.err)
			}
		case <-ctx.Done():
			s.log.WarnContext(r.Context(), "readiness checks did not answer in time", "timeout", s.cfg.ReadyTimeout)
			break wait
		}
	}
	var failing []string
	for name, st := range out.Checks {
		if st != checkOK {
			failing = append(failing, name)
		}
	}
	if len(failing) == 0 {
		out.Status = "ready"
		s.writeJSON(w, r, http.StatusOK, out)
		return
	}
	slices.Sort(failing)
	out.Status = "not ready"
	out.Error = "not ready: " + strings.Join(failing, ", ")
	s.writeJSON(w, r, http.StatusServiceUnavailable, out)
}

// runCheck turns a panicking check into a failed one: a probe must not take
// the process down.
func runCheck(ctx context.Context, c Check) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	return c(ctx)
}
