package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/levee-mail/levee/queue"
)

// TestQueueToolsAuthenticateToNATS: `levee queue` and `levee dlq` with
// --nats-url take the server's own credentials keys, as flags
// (--nats-user, --nats-password ...) or as the server's environment
// variables (LEVEE_QUEUE_NATS_*), and say what is wrong when they are
// missing, without showing the password.
func TestQueueToolsAuthenticateToNATS(t *testing.T) {
	const user, password = "levee-ops", "ops-s3cret-91c4"
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(), MaxPayload: 32 << 20,
		NoSigs: true, NoLog: true,
		Users: []*server.User{{Username: user, Password: password}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	url := srv.ClientURL()

	// A Levee on that server sets up the streams the tools look at.
	cfg := queue.DefaultConfig()
	cfg.URL, cfg.Partitions = url, 1
	cfg.Security = queue.Security{User: user, Password: password}
	q, err := queue.Open(context.Background(), cfg, nil, nil)
	if err != nil {
		t.Fatalf("queue.Open: %v", err)
	}
	t.Cleanup(func() { _ = q.Close(context.Background()) })

	limits := []string{"queue", "limits", "--json", "--nats-url", url}
	for _, tc := range []struct {
		name      string
		args, env []string
		want      string // in stderr; "" for success
	}{
		{"server's environment", nil, []string{"LEVEE_QUEUE_NATS_USER=" + user, "LEVEE_QUEUE_NATS_PASSWORD=" + password}, ""},
		{"flags", []string{"--nats-user", user, "--nats-password", password}, nil, ""},
		{"flag beats environment", []string{"--nats-password", password}, []string{"LEVEE_QUEUE_NATS_USER=" + user, "LEVEE_QUEUE_NATS_PASSWORD=wrong"}, ""},
		{"none", nil, nil, "the server wants credentials"},
		{"wrong password", nil, []string{"LEVEE_QUEUE_NATS_USER=" + user, "LEVEE_QUEUE_NATS_PASSWORD=wrong-" + password}, "refused the credentials of queue.nats_user, queue.nats_password"},
		{"password without user", []string{"--nats-password", password}, nil, "queue.nats_user: must be set with queue.nats_password"},
		{"credentials without --nats-url", []string{"--nats-creds", "/nonexistent.creds"}, nil, "--nats-creds: only with --nats-url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string(nil), limits...), tc.args...)
			if tc.name == "credentials without --nats-url" {
				args = append([]string{"queue", "limits", "--server", "http://127.0.0.1:1"}, tc.args...)
			}
			var out, errOut bytes.Buffer
			code := run(args, tc.env, &out, &errOut)
			if strings.Contains(out.String()+errOut.String(), password) {
				t.Errorf("the password shows:\n%s%s", out.String(), errOut.String())
			}
			if tc.want == "" {
				if code != 0 || !strings.Contains(out.String(), `"max_msgs"`) {
					t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
				}
				return
			}
			if code == 0 || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want a failure saying %q", code, errOut.String(), tc.want)
			}
		})
	}
}
