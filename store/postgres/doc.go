// Package postgres is Levee's mailbox storage for scale: store.Store on a
// PostgreSQL database through a pgx/v5 connection pool, for deployments that
// run several workers and web processes against one database. It passes the
// same conformance suite (store/storetest) as the embedded SQLite backend.
//
// It owns the schema (embedded, numbered migrations applied at Open inside
// one transaction under an advisory lock, so that processes starting at
// once do not race), the write path (each Deliver call is one transaction
// sent as one pipelined round trip, whose one statement inserts the batch's
// new messages, attachments, mailbox links and counters) and the read path.
//
// PostgreSQL keeps neither NUL bytes nor invalid UTF-8 in text or jsonb, so
// parsed text (subject, bodies, headers, names) is stored with NUL bytes
// dropped and invalid sequences replaced by U+FFFD, as storetest allows;
// a message is never refused for it, and Raw stays byte-exact in bytea.
package postgres
