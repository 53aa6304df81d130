package store

import "errors"

// ErrInvalid is returned (wrapped) when a call's arguments cannot be acted on:
// a message without an ID or without Parsed, or a cursor the backend did not
// issue. Retrying the same call cannot succeed, so a caller should not retry
// it (the worker dead-letters; the web API answers 400).
var ErrInvalid = errors.New("store: invalid argument")

// ErrUnavailable is returned (wrapped, with the backend's own error) when
// the backend cannot take a write for a reason that is none of the call's:
// its disk is full or failing (SQLite's SQLITE_FULL and SQLITE_IOERR,
// ENOSPC) or its server is out of a resource (PostgreSQL's SQLSTATE class
// 53: disk_full, out_of_memory, too_many_connections). Such a backend
// still answers Ping. The same call
// succeeds once the cause is gone, so a caller should hold it and retry
// rather than count it against the messages (the worker treats it as a
// store outage).
var ErrUnavailable = errors.New("store: unavailable")
