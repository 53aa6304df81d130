// Package natsserver runs the nats-server with JetStream that Levee embeds
// by default (`levee serve` without queue.nats_url), in the same process:
// one node with a file store under the data directory, on loopback and a
// random port unless told otherwise, its log routed to slog.
//
// Restart stops it and starts it again on the same data directory and
// port, the one way to reopen a stream whose store met a write error (a
// full disk); Health is the server's own health check, which reports such
// an error.
//
// It also starts the nodes of a small cluster (ClusterName, Routes), which
// the tests use to run a three-node JetStream in one process, and lets a
// test stop a server and start another on the same data directory and port.
package natsserver
