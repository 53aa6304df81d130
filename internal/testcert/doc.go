// Package testcert makes certificates for tests: a certificate authority of
// the test's own, and certificates it signs for the hosts a test serves, as
// parsed certificates, PEM for files and tls.Certificate for servers. Only
// _test.go files import it.
package testcert
