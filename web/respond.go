package web

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
)

const contentTypeJSON = "application/json; charset=utf-8"

// errorBody is the one shape every error response has.
type errorBody struct {
	Error string `json:"error"`
}

// writeJSON marshals v before touching the response, so that a value that
// cannot be encoded still gets a clean 500 instead of half a body.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.internalError(w, r, "encode response", err)
		return
	}
	b = append(b, '\n')
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
