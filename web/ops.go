package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/admin"
	"github.com/levee-mail/levee/web/opsdoc"
)

// QueueOps is the queue as the ops API sees it: an *admin.Ops in Levee, a
// fake in tests.
type QueueOps interface {
	admin.Operator
	History(since time.Time) []admin.Sample
	SampleInterval() time.Duration
}

// maxOpsBody caps a limits change request body.
const maxOpsBody = 64 << 10

// defaultDeadList is a dead-letter page when the client names no limit.
const defaultDeadList = 50

func (s *Server) opsRoutes() {
	const (
		open  = iota // queue figures, for the dashboard
		read         // http.read_token when set
		admin        // http.admin_token
	)
	for _, r := range []struct {
		pattern string
		h       http.HandlerFunc
		access  int
	}{
		{"GET /api/v1/queue", s.queueStatus, open},
		{"GET /api/v1/queue/history", s.queueHistory, open},
		{"GET /api/v1/queue/limits", s.queueLimits, open},
		{"PUT /api/v1/queue/limits", s.setQueueLimits, admin},
		{"GET /api/v1/dlq", s.listDead, read},
		{"GET /api/v1/dlq/{seq}", s.showDead, read},
		{"GET /api/v1/dlq/{seq}/raw", s.rawDead, read},
		{"POST /api/v1/dlq/{seq}/replay", s.replayDead, admin},
		{"POST /api/v1/dlq/replay", s.replayAllDead, admin},
		{"DELETE /api/v1/dlq/{seq}", s.purgeDead, admin},
		{"DELETE /api/v1/dlq", s.purgeAllDead, admin},
	} {
		h := s.needsQueue(r.h)
		switch r.access {
		case admin:
			h = s.needsAdminToken(h)
		case read: // dead letters are mail: their subjects, senders and bytes
			h = s.needsReadToken(h)
		}
		s.handle(r.pattern, h)
	}
}

// needsQueue answers 503 for a process without a queue, so that the
// handlers behind it can count on s.queue.
func (s *Server) needsQueue(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.queue == nil {
			s.writeError(w, r, http.StatusServiceUnavailable, "queue status not available")
			return
		}
		h(w, r)
	}
}

// needsAdminToken guards a route that changes the queue: it needs the configured
// admin token as a bearer token. Without a configured token such routes
// are off (403), so that a Levee nobody configured is never changed over
// HTTP by whoever can reach it.
func (s *Server) needsAdminToken(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AdminToken == "" {
			s.writeError(w, r, http.StatusForbidden, "changes over HTTP are disabled: set http.admin_token (LEVEE_HTTP_ADMIN_TOKEN) to enable them")
			return
		}
		if got, ok := bearerToken(r); !ok || !tokenIs(got, s.cfg.AdminToken) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="levee"`)
			s.writeError(w, r, http.StatusUnauthorized, "admin token missing or wrong (Authorization: Bearer <http.admin_token>)")
			return
		}
		h(w, r)
	}
}

// queueCtx bounds a queue operation by QueueStatusTimeout.
func (s *Server) queueCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.QueueStatusTimeout)
}

// opsErrors is the HTTP status of each error of the operator's tools an
// answer names by its reason (admin.Reason): the operator's mistakes 400,
// what a change would do or another change in progress 409 (nothing was
// changed), a missing dead letter 404, a full queue 503 (a state, which
// passes). Any other error is 503 without a reason.
var opsErrors = []struct {
	err    error
	status int
}{
	{admin.ErrInvalidLimit, http.StatusBadRequest},
	{admin.ErrWouldDelete, http.StatusConflict},
	{admin.ErrWouldBounce, http.StatusConflict},
	{admin.ErrBusy, http.StatusConflict},
	{queue.ErrTooLarge, http.StatusConflict},
	{queue.ErrMalformed, http.StatusConflict},
	{admin.ErrNotFound, http.StatusNotFound},
	{queue.ErrQueueFull, http.StatusServiceUnavailable},
}

// queueError answers a failed queue operation: the errors an operator can
// act on with their message and reason (see opsErrors), anything else (an
// unreachable JetStream is a state operators watch for, not a bug in this
// server) as 503 with a generic message. prefix, when set, goes before the
// message (how far a bulk operation got).
func (s *Server) queueError(w http.ResponseWriter, r *http.Request, op string, err error, prefix ...string) {
	code, msg, reason := http.StatusServiceUnavailable, op+" unavailable", ""
	for _, e := range opsErrors {
		if errors.Is(err, e.err) {
			code, msg, reason = e.status, err.Error(), admin.Reason(e.err)
			break
		}
	}
	switch {
	case reason == "":
		s.log.WarnContext(r.Context(), "queue operation failed", "op", op, "err", err)
	case errors.Is(err, queue.ErrQueueFull):
		msg = "the mail queue is full: try again once the workers drained some of it"
	}
	s.writeJSON(w, r, code, errorBody{Error: strings.Join(append(prefix, msg), ""), Reason: reason})
}

func (s *Server) queueStatus(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.queueCtx(r)
	defer cancel()
	st, err := s.queue.Status(ctx)
	if err != nil {
		s.queueError(w, r, "queue status", err)
		return
	}
	// Rates over a moment (a request just after a sample, at start) are
	// noise: none until the window is half a sample interval.
	if st.Rates.WindowSeconds < s.queue.SampleInterval().Seconds()/2 {
		st.Rates = admin.Rates{}
	}
	s.writeJSON(w, r, http.StatusOK, opsdoc.FromStatus(st))
}

type history struct {
	IntervalSeconds float64        `json:"interval_seconds"`
	Samples         []admin.Sample `json:"samples"`
}

func (s *Server) queueHistory(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			s.writeError(w, r, http.StatusBadRequest, "since: want an RFC 3339 time, like 2026-11-30T11:40:00Z")
			return
		}
		since = t
	}
	s.writeJSON(w, r, http.StatusOK, history{IntervalSeconds: s.queue.SampleInterval().Seconds(), Samples: s.queue.History(since)})
}

func (s *Server) queueLimits(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.queueCtx(r)
	defer cancel()
	l, err := s.queue.Limits(ctx)
	if err != nil {
		s.queueError(w, r, "queue limits", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, opsdoc.FromLimitsReport(l))
}

// limitsRequest is the PUT body: omitted fields stay as they are. Sizes are
// plain numbers (bytes); max_age is a Go duration ("48h").
type limitsRequest struct {
	MaxMsgs          *int64  `json:"max_msgs"`
	MaxBytes         *int64  `json:"max_bytes"`
	MaxAge           *string `json:"max_age"`
	MaxMsgSize       *int32  `json:"max_msg_size"`
	PerDomainMaxMsgs *int64  `json:"per_domain_max_msgs"`
	Force            bool    `json:"force"`
}

func (req limitsRequest) limits() (admin.LimitsChange, error) {
	var l admin.LimitsChange
	positive := func(key string, v *int64, dst *int64) error {
		if v == nil {
			return nil
		}
		if *v < 1 {
			return fmt.Errorf("%s: must be > 0, got %d", key, *v)
		}
		*dst = *v
		return nil
	}
	if err := positive("max_msgs", req.MaxMsgs, &l.MaxMsgs); err != nil {
		return l, err
	}
	if err := positive("max_bytes", req.MaxBytes, &l.MaxBytes); err != nil {
		return l, err
	}
	if req.MaxMsgSize != nil {
		if *req.MaxMsgSize < 1 {
			return l, fmt.Errorf("max_msg_size: must be > 0, got %d", *req.MaxMsgSize)
		}
		l.MaxMsgSize = *req.MaxMsgSize
	}
	if req.MaxAge != nil {
		d, err := time.ParseDuration(*req.MaxAge)
		if err != nil || d <= 0 {
			return l, fmt.Errorf("max_age: want a positive duration like \"48h\", got %q", *req.MaxAge)
		}
		l.MaxAge = d
	}
	if v := req.PerDomainMaxMsgs; v != nil {
		switch {
		case *v == 0: // "no cap", in the config's terms
			l.PerDomainMaxMsgs = -1
		case *v < 0:
			return l, fmt.Errorf("per_domain_max_msgs: must be >= 0 (0 removes the cap), got %d", *v)
		default:
			l.PerDomainMaxMsgs = *v
		}
	}
	l.Force = req.Force
	if l == (admin.LimitsChange{Force: l.Force}) {
		return l, errors.New("no limit given: set one or more of max_msgs, max_bytes, max_age, max_msg_size, per_domain_max_msgs")
	}
	return l, nil
}

func (s *Server) setQueueLimits(w http.ResponseWriter, r *http.Request) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxOpsBody))
	dec.DisallowUnknownFields()
	var req limitsRequest
	if err := dec.Decode(&req); err != nil {
		s.invalidLimit(w, r, "body: want a JSON object of limits: "+err.Error())
		return
	}
	l, err := req.limits()
	if err != nil {
		s.invalidLimit(w, r, err.Error())
		return
	}
	ctx, cancel := s.queueCtx(r)
	defer cancel()
	u, err := s.queue.UpdateLimits(ctx, l)
	if err != nil {
		s.queueError(w, r, "queue limits", err)
		return
	}
	s.log.InfoContext(r.Context(), "queue limits changed over HTTP", "remote", r.RemoteAddr, "forced", l.Force)
	s.writeJSON(w, r, http.StatusOK, opsdoc.FromLimitsUpdate(u))
}

// invalidLimit answers a limits request this server refuses before asking
// the queue, as the queue's own refusal would be: 400, invalid_limit.
func (s *Server) invalidLimit(w http.ResponseWriter, r *http.Request, msg string) {
	s.writeJSON(w, r, http.StatusBadRequest, errorBody{Error: msg, Reason: admin.Reason(admin.ErrInvalidLimit)})
}

type deadList struct {
	DeadLetters []admin.DeadLetterInfo `json:"dead_letters"`
	Total       uint64                 `json:"total"`
}

func (s *Server) listDead(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	limit := defaultDeadList
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.writeError(w, r, http.StatusBadRequest, "after: want a dead-letter sequence number")
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.writeError(w, r, http.StatusBadRequest, "limit: want 1..1000")
			return
		}
		limit = n
	}
	ctx, cancel := s.queueCtx(r)
	defer cancel()
	list, total, err := s.queue.DeadLetters(ctx, after, limit)
	if err != nil {
		s.queueError(w, r, "dead letters", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, deadList{DeadLetters: list, Total: total})
}

// deadSeq reads the {seq} path value; it answers 400 itself when bad.
func (s *Server) deadSeq(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		s.writeError(w, r, http.StatusBadRequest, "dead letter: want its sequence number (levee dlq list shows them)")
		return 0, false
	}
	return seq, true
}

func (s *Server) showDead(w http.ResponseWriter, r *http.Request) {
	seq, ok := s.deadSeq(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.queueCtx(r)
	defer cancel()
	d, _, err := s.queue.DeadLetter(ctx, seq)
	if err != nil {
		s.queueError(w, r, "dead letter", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, d)
}

func (s *Server) rawDead(w http.ResponseWriter, r *http.Request) {
	seq, ok := s.deadSeq(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.queueCtx(r)
	defer cancel()
	_, raw, err := s.queue.DeadLetter(ctx, seq)
	if err != nil {
		s.queueError(w, r, "dead letter", err)
		return
	}
	writeRaw(w, raw)
}

func (s *Server) replayDead(w http.ResponseWriter, r *http.Request) {
	seq, ok := s.deadSeq(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.queueCtx(r)
	defer cancel()
	if err := s.queue.Replay(ctx, seq); err != nil {
		s.queueError(w, r, "replay", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]int{"replayed": 1})
}

func (s *Server) replayAllDead(w http.ResponseWriter, r *http.Request) {
	// Not bounded by QueueStatusTimeout: a replay of thousands takes longer,
	// and each step is safe to repeat.
	n, err := s.queue.ReplayAll(r.Context())
	if err != nil {
		s.log.WarnContext(r.Context(), "replay all stopped", "replayed", n, "err", err)
		s.queueError(w, r, "replay", err, fmt.Sprintf("%d replayed, then: ", n))
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]int{"replayed": n})
}

func (s *Server) purgeDead(w http.ResponseWriter, r *http.Request) {
	seq, ok := s.deadSeq(w, r)
	if !ok {
		return
	}
	ctx, cancel := s.queueCtx(r)
	defer cancel()
	if err := s.queue.Purge(ctx, seq); err != nil {
		s.queueError(w, r, "purge", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]int{"purged": 1})
}

func (s *Server) purgeAllDead(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.queueCtx(r)
	defer cancel()
	n, err := s.queue.PurgeAll(ctx)
	if err != nil {
		s.queueError(w, r, "purge", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, map[string]uint64{"purged": n})
}
