package sqlite

import (
	"database/sql"
	"encoding/json"
	"time"
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
