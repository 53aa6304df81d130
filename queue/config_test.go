package queue

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{DataDir: "x"}.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.Stream != "LEVEE_MAIL" || c.SubjectPrefix != "levee.mail" || c.DeadStream != "LEVEE_DEAD" || c.Durable != "levee-workers" {
		t.Errorf("names: %+v", c)
	}
	if c.Host != "127.0.0.1" || c.Port != -1 {
		t.Errorf("listen: %s:%d, want 127.0.0.1:-1", c.Host, c.Port)
	}
	if c.MaxMsgs != 1_000_000 || c.MaxBytes != 1<<30 || c.MaxAge != 7*24*time.Hour || c.DuplicateWindow != 10*time.Minute {
		t.Errorf("limits: %+v", c)
	}
	if c.MaxMsgSize <= 10<<20+64<<10 {
		t.Errorf("max_msg_size %d must exceed SMTP SIZE 10MiB plus headers", c.MaxMsgSize)
	}
	if c.AckWait != 30*time.Second || c.MaxDeliver != 8 || c.MaxAckPending != 1000 || c.MaxBatch != 50 || c.PublishTimeout != 10*time.Second {
		t.Errorf("consumer/publisher: %+v", c)
	}
	if len(c.Backoff) != 4 || c.Backoff[3] != 2*time.Minute {
		t.Errorf("backoff: %v", c.Backoff)
	}
	if c.SyncAlways {
		t.Error("WithDefaults must not turn SyncAlways on (false is a choice)")
	}
	if !DefaultConfig().SyncAlways {
		t.Error("DefaultConfig must have SyncAlways")
	}
	if (Config{}).WithDefaults().DataDir != "" {
		t.Error("DataDir is derived by the caller, not defaulted")
	}
	// WithDefaults must not share the package's default backoff slice.
	c.Backoff[0] = time.Hour
	if DefaultBackoff[0] != time.Second {
		t.Error("WithDefaults aliased DefaultBackoff")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		key    string
		mutate func(*Config)
	}{
		{"queue.data_dir", func(c *Config) { c.DataDir = "" }},
		{"queue.nats_url", func(c *Config) { c.URL = "localhost:4222" }},
		{"queue.port", func(c *Config) { c.Port = 70000 }},
		{"queue.stream", func(c *Config) { c.Stream = "a.b" }},
		{"queue.subject_prefix", func(c *Config) { c.SubjectPrefix = "levee.*" }},
		{"queue.subject_prefix", func(c *Config) { c.SubjectPrefix = "levee..mail" }},
		{"queue.max_msgs", func(c *Config) { c.MaxMsgs = -1 }},
		{"queue.max_bytes", func(c *Config) { c.MaxBytes = -5 }},
		{"queue.max_age", func(c *Config) { c.MaxAge = -time.Second }},
		{"queue.max_msg_size", func(c *Config) { c.MaxMsgSize = 100 }},
		{"queue.max_msg_size", func(c *Config) { c.MaxMsgSize = 64 << 20 }},
		{"queue.max_msg_size", func(c *Config) { c.MaxBytes = 1 << 20; c.MaxMsgSize = 2 << 20 }},
		// Each of 4 partitions holds a quarter of max_bytes: 2 MiB mail does not fit in 1 MiB.
		{"queue.max_msg_size", func(c *Config) { c.Partitions = 4; c.MaxBytes = 4 << 20; c.MaxMsgSize = 2 << 20 }},
		{"queue.duplicate_window", func(c *Config) { c.MaxAge = time.Minute; c.DuplicateWindow = time.Hour }},
		{"queue.replicas", func(c *Config) { c.Replicas = 3 }},
		{"queue.replicas", func(c *Config) { c.URL = "nats://x:4222"; c.Replicas = 7 }},
		{"queue.durable", func(c *Config) { c.Durable = "a b" }},
		{"queue.ack_wait", func(c *Config) { c.AckWait = time.Millisecond }},
		{"queue.max_deliver", func(c *Config) { c.MaxDeliver = -1 }},
		{"queue.backoff", func(c *Config) { c.Backoff = []time.Duration{time.Second, 0} }},
		{"queue.max_ack_pending", func(c *Config) { c.MaxAckPending = -1 }},
		{"queue.dead_stream", func(c *Config) { c.DeadStream = c.Stream }},
		{"queue.dead_subject_prefix", func(c *Config) { c.DeadSubjectPrefix = "levee.mail.dead" }},
		{"queue.publish_timeout", func(c *Config) { c.PublishTimeout = -time.Second }},
		{"queue.max_batch", func(c *Config) { c.MaxBatch = 1001 }},
	}
	for _, tt := range tests {
		c := Config{DataDir: "x"}.WithDefaults()
		tt.mutate(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tt.key+":") {
			t.Errorf("%s: got %v, want an error naming %s", tt.key, err, tt.key)
		}
	}
	ext := Config{URL: "nats://nats:4222", Replicas: 3}.WithDefaults()
	if err := ext.Validate(); err != nil {
		t.Errorf("external cluster config: %v", err)
	}
}

func TestConsumerConfigBackoffFollowsAckWait(t *testing.T) {
	c := Config{DataDir: "x"}.WithDefaults()
	cc := c.consumerConfig(c.Layout()[0])
	if cc.MaxDeliver != -1 {
		t.Errorf("server MaxDeliver = %d, want -1 (the worker dead-letters)", cc.MaxDeliver)
	}
	want := []time.Duration{31 * time.Second, 35 * time.Second, 60 * time.Second, 150 * time.Second}
	if len(cc.BackOff) != len(want) {
		t.Fatalf("backoff %v, want %v", cc.BackOff, want)
	}
	for i := range want {
		if cc.BackOff[i] != want[i] {
			t.Errorf("backoff[%d] = %s, want %s", i, cc.BackOff[i], want[i])
		}
	}
	if cc.AckWait != want[0] {
		t.Errorf("ack wait %s, want %s (the server takes BackOff[0])", cc.AckWait, want[0])
	}
}
