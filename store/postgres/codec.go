package postgres

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/levee-mail/levee/store"
)

// clean makes s storable in a text or jsonb column: PostgreSQL rejects NUL
// bytes in both and invalid UTF-8 in a UTF8 database. NUL bytes go first,
// then each invalid sequence becomes U+FFFD — the form storetest accepts.
func clean(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
}

// storable tells whether s can be stored as it is. Keys (message ids) must
// be: cleaning one could make two different ids the same.
func storable(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// addressKey is the stored form of a mailbox address, for writes and look-ups alike.
func addressKey(s string) string {
	return clean(strings.ToLower(s))
}

// jsonStrings encodes a list for a jsonb column, [] for none.
func jsonStrings(list []string) string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = clean(s)
	}
	return mustJSON(out)
}

// jsonHeaders encodes headers for a jsonb column. Keys are cleaned too;
// keys that become equal keep all their values, in key order.
func jsonHeaders(h map[string][]string) string {
	out := make(map[string][]string, len(h))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		ck := clean(k)
		for _, v := range h[k] {
			out[ck] = append(out[ck], clean(v))
		}
		if out[ck] == nil {
			out[ck] = []string{}
		}
	}
	return mustJSON(out)
}

// mustJSON marshals values that cannot fail to marshal (strings, maps of
// string slices).
func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("postgres: marshal %T: %v", v, err))
	}
	return string(b)
}

// The years a time may have to be stored. PostgreSQL's timestamptz runs
// from 4713 BC to 294276 AD, and pgx's encoding overflows a little before
// that; only a hand-built time could lie outside, and it is kept as no time.
const (
	minYear = -4700
	maxYear = 290000
)

// timestamp is the column value of t: NULL for the zero time.
func timestamp(t time.Time) pgtype.Timestamptz {
	if t.IsZero() || t.Year() < minYear || t.Year() > maxYear {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: t, Valid: true}
}

// fromTimestamp is the time.Time of a column value, in UTC like the SQLite
// backend's (pgx returns local time).
func fromTimestamp(ts pgtype.Timestamptz) time.Time {
	if !ts.Valid || ts.InfinityModifier != pgtype.Finite {
		return time.Time{}
	}
	return ts.Time.UTC()
}

// decodeCursor rejects what this backend could not even bind (a time
// outside timestamptz's range, an id that is not text) besides what
// store.DecodeCursor rejects, so that a forged cursor is a 400 and never a
// database error.
func decodeCursor(s string) (store.Cursor, error) {
	c, err := store.DecodeCursor(s)
	if err != nil {
		return c, err
	}
	if y := time.UnixMicro(c.StoredAt).Year(); !storable(c.ID) || y < minYear || y > maxYear {
		return store.Cursor{}, fmt.Errorf("%w: cursor %q", store.ErrInvalid, s)
	}
	return c, nil
}

// nonNil keeps a nil slice from binding as NULL in a NOT NULL bytea column.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
