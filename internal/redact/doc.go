// Package redact hides the secrets in connection URLs (nats://, postgres://)
// before they reach a log line or an error message.
package redact
