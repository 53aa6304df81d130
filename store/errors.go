package store

import "errors"

// ErrInvalid is returned (wrapped) when a call's arguments cannot be acted on:
// a message without an ID or without Parsed, or a cursor the backend did not
// issue. Retrying the same call cannot succeed, so a caller should not retry
// it (the worker dead-letters; the web API answers 400).
var ErrInvalid = errors.New("store: invalid argument")
