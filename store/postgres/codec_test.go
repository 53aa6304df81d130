package postgres

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/store"
)

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"plain":              "plain",
		"caf\u00e9":          "caf\u00e9",
		"a\x00b":             "ab",
		"caf\xe9":            "caf\uFFFD",
		"\xff\xfe x":         "\uFFFD x", // one U+FFFD per run of invalid bytes
		"\xc3\x00\xa9":       "\u00e9",   // NUL dropped first, as storetest expects
		"\x00":               "",
		"ok\u2028\U0001F4E7": "ok\u2028\U0001F4E7",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrefixCountsCharacters(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 2, "ab"},
		{"abc", 5, "abc"},
		{"\u00e9\u00e9\u00e9", 2, "\u00e9\u00e9"},
		{"x", 0, ""},
	} {
		if got := prefix(tc.in, tc.n); got != tc.want {
			t.Errorf("prefix(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
	// The indexed prefix of the longest Message-ID fits a btree entry.
	if n := len(prefix(strings.Repeat("\U0001F4E7", 1000), messageIDPrefix)); n > 2000 {
		t.Errorf("a %d-character prefix is %d bytes", messageIDPrefix, n)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	c := store.Cursor{StoredAt: time.Date(2024, 11, 26, 10, 0, 0, 123456000, time.UTC).UnixMicro(), ID: "id:with:colons"}
	got, err := decodeCursor(c.Encode())
	if err != nil || got != c {
		t.Fatalf("decodeCursor(encode(%+v)) = %+v, %v", c, got, err)
	}
	for _, bad := range []string{
		store.Cursor{StoredAt: 1, ID: "a\x00b"}.Encode(),                     // an id PostgreSQL cannot bind
		store.Cursor{StoredAt: 291000 * 365 * 86400 * 1e6, ID: "x"}.Encode(), // beyond timestamptz
		store.Cursor{StoredAt: -10000 * 366 * 86400 * 1e6, ID: "x"}.Encode(), // before timestamptz
		"MTp4Ong", // "1:x:x"
		"Mjox",    // "2:1"
	} {
		if _, err := decodeCursor(bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("decodeCursor(%q) = %v, want store.ErrInvalid", bad, err)
		}
	}
}
