package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
)

// Look-up by the Message-ID header: how an audit (levee loadtest, or an
// operator asking "did this message arrive?") finds messages without walking
// mailboxes. Both forms return every stored message carrying the id, so a
// duplicate shows as two entries.

// findMessages answers GET /api/v1/messages?message_id=<id>.
func (s *Server) findMessages(w http.ResponseWriter, r *http.Request) {
	id := mail.NormalizeMessageID(r.URL.Query().Get("message_id"))
	if id == "" {
		s.writeError(w, r, http.StatusBadRequest, "message_id: required (the Message-ID header, with or without <>)")
		return
	}
	found, err := s.reader.FindByMessageID(r.Context(), []string{id})
	if err != nil {
		s.internalError(w, r, "find by message-id", err)
		return
	}
	list := found[id]
	if list == nil {
		list = []store.Summary{}
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Messages []store.Summary `json:"messages"`
	}{list})
}

type lookupRequest struct {
	MessageIDs []string `json:"message_ids"`
}

type lookupResponse struct {
	// Found maps each requested Message-ID that is stored to its messages;
	// ids absent from it are not stored (yet).
	Found map[string][]store.Summary `json:"found"`
}

// lookupMessages answers POST /api/v1/messages/lookup with
// {"message_ids": [...]}, at most store.MaxLookup per request.
func (s *Server) lookupMessages(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	var req lookupRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(w, r, http.StatusRequestEntityTooLarge, "body: larger than 1 MiB")
			return
		}
		s.writeError(w, r, http.StatusBadRequest, "body: want {\"message_ids\": [\"...\"]}: "+err.Error())
		return
	}
	if len(req.MessageIDs) > store.MaxLookup {
		s.writeError(w, r, http.StatusBadRequest, fmt.Sprintf("message_ids: at most %d per request, got %d", store.MaxLookup, len(req.MessageIDs)))
		return
	}
	ids := make([]string, 0, len(req.MessageIDs))
	for _, id := range req.MessageIDs {
		if id = mail.NormalizeMessageID(id); id != "" {
			ids = append(ids, id)
		}
	}
	found, err := s.reader.FindByMessageID(r.Context(), ids)
	if err != nil {
		s.internalError(w, r, "lookup by message-id", err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, lookupResponse{Found: found})
}
