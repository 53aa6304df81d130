// Package fleet lets any one Levee process, or the CLI, see the whole
// deployment: every process connected to a queue answers a stats request
// with its own figures (its roles, worker concurrency, SMTP outcomes and the
// SIZE it advertises), and Gather collects the answers.
//
// It is core NATS request/reply, outside any stream (the "_LEVEE." prefix
// keeps it clear of the stream subjects): a process that is gone simply does
// not answer, and nothing needs cleaning up after it.
package fleet
