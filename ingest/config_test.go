package ingest

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Domains: []string{" Example.COM. "}}.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	want := Config{
		Addr: "127.0.0.1:2525", Hostname: c.Hostname, Domains: []string{"example.com"},
		MaxMessageBytes: 10 << 20, MaxRecipients: 100, MaxLineLength: 1 << 20,
		ReadTimeout: 2 * time.Minute, WriteTimeout: time.Minute, PublishTimeout: 30 * time.Second,
		MinDataRate: 500, MaxSessionDuration: time.Hour, StressTimeout: 10 * time.Second, MaxBytesInFlight: 128 << 20,
		MaxConnections: 1000, MaxConnectionsPerIP: 100, HighWatermark: 0.9, LowWatermark: 0.8,
	}
	if c.Hostname == "" {
		t.Error("no default hostname")
	}
	if got, w := strings.Join(c.Domains, ","), strings.Join(want.Domains, ","); got != w {
		t.Errorf("domains %q, want %q", got, w)
	}
	if !configEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

// configEqual compares every field but the domain list (compared apart).
func configEqual(a, b Config) bool {
	a.Domains, b.Domains = nil, nil
	return reflect.DeepEqual(a, b)
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		key    string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"accept all without domains", func(c *Config) { c.Domains = nil; c.AcceptAllDomains = true }, ""},
		{"no domains", func(c *Config) { c.Domains = nil }, "smtp.domains"},
		{"bad domain", func(c *Config) { c.Domains = []string{"exa mple.com"} }, "smtp.domains"},
		{"bad hostname", func(c *Config) { c.Hostname = "bad host" }, "smtp.hostname"},
		{"negative size", func(c *Config) { c.MaxMessageBytes = -1 }, "smtp.max_message_bytes"},
		{"size over uint32", func(c *Config) { c.MaxMessageBytes = 1 << 33 }, "smtp.max_message_bytes"},
		{"recipients", func(c *Config) { c.MaxRecipients = -1 }, "smtp.max_recipients"},
		{"line length below RFC", func(c *Config) { c.MaxLineLength = 512 }, "smtp.max_line_length"},
		{"read timeout", func(c *Config) { c.ReadTimeout = -time.Second }, "smtp.read_timeout"},
		{"write timeout", func(c *Config) { c.WriteTimeout = -time.Second }, "smtp.write_timeout"},
		{"publish timeout", func(c *Config) { c.PublishTimeout = -time.Second }, "smtp.publish_timeout"},
		{"connections", func(c *Config) { c.MaxConnections = -1 }, "smtp.max_connections"},
		{"per IP above total", func(c *Config) { c.MaxConnections, c.MaxConnectionsPerIP = 5, 10 }, "smtp.max_connections_per_ip"},
		{"low above high", func(c *Config) { c.HighWatermark, c.LowWatermark = 0.5, 0.6 }, "smtp.low_watermark"},
		{"low equals high", func(c *Config) { c.HighWatermark, c.LowWatermark = 0.5, 0.5 }, "smtp.low_watermark"},
		{"high negative", func(c *Config) { c.HighWatermark = -1 }, "smtp.high_watermark"},
		{"high above 1", func(c *Config) { c.HighWatermark = 2 }, "smtp.high_watermark"},
		{"data rate", func(c *Config) { c.MinDataRate = -1 }, "smtp.min_data_rate"},
		{"memory budget under two messages", func(c *Config) { c.MaxBytesInFlight = c.MaxMessageBytes }, "smtp.max_bytes_in_flight"},
		{"session duration", func(c *Config) { c.MaxSessionDuration = -time.Second }, "smtp.max_session_duration"},
		{"stress timeout", func(c *Config) { c.StressTimeout = -time.Second }, "smtp.stress_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := baseConfig().WithDefaults()
			tc.mutate(&c)
			err := c.Validate()
			if tc.key == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.key+":") || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v, want one naming %s", err, tc.key)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Config{}, &fakePublisher{}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "smtp.domains") {
		t.Errorf("New without domains: %v", err)
	}
	if _, err := New(baseConfig(), nil, nil, nil, nil); err == nil {
		t.Error("New with a nil Publisher succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(baseConfig(), &fakePublisher{}, nil, reg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := New(baseConfig(), &fakePublisher{}, nil, reg, nil); err == nil {
		t.Error("second New on the same registry: want a registration error")
	}
}

func TestStartListensOnAddr(t *testing.T) {
	srv, addr := startServer(t, baseConfig(), &fakePublisher{}, nil)
	if srv.Addr() == nil || !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Fatalf("Addr() = %v", srv.Addr())
	}
	c := dial(t, addr)
	r := c.expect("", "220")
	if !strings.Contains(r.text, "mx.test") {
		t.Errorf("greeting %q does not name the hostname", r.text)
	}
	r = c.expect("EHLO client.example", "250")
	caps := strings.Join(r.lines, "\n")
	for _, want := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 10485760", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(caps, want) {
			t.Errorf("EHLO lacks %s:\n%s", want, caps)
		}
	}
	if strings.Contains(caps, "AUTH") {
		t.Errorf("EHLO offers AUTH on an inbound MX:\n%s", caps)
	}
}
