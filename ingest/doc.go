// Package ingest is Levee's SMTP receiver: the first stage of the flow, where
// mail servers hand messages over.
//
// It owns everything a sending MTA can observe: the listener and its
// connection limits, the envelope checks (recipient domains, size, recipient
// count), the queue high-watermark that refuses new transactions with a 4xx
// before any DATA is read, reading DATA with an idle (not total) timeout, the
// Received trace header, the content-derived message id, and the reply codes
// (all decided in codes.go). A message is answered 250 only after the
// Publisher — the queue — returned nil, which means the message is durable.
// Every temporary problem is a 4xx so the sender retries; only problems that
// a retry cannot fix (unknown domain, too big) are 5xx.
//
// ingest declares the two small interfaces it needs of the queue
// (Publisher, FillGauge), which *queue.Queue satisfies, and picks its reply
// by the queue's own publish errors (queue.ErrQueueFull, queue.ErrTooLarge;
// anything else is temporary), classified once, in the queue.
//
// Shutdown is two steps: stop taking new work (new connections and idle
// sessions get 421 4.3.2) while in-flight transactions finish, then, at the
// caller's deadline, cancel the server's lifetime context (aborting pending
// publishes with a 4xx) and close what is left.
package ingest
