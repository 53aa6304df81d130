package web

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
)

const contentTypeJSON = "application/json; charset=utf-8"

// errorBody is the one shape every error response has. Reason names the
// operator tools' error, when it is one a client may act on (see
// admin.Reason).
type errorBody struct {
	Error  string `json:"error"`
	Reason string `json:"reason,omitempty"`
}

// writeJSON marshals v before touching the response, so that a value that
// cannot be encoded still gets a clean 500 instead of half a body.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	// No HTML escaping: error messages say "> 0", not "\u003e 0", to the
	// curl user; every body is application/json, never HTML.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the line
		s.internalError(w, r, "encode response", err)
		return
	}
	s.writeJSONBytes(w, code, buf.Bytes())
}

// writeJSONBytes answers with b, a JSON body ending in a newline.
func (s *Server) writeJSONBytes(w http.ResponseWriter, code int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// writeError answers with a message meant for the client.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	s.writeJSON(w, r, code, errorBody{Error: msg})
}

// internalError logs what went wrong and tells the client only that it did:
// storage errors can carry paths, SQL and addresses.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, op string, err error) {
	s.log.LogAttrs(r.Context(), slog.LevelError, "http request failed",
		slog.String("op", op), slog.String("method", r.Method),
		slog.String("route", routeOf(w)), slog.Any("err", err))
	// Not through writeJSON: a failing encoder must not recurse.
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	h.Del("Content-Length")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte(`{"error":"internal server error"}` + "\n"))
}
