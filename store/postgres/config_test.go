package postgres

import (
	"strings"
	"testing"
	"time"
)

const exampleURL = "postgres://levee:s3cret@db.example:5432/levee?sslmode=disable"

func TestConfigDefaults(t *testing.T) {
	c := Config{URL: exampleURL}.WithDefaults()
	if c.MaxConns != DefaultMaxConns || c.ReadMaxConns != DefaultReadMaxConns || c.ConnectTimeout != DefaultConnectTimeout || c.URL != exampleURL {
		t.Fatalf("WithDefaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(defaults) = %v", err)
	}
	set := Config{URL: exampleURL, MaxConns: 3, ReadMaxConns: 2, ConnectTimeout: time.Second}
	if got := set.WithDefaults(); got != set {
		t.Fatalf("WithDefaults changed set fields: %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{URL: exampleURL}.WithDefaults()
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		key    string
	}{
		{"empty url", func(c *Config) { c.URL = "" }, "store.url:"},
		{"sqlite path", func(c *Config) { c.URL = "./levee-data/levee.db" }, "store.url:"},
		{"bad port", func(c *Config) { c.URL = "postgres://levee:s3cret@db.example:notaport/levee" }, "store.url:"},
		{"bad param", func(c *Config) { c.URL = "postgres://levee:s3cret@db.example/levee?connect_timeout=soon" }, "store.url:"},
		{"no conns", func(c *Config) { c.MaxConns = 0 }, "store.max_conns:"},
		{"negative conns", func(c *Config) { c.MaxConns = -1 }, "store.max_conns:"},
		{"negative read conns", func(c *Config) { c.ReadMaxConns = -1 }, "store.read_max_conns:"},
		{"negative timeout", func(c *Config) { c.ConnectTimeout = -time.Second }, "store.connect_timeout:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.HasPrefix(err.Error(), tc.key) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.key)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Validate error shows the password: %v", err)
			}
		})
	}
}

func TestIsURL(t *testing.T) {
	for s, want := range map[string]bool{
		"postgres://h/db":          true,
		"postgresql://u@h:5/db":    true,
		"./levee-data/levee.db":    false,
		"/var/lib/levee/levee.db":  false,
		"host=localhost dbname=db": false, // keyword/value DSNs are not taken
	} {
		if got := IsURL(s); got != want {
			t.Errorf("IsURL(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestPoolConfig(t *testing.T) {
	pc, err := Config{URL: exampleURL, MaxConns: 7, ConnectTimeout: 3 * time.Second}.poolConfig()
	if err != nil {
		t.Fatal(err)
	}
	params := pc.ConnConfig.RuntimeParams
	if pc.MaxConns != 7 || pc.ConnConfig.ConnectTimeout != 3*time.Second || params["application_name"] != "levee" {
		t.Errorf("pool config: max %d, connect timeout %v, params %v", pc.MaxConns, pc.ConnConfig.ConnectTimeout, params)
	}
	if got := target(pc); got != "postgres://levee@db.example:5432/levee" {
		t.Errorf("target = %q, want the database without the password", got)
	}

	// What the URL says explicitly wins over the defaults.
	pc, err = Config{
		URL:            exampleURL + "&connect_timeout=9&application_name=mx&pool_max_conns=99",
		MaxConns:       7,
		ConnectTimeout: 3 * time.Second,
	}.poolConfig()
	if err != nil {
		t.Fatal(err)
	}
	params = pc.ConnConfig.RuntimeParams
	if pc.ConnConfig.ConnectTimeout != 9*time.Second || params["application_name"] != "mx" {
		t.Errorf("URL settings not kept: connect timeout %v, params %v", pc.ConnConfig.ConnectTimeout, params)
	}
	if pc.MaxConns != 7 {
		t.Errorf("MaxConns = %d, want store.max_conns (7) to win over pool_max_conns", pc.MaxConns)
	}
}

func TestOpenRejectsInvalidConfig(t *testing.T) {
	start := time.Now()
	_, err := Open(t.Context(), Config{URL: "levee.db"})
	if err == nil || !strings.HasPrefix(err.Error(), "store.url:") {
		t.Fatalf("Open(levee.db) = %v, want a store.url error", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Open of an invalid config took %v: it should not connect", d)
	}
}
