package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/app"
	"github.com/levee-mail/levee/internal/config"
)

func load(t *testing.T, args []string, env []string) (app.Config, error) {
	t.Helper()
	cfg, err := loadConfig("test", io.Discard, args, env)
	if err == nil {
		err = cfg.Finish()
	}
	return cfg, err
}

func TestConfigPrecedenceFileEnvFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "levee.yaml")
	yaml := "data_dir: /tmp/from-file\nsmtp:\n  addr: 127.0.0.1:1111\n  domains: [a.test, b.test]\n  max_recipients: 7\nqueue:\n  max_msgs: 10\n  max_bytes: 2GiB\n  max_age: 48h\nworker:\n  concurrency: 3\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := load(t,
		[]string{"--config", path, "--queue-max-msgs", "30", "--workers", "0"},
		[]string{"LEVEE_QUEUE_MAX_MSGS=20", "LEVEE_SMTP_ADDR=127.0.0.1:2222", "HOME=/root"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		key       string
		got, want any
	}{
		{"data_dir (file)", cfg.DataDir, "/tmp/from-file"},
		{"smtp.addr (env beats file)", cfg.SMTP.Addr, "127.0.0.1:2222"},
		{"smtp.domains (file list)", strings.Join(cfg.SMTP.Domains, ","), "a.test,b.test"},
		{"smtp.max_recipients (file)", cfg.SMTP.MaxRecipients, 7},
		{"queue.max_msgs (flag beats env and file)", cfg.Queue.MaxMsgs, int64(30)},
		{"queue.max_bytes (size suffix)", cfg.Queue.MaxBytes, int64(2 << 30)},
		{"queue.max_age", cfg.Queue.MaxAge, 48 * time.Hour},
		{"worker.concurrency (flag 0 pauses)", cfg.Worker.Concurrency, 0},
		{"queue data dir derived", cfg.Queue.DataDir, "/tmp/from-file/jetstream"},
		{"store derived", cfg.Store, "/tmp/from-file/levee.db"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.key, c.got, c.want)
		}
	}
}

func TestConfigInvalidValuesNameTheKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte("queue:\n  max_bytes: lots\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(t.TempDir(), "unknown.yaml")
	if err := os.WriteFile(unknown, []byte("smtp:\n  adress: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		env      []string
		wantText string
	}{
		{"flag duration", []string{"--smtp-read-timeout", "soon"}, nil, "smtp.read_timeout"},
		{"flag integer", []string{"--queue-max-msgs", "many"}, nil, "queue.max_msgs"},
		{"env bool", nil, []string{"LEVEE_QUEUE_SYNC_ALWAYS=maybe"}, "LEVEE_QUEUE_SYNC_ALWAYS"},
		{"file size", []string{"--config", path}, nil, "queue.max_bytes"},
		{"file unknown key", []string{"--config", unknown}, nil, "smtp.adress"},
		{"negative workers", []string{"--workers", "-1"}, nil, "worker.concurrency"},
		{"no domains", []string{"--domains", ""}, nil, "smtp.domains"},
		{"watermarks inverted", []string{"--smtp-high-watermark", "0.5", "--smtp-low-watermark", "0.8"}, nil, "watermark"},
		{"log level", []string{"--log-level", "loud"}, nil, "log_level"},
		{"queue smaller than SIZE", []string{"--smtp-max-message-bytes", "64MiB"}, nil, "queue.max_msg_size"},
		{"stray argument", []string{"extra"}, nil, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.args, tc.env)
			if err == nil {
				t.Fatalf("accepted invalid config %v %v", tc.args, tc.env)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("error %q does not name %q", err, tc.wantText)
			}
		})
	}
}

func TestHelpListsEveryFlagWithDefaultAndEnv(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"help"}, nil, &out, io.Discard); code != 0 {
		t.Fatalf("levee help exited %d", code)
	}
	help := out.String()
	cfg := app.DefaultConfig()
	for _, k := range config.Keys(&cfg) {
		if !strings.Contains(help, "-"+k.Flag) || !strings.Contains(help, k.Env) {
			t.Errorf("help lacks flag -%s or env %s", k.Flag, k.Env)
		}
	}
	for _, must := range []string{"-config", "-smtp-addr", "-http-addr", "-data-dir", "-nats-url", "-store", "-domains", "-queue-max-msgs", "-queue-max-bytes", "-workers", `default "127.0.0.1:2525"`} {
		if !strings.Contains(help, must) {
			t.Errorf("help lacks %q", must)
		}
	}
	var serveHelp bytes.Buffer
	if code := run([]string{"serve", "--help"}, nil, io.Discard, &serveHelp); code != 0 {
		t.Fatalf("levee serve --help exited %d", code)
	}
	if !strings.Contains(serveHelp.String(), "LEVEE_QUEUE_MAX_BYTES") {
		t.Errorf("serve --help lacks env names:\n%s", serveHelp.String())
	}
}

// TestStoreRefusesUnknownSchemes: a store URL of a kind Levee does not speak
// fails at start naming the accepted forms; it used to become a SQLite file
// named after the URL (--store mysql://x made the directory "mysql:").
func TestStoreRefusesUnknownSchemes(t *testing.T) {
	for _, store := range []string{"mysql://u:secret@db/x", "sqlite:///tmp/x.db", "Postgres+ssl://x", "redis://x"} {
		t.Run(store, func(t *testing.T) {
			dir := t.TempDir()
			_, err := load(t, []string{"--data-dir", dir, "--store", store}, nil)
			if err == nil {
				t.Fatalf("--store %s accepted", store)
			}
			for _, want := range []string{"store:", "postgres://", "postgresql://", "SQLite file path"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
	for _, store := range []string{"postgresql://u@db/x", "postgres://u@db/x", "mail/levee.db", "/var/lib/levee/levee.db", "levee:2.db"} {
		if _, err := load(t, []string{"--data-dir", t.TempDir(), "--store", store}, nil); err != nil {
			t.Errorf("--store %s refused: %v", store, err)
		}
	}
}

// TestUnknownFlagIsOneLine: a mistyped flag gets its error and where to
// look, not every flag there is (levee serve printed 93 lines).
func TestUnknownFlagIsOneLine(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--bogus"},
		{"worker", "--smtp-adr", "x"},
		{"loadtest", "--bogus"},
		{"queue", "status", "--bogus"},
		{"queue", "limits", "set", "--bogus"},
		{"dlq", "list", "--bogus"},
		{"dlq", "show", "7", "--bogus"},
	} {
		var out, errOut bytes.Buffer
		code := run(args, nil, &out, &errOut)
		msg := strings.TrimRight(errOut.String(), "\n")
		cmd := "levee " + args[0]
		if code != 2 || strings.Count(msg, "\n") > 0 || !strings.Contains(msg, "flag provided but not defined") ||
			!strings.Contains(msg, "--help") || !strings.HasPrefix(msg, cmd) || out.Len() > 0 {
			t.Errorf("levee %s: exit %d, stdout %d bytes, stderr:\n%s\nwant exit 2 and one line: the error and a hint", strings.Join(args, " "), code, out.Len(), msg)
		}
	}
	// --help still shows every flag.
	var errOut bytes.Buffer
	if code := run([]string{"queue", "status", "--help"}, nil, io.Discard, &errOut); code != 0 || !strings.Contains(errOut.String(), "-interval") {
		t.Errorf("queue status --help: exit %d:\n%s", code, errOut.String())
	}
}

// TestHelpSaysWhoseFlagsTheyAre: the role commands share the config flags;
// loadtest, queue and dlq have their own, and the usage says how to see
// them; --target is optional (it has a default).
func TestHelpSaysWhoseFlagsTheyAre(t *testing.T) {
	var out bytes.Buffer
	run([]string{"help"}, nil, &out, io.Discard)
	help := out.String()
	if strings.Contains(help, "Every command takes the same flags") {
		t.Errorf("levee help says every command takes the same flags:\n%s", help)
	}
	for _, want := range []string{"serve, smtpd, worker and web", "levee loadtest --help", "levee queue help", "levee dlq help"} {
		if !strings.Contains(help, want) {
			t.Errorf("levee help lacks %q", want)
		}
	}
	var errOut bytes.Buffer
	run([]string{"loadtest", "--help"}, nil, io.Discard, &errOut)
	first, _, _ := strings.Cut(errOut.String(), "\n")
	if !strings.Contains(first, "[--target HOST:PORT]") {
		t.Errorf("loadtest usage line marks --target as required: %q", first)
	}
}
