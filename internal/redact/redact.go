package redact

import (
	"log/slog"
	"net/url"
)

// URL returns s with its password replaced by "xxxxx". A string that is not
// a URL with credentials (a SQLite file path, say) comes back unchanged;
// one that cannot be parsed is not shown at all, since it may hold a secret.
func URL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, ok := u.User.Password(); !ok {
		return s
	}
	return u.Redacted()
}

// Secret is a string that does not show itself: a password read from the
// config prints, formats and logs as "xxxxx" (or "" when empty). Take the
// value with string(s) where it is used, and nowhere else.
type Secret string

// String hides the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "xxxxx"
}

// GoString hides the value from %#v too.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// LogValue hides the value from log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText hides the value from encoding/json, YAML and the like.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
