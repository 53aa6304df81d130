package web

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaultsAreValid(t *testing.T) {
	c := Config{}.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if c.Addr != "127.0.0.1:8025" {
		t.Errorf("Addr = %q, want 127.0.0.1:8025", c.Addr)
	}
	if c.ReadHeaderTimeout <= 0 || c.WriteTimeout <= 0 || c.ReadyTimeout >= c.WriteTimeout {
		t.Errorf("timeouts: %+v", c)
	}
	// Set fields are kept.
	c = Config{Addr: ":9000", WriteTimeout: time.Minute}.WithDefaults()
	if c.Addr != ":9000" || c.WriteTimeout != time.Minute {
		t.Errorf("WithDefaults overrode set fields: %+v", c)
	}
}

func TestConfigValidateNamesKey(t *testing.T) {
	for _, tc := range []struct {
		key    string
		mutate func(*Config)
	}{
		{"http.addr", func(c *Config) { c.Addr = "localhost" }},
		{"http.addr", func(c *Config) { c.Addr = "127.0.0.1:" }},
		{"http.read_header_timeout", func(c *Config) { c.ReadHeaderTimeout = -time.Second }},
		{"http.read_timeout", func(c *Config) { c.ReadTimeout = -1 }},
		{"http.read_timeout", func(c *Config) { c.ReadTimeout = time.Second; c.ReadHeaderTimeout = 2 * time.Second }},
		{"http.write_timeout", func(c *Config) { c.WriteTimeout = -1 }},
		{"http.idle_timeout", func(c *Config) { c.IdleTimeout = -1 }},
		{"http.max_header_bytes", func(c *Config) { c.MaxHeaderBytes = 100 }},
		{"http.ready_timeout", func(c *Config) { c.ReadyTimeout = -1 }},
		{"http.ready_timeout", func(c *Config) { c.ReadyTimeout = c.WriteTimeout }},
		{"http.queue_status_timeout", func(c *Config) { c.QueueStatusTimeout = -1 }},
		{"http.queue_status_timeout", func(c *Config) { c.QueueStatusTimeout = 2 * c.WriteTimeout }},
	} {
		c := Config{}.WithDefaults()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.key+":") {
			t.Errorf("%s: Validate() = %v, want an error naming the key", tc.key, err)
		}
	}
}
