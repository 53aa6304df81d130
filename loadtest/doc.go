// Package loadtest is Levee's load tester: it replays traffic bursts at an
// SMTP server and answers three questions — did the server keep up, what did
// senders see, and was any accepted message lost or stored twice.
//
// It owns the arrival schedules (constant, ramp, burst, and replay of a
// recorded trace at a chosen speed-up), the message sources (a generator with
// a size distribution and optional attachments, or a corpus of .eml files,
// an mbox or a Maildir), the pool of SMTP sessions that delivers them, the
// audit that checks every accepted message through Levee's HTTP API, the
// reader probe that measures the mailbox API the way a web app uses it, and
// the output: a live progress line, a summary table, a JSON result and an
// HTML report with plots.
//
// The load is open-loop: arrivals are emitted at their scheduled times by a
// generator that never waits for the server, and every latency is measured
// from the arrival's intended time. A slow server therefore cannot slow the
// offered load down and hide its own slowness (coordinated omission); it
// shows up as a backlog of arrivals waiting for a free session and as
// latency. Arrivals share a bounded pool of SMTP sessions that are reused
// (RSET when a transaction was abandoned or a session sat idle), pipeline
// when the server offers PIPELINING, and upgrade with STARTTLS when asked.
// Every 4xx is retried with exponential backoff like an MTA would; 5xx is a
// failure.
//
// Every message carries a unique Message-ID and an X-Levee-Loadtest-Id
// header; the audit looks them up in batches (POST /api/v1/messages/lookup)
// until every accepted message is stored or a deadline passes.
//
// The package talks to the system under test only over SMTP and HTTP and
// imports no other Levee package but the leaf internal/bytesize (so that
// sizes are spelled as in the config), so it can test any SMTP server
// (without the audit, the reader probe and the queue figures, which need
// Levee's API).
//
// The package exports far more names than the project's rule of about 120,
// on purpose: about three quarters of them are two sets of struct types
// whose fields are the interface. Result and the types it holds (Counts,
// Series, AuditResult, ReaderResult, ReaderPhase, QueuePoint, CheckResult,
// Quantiles, HistBin, Phase, ReplyCount) are the schema of the JSON result
// file, whose fields docs/loadtesting.md refers to and which readers decode
// back into Result (cmd/levee's tests do). Config and the structs it takes
// (RetryPolicy, AuditConfig), with Thresholds, BurstSpec and
// ArrivalOptions, are what `levee loadtest` or any other caller fills in,
// one field per knob. The rest is the API a caller needs: Run, the
// schedules, the message sources, the parsers for rates and sizes. Helpers
// used only here (the histogram, the look-up batch size) are unexported.
//
// The SMTP client is written here on net/textproto rather than taken from
// go-smtp's Client, which (v0.25.1) cannot pipeline commands and re-sends
// EHLO after every RSET; replies that refuse a message are reported as
// go-smtp's *smtp.SMTPError so callers classify them as elsewhere in Levee.
package loadtest
