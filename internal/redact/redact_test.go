package redact

import (
	"encoding/json"
	"fmt"
	"log/slog"
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

func TestSecretDoesNotShow(t *testing.T) {
	type cfg struct {
		User     string
		Password Secret
	}
	c := cfg{User: "levee", Password: "s3cret"}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "cfg", c, "password", c.Password)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", c, "password", c.Password)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, shown := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c.Password), logged.String(), string(js)} {
		if strings.Contains(shown, "s3cret") {
			t.Errorf("the secret shows: %s", shown)
		}
	}
	if string(c.Password) != "s3cret" {
		t.Errorf("string(Secret) = %q, want the value", string(c.Password))
	}
	if got := fmt.Sprint(Secret("")); got != "" {
		t.Errorf("an empty Secret prints %q, want nothing", got)
	}
}
