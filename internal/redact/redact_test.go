package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://levee:s3cret@db:5432/levee?sslmode=disable", "postgres://levee:xxxxx@db:5432/levee?sslmode=disable"},
		{"nats://user:pw@127.0.0.1:4222", "nats://user:xxxxx@127.0.0.1:4222"},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"postgres://levee@db/levee", "postgres://levee@db/levee"},
		{"./levee-data/levee.db", "./levee-data/levee.db"},
		{"", ""},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := URL("postgres://u:p%zz@h/db"); strings.Contains(got, "p%zz") {
		t.Errorf("an unparsable URL showed its password: %q", got)
	}
}
