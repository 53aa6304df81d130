// Package apptest starts a whole Levee in a test's process (embedded
// JetStream in a temporary directory, real SQLite, real SMTP and HTTP on
// loopback ports) and talks to it as a mail server and a web app would, for
// the end-to-end tests of app and of the command line.
package apptest
