// Package web owns Levee's HTTP read side: the mailbox API that the web app
// reads (mailboxes, message pages, one message, its raw bytes), the queue
// status figures for operators, /metrics, and the liveness and readiness
// probes.
//
// It reads storage and the queue only through the small interfaces declared
// here (MailReader, QueueStatus, Check), so that it never depends on how
// either is built and a `levee web` process can run against any backend.
//
// Every response is JSON (except /metrics and the raw message), and every
// error is {"error": "..."} with its HTTP status; internal failures are
// logged and answered with a generic message, never with their text.
package web
