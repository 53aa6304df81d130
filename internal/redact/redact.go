package redact

import "net/url"

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
