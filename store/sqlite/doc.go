// Package sqlite is Levee's embedded mailbox storage: store.Store on one
// SQLite file through the pure-Go modernc.org/sqlite driver, so that
// `levee serve` needs no database server.
//
// It owns the schema (embedded, numbered migrations applied at Open), the
// write path (one writer connection; each Deliver call is one IMMEDIATE
// transaction committed with a full fsync) and the read path (a separate pool
// of read-only connections that WAL mode lets read while the writer writes).
package sqlite
