package sqlite

import (
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/levee-mail/levee/store"
)

// Times are microseconds since the Unix epoch (see the first migration). The
// range of int64 microseconds is about ±292,000 years; a time outside the
// years -290000..290000 (only a hand-built one could be) is kept as no time.
func micros(t time.Time) sql.NullInt64 {
	if t.IsZero() || t.Year() < -290000 || t.Year() > 290000 {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromMicros(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.UnixMicro(n.Int64).UTC()
}

// jsonText encodes a column stored as JSON. encoding/json replaces invalid
// UTF-8 with U+FFFD, which the suite allows for parsed fields.
func jsonText(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// cursor is the position of the last summary on a page: listing goes on
// below (stored_at, message_id). It is opaque to clients; the version prefix
// lets a later format reject (rather than misread) an old one.
type cursor struct {
	storedAt int64
	id       string
}

const cursorVersion = "1"

func (c cursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorVersion + ":" + strconv.FormatInt(c.storedAt, 10) + ":" + c.id))
}

func decodeCursor(s string) (cursor, error) {
	bad := fmt.Errorf("%w: cursor %q", store.ErrInvalid, s)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, bad
	}
	v, rest, ok := strings.Cut(string(b), ":")
	if !ok || v != cursorVersion {
		return cursor{}, bad
	}
	at, id, ok := strings.Cut(rest, ":")
	if !ok || id == "" {
		return cursor{}, bad
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return cursor{}, bad
	}
	return cursor{storedAt: n, id: id}, nil
}
