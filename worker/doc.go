// Package worker drains the queue into the store: it fetches batches of
// deliveries from the queue's consumer, parses each message, writes the
// batch in one store transaction and acknowledges each message only after
// the commit. It sees the queue only through queue.Delivery (ack, retry,
// hold, give up), never JetStream itself.
//
// It owns the delivery loop's failure policy: a store outage (the store
// does not answer Ping, or says store.ErrUnavailable: a full disk) pauses
// fetching while each loop holds its batch (Delivery.Hold) and retries with
// a growing delay (the queue keeps the rest of the mail, and no delivery
// attempt is burned on a broken database; Worker.StoreOutage says why, for
// readiness); a message that keeps failing while the store is healthy is given up to the dead letters with its reason on its
// last attempt (queue.max_deliver), and a message delivered more often than
// that without ever being acknowledged (a worker crashed on it) is given up
// before it is tried again.
//
// Concurrency is live: SetConcurrency starts or stops delivery loops, and 0
// pauses draining altogether. The Autoscaler sets it from the backlog (enough
// loops to drain it within a target time at the throughput one loop was
// measured to reach) and caps it by the store's write latency (an adaptive
// limit, additive increase and multiplicative decrease around a p95 budget),
// because a surge of mail must become a longer queue, not a slower
// database. An optional ceiling on messages written per second holds
// whatever the concurrency.
package worker
