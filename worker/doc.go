// Package worker drains the queue into the store: it pulls batches from the
// durable JetStream consumer, parses each message, writes the batch in one
// store transaction and acknowledges each message only after the commit.
//
// It owns the delivery loop's failure policy: a store outage pauses fetching
// while each loop holds its batch, keeps it alive with InProgress and retries
// with a growing delay (the queue keeps the rest of the mail, and no delivery
// attempt is burned on a broken database); a message that keeps failing while the store
// is healthy is dead-lettered with its reason after MaxDeliver attempts, and
// a message that arrives more often than that without ever being acked (a
// worker crashed on it) is dead-lettered before it is tried again.
//
// Concurrency is live: SetConcurrency starts or stops delivery loops, and 0
// pauses draining altogether.
package worker
