// Package mail holds the types every stage of Levee's flow shares: the SMTP
// envelope, the queued message and its parsed form, and the content-derived
// message id that makes queueing and storage idempotent.
//
// It is the leaf of the import graph: ingest, queue, worker, store and web
// import it; it imports none of them.
package mail
