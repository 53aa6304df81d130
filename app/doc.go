// Package app is Levee as a running process: it wires the stages of the
// flow (ingest, queue, worker, store, web) into the roles a process runs
// (`levee serve` runs them all; `levee smtpd`, `levee worker` and `levee
// web` one each), starts them in order and stops them in the order of the
// flow. Its Config gathers the components' own configs under their keys
// (see internal/config) and derives what one needs from another.
//
// Every process also serves /metrics, /healthz and /readyz, answers the
// fleet's stats requests, and runs the operator's background work (the
// dashboard's history, lifting a dead limit change's intake freeze).
//
// cmd/levee parses the command line and calls Start; the end-to-end tests
// start a Levee here the same way.
package app
