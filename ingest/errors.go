package ingest

import "errors"

var (
	// ErrServerClosed is returned by Serve, Start and Shutdown once Shutdown
	// has been called.
	ErrServerClosed = errors.New("ingest: server closed")
	// ErrInvalidConfig wraps every Validate error.
	ErrInvalidConfig = errors.New("ingest: invalid config")
)
