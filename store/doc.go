// Package store defines Levee's mailbox storage: one small interface that the
// worker writes through and the web API reads through, and the sentinel
// errors every backend returns. Backends live in sub-packages (sqlite,
// postgres) and all pass the conformance suite in storetest.
//
// Storage is idempotent: a message is keyed by its content-derived id
// (mail.ID), so a redelivered or retransmitted message is one row.
package store
