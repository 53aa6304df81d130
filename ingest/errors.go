package ingest

import "errors"

// Publish outcomes. The caller's Publisher adapter wraps or maps the queue's
// own errors to these, so ingest can classify them with errors.Is without
// importing the queue. Any other error, and a panic inside Publish, is treated
// as temporary (451 4.3.0): a sender retries a 4xx, while a wrongly permanent
// 5xx would bounce mail that a retry could have delivered.
var (
	// ErrQueueFull: the queue is at its limits (messages or bytes). 452 4.3.1.
	ErrQueueFull = errors.New("ingest: queue full")
	// ErrTooLarge: the queue refuses a message of this size. 552 5.3.4.
	ErrTooLarge = errors.New("ingest: message too large for the queue")
	// ErrUnavailable: the queue cannot be reached or did not acknowledge. 451 4.3.0.
	ErrUnavailable = errors.New("ingest: queue unavailable")
)

var (
	// ErrServerClosed is returned by Serve, Start and Shutdown once Shutdown
	// has been called.
	ErrServerClosed = errors.New("ingest: server closed")
	// ErrInvalidConfig wraps every Validate error.
	ErrInvalidConfig = errors.New("ingest: invalid config")
)
