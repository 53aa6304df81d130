package web

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/levee-mail/levee/store"
)

func (s *Server) listMailboxes(w http.ResponseWriter, r *http.Request) {
	mbs, err := s.reader.Mailboxes(r.Context())
	if err != nil {
		s.internalError(w, r, "list mailboxes", err)
		return
	}
	// An empty list is [] (appendMailboxesJSON never writes null): clients iterate it.
	s.writeJSONBytes(w, http.StatusOK, appendMailboxesJSON(make([]byte, 0, 64+80*len(mbs)), mbs))
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) {
	limit, err := parseLimit(r.URL.Query().Get("limit"))
	if err != nil {
		s.writeError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	// Mailboxes are keyed by the case-folded address (see store.Store.Deliver).
	address := strings.ToLower(r.PathValue("address"))
	page, err := s.reader.Messages(r.Context(), address, store.Page{Limit: limit, Cursor: r.URL.Query().Get("cursor")})
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.writeError(w, r, http.StatusNotFound, "mailbox not found")
		return
	case errors.Is(err, store.ErrInvalid):
		// The only argument a client can get wrong past parseLimit.
		s.writeError(w, r, http.StatusBadRequest, "cursor: not a cursor this server issued")
		return
	case err != nil:
		s.internalError(w, r, "list messages", err)
		return
	}
	if page.Messages == nil {
		page.Messages = []store.Summary{}
	}
	s.writeJSON(w, r, http.StatusOK, page)
}

// parseLimit rejects rather than clamps a bad limit, so that a client
// learns the bound instead of silently getting fewer messages than asked.
func parseLimit(v string) (int, error) {
	if v == "" {
		return store.DefaultPageLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > store.MaxPageLimit {
		return 0, fmt.Errorf("limit: must be an integer between 1 and %d", store.MaxPageLimit)
	}
	return n, nil
}

func (s *Server) getMessage(w http.ResponseWriter, r *http.Request) {
	m, err := s.reader.Message(r.Context(), r.PathValue("id"))
	if s.messageFailed(w, r, "get message", err) {
		return
	}
	// Raw and attachment contents are tagged json:"-": the JSON carries
	// metadata only, the bytes are at /raw.
	s.writeJSON(w, r, http.StatusOK, m)
}

// messageFailed answers a failed look-up of one message by id (404, 400 or
// 500) and reports whether it did.
func (s *Server) messageFailed(w http.ResponseWriter, r *http.Request, op string, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, store.ErrNotFound):
		s.writeError(w, r, http.StatusNotFound, "message not found")
	case errors.Is(err, store.ErrInvalid):
		s.writeError(w, r, http.StatusBadRequest, "invalid message id")
	default:
		s.internalError(w, r, op, err)
	}
	return true
}

func (s *Server) getRaw(w http.ResponseWriter, r *http.Request) {
	raw, err := s.reader.Raw(r.Context(), r.PathValue("id"))
	if s.messageFailed(w, r, "get raw message", err) {
		return
	}
	writeRaw(w, raw)
}

// writeRaw answers with a message exactly as received.
func writeRaw(w http.ResponseWriter, raw []byte) {
	h := w.Header()
	h.Set("Content-Type", "message/rfc822")
	h.Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(raw)
}
