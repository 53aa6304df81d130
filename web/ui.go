package web

import "net/http"

// uiRoutes registers the pages for people (the dashboard at /).
func (s *Server) uiRoutes() {
	s.handle("GET /{$}", s.index)
}

// index is a placeholder until the dashboard exists: it tells a person (or a
// script) what this server answers.
func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, r, http.StatusOK, struct {
		Service   string   `json:"service"`
		Endpoints []string `json:"endpoints"`
	}{"levee", s.patterns})
}
