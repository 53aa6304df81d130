package sqlite

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Path: "x.db"}.WithDefaults()
	if c.BusyTimeout != DefaultBusyTimeout || c.MaxOpenConns != DefaultMaxOpenConns || c.Path != "x.db" {
		t.Fatalf("WithDefaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(defaults) = %v", err)
	}
	set := Config{Path: "x.db", BusyTimeout: time.Second, MaxOpenConns: 9}
	if got := set.WithDefaults(); got != set {
		t.Fatalf("WithDefaults changed set fields: %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Path: "data/levee.db"}.WithDefaults()
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		key    string
	}{
		{"empty path", func(c *Config) { c.Path = "" }, "store.sqlite.path:"},
		{"memory", func(c *Config) { c.Path = ":memory:" }, "store.sqlite.path:"},
		{"uri", func(c *Config) { c.Path = "file:levee.db" }, "store.sqlite.path:"},
		{"query", func(c *Config) { c.Path = "levee.db?_txlock=deferred" }, "store.sqlite.path:"},
		{"negative busy", func(c *Config) { c.BusyTimeout = -time.Second }, "store.sqlite.busy_timeout:"},
		{"sub-ms busy", func(c *Config) { c.BusyTimeout = time.Microsecond }, "store.sqlite.busy_timeout:"},
		{"no conns", func(c *Config) { c.MaxOpenConns = 0 }, "store.sqlite.max_open_conns:"},
		{"negative conns", func(c *Config) { c.MaxOpenConns = -1 }, "store.sqlite.max_open_conns:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tc.key) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.key)
			}
		})
	}
}

func TestOpenRejectsInvalidConfig(t *testing.T) {
	if _, err := Open(t.Context(), Config{Path: ":memory:"}); err == nil {
		t.Fatal("Open(:memory:) succeeded")
	}
}
