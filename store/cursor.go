package store

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Cursor is the position of the last summary on a page: listing goes on
// below (StoredAt, ID), newest first. Every backend issues the same format,
// opaque to clients; the version prefix lets a later format reject (rather
// than misread) an old one.
type Cursor struct {
	StoredAt int64 // microseconds since the Unix epoch
	ID       string
}

const cursorVersion = "1"

// Encode is the cursor as a client sees it (Page.Cursor, NextCursor).
func (c Cursor) Encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorVersion + ":" + strconv.FormatInt(c.StoredAt, 10) + ":" + c.ID))
}

// DecodeCursor reads a cursor that Encode made; anything else is
// ErrInvalid, so that a forged cursor is a 400 and never a database error.
// A backend may refuse more (values it could not bind).
func DecodeCursor(s string) (Cursor, error) {
	bad := fmt.Errorf("%w: cursor %q", ErrInvalid, s)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, bad
	}
	v, rest, ok := strings.Cut(string(b), ":")
	if !ok || v != cursorVersion {
		return Cursor{}, bad
	}
	at, id, ok := strings.Cut(rest, ":")
	if !ok || id == "" {
		return Cursor{}, bad
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return Cursor{}, bad
	}
	return Cursor{StoredAt: n, ID: id}, nil
}
