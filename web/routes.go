package web

import (
	"log/slog"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes is the whole URL space. GET patterns also answer HEAD; any other
// method on a known path gets 405 with an Allow header.
func (s *Server) routes(gatherer prometheus.Gatherer) {
	s.uiRoutes()
	if s.reader != nil {
		// What a web app's readers do; their latency sets the drain's pace
		// (ReadLatency). The bulk lookup is a tool's, not a reader's.
		// All of it needs http.read_token when one is set.
		s.handleRead("GET /api/v1/mailboxes", s.needsReadToken(s.listMailboxes))
		s.handleRead("GET /api/v1/mailboxes/{address}/messages", s.needsReadToken(s.listMessages))
		s.handleRead("GET /api/v1/messages", s.needsReadToken(s.findMessages))
		s.handle("POST /api/v1/messages/lookup", s.needsReadToken(s.lookupMessages))
		s.handleRead("GET /api/v1/messages/{id}", s.needsReadToken(s.getMessage))
		s.handleRead("GET /api/v1/messages/{id}/raw", s.needsReadToken(s.getRaw))
	}
	s.opsRoutes()
	s.handle("GET /healthz", s.healthz)
	s.handle("GET /readyz", s.readyz)
	metrics := promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		// A collector that fails should not blank the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
	})
	s.handle("GET /metrics", metrics.ServeHTTP)
	if s.cfg.Pprof {
		// The index links to the named profiles, which pprof.Index serves
		// by name; CPU profile and trace have handlers of their own.
		s.handle("GET /debug/pprof/", s.needsAdminToken(pprof.Index))
		s.handle("GET /debug/pprof/profile", s.needsAdminToken(pprof.Profile))
		s.handle("GET /debug/pprof/trace", s.needsAdminToken(pprof.Trace))
	}
}
