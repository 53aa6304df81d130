// Package web owns Levee's HTTP side: the mailbox API that the web app
// reads (mailboxes, message pages, one message, its raw bytes), the ops API
// and dashboard for operators (queue status and history, live limits, dead
// letters: the queue/admin tools over HTTP), /metrics, and the liveness and
// readiness probes.
//
// It reads storage and the queue only through the small interfaces declared
// here (MailReader, QueueOps, Check), so that it never depends on how
// either is built and a `levee web` process can run against any backend.
// The ops API's errors carry the admin package's reason names, so that its
// clients (package web/opsclient) get the same errors back.
//
// Every response is JSON (except /metrics and the raw message), and every
// error is {"error": "..."} with its HTTP status; internal failures are
// logged and answered with a generic message, never with their text.
package web
