// Package queue is Levee's transport through JetStream: the embedded
// nats-server (package natsserver) or the connection to an external
// cluster, the mail stream with its limits, the workers' durable pull
// consumer, the dead-letter stream, the group-committing publisher the SMTP
// receiver waits on, and the deliveries the workers settle. The operator's
// tools (status, live limits, dead letters) are package admin.
//
// The stream is the levee: it holds a surge of accepted mail so that storage
// drains it at its own pace. Its limits refuse new mail (DiscardNew) rather
// than drop queued mail, so a full queue shows up as a 4xx to senders, who
// retry. A message is published with its content-derived ID as Nats-Msg-Id,
// which makes an MTA's retransmission within the duplicate window a
// duplicate instead of a second copy.
//
// Publish returns only after the PubAck. With SyncAlways the server fsyncs
// before acknowledging; concurrent publishes share one fsync through atomic
// batches (group commit), and fall back to single publishes whenever a
// batch fails, so that every caller gets the answer about its own message.
//
// A full disk under the embedded server is a full queue: its store keeps
// the write error until reopened, so the monitor watches the server's
// health, refuses publishes as ErrQueueFull while there is no room, and
// restarts the server once there is (storefault.go).
//
// The stream's limits have one writer: Open creates a missing stream with
// the config's limits and otherwise leaves the live ones alone (reporting
// drift), so a start never undoes an operator's live change or deletes
// queued mail; changing them is admin.UpdateLimits. A worker sees the
// consumer only through Consumer.Fetch and Delivery: ack after commit, hold
// through a store outage, retry later, or give up to the dead letters.
package queue
