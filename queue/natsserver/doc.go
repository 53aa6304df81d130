// Package natsserver runs the nats-server with JetStream that Levee embeds
// by default (`levee serve` without queue.nats_url), in the same process:
// one node with a file store under the data directory, on loopback and a
// random port unless told otherwise, its log routed to slog.
//
// It also starts the nodes of a small cluster (ClusterName, Routes), which
// the tests use to run a three-node JetStream in one process, and lets a
// test stop a server and start another on the same data directory and port.
package natsserver
