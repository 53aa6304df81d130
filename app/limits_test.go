package app_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/levee-mail/levee/app"
	"github.com/levee-mail/levee/app/apptest"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/admin"
)

// TestReceiverStartWarnsWhenLiveMaxMsgSizeWouldBounce: live limits outlast
// restarts, so a receiver starting under a max_msg_size forced below its
// SIZE says loudly that the mail between the two will bounce; with a SIZE
// that fits, it says nothing.
func TestReceiverStartWarnsWhenLiveMaxMsgSizeWouldBounce(t *testing.T) {
	cfg := apptest.Config(t)
	l := apptest.Start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := l.Admin.UpdateLimits(ctx, admin.LimitsChange{MaxMsgSize: 1 << 20, Force: true}); err != nil {
		t.Fatal(err)
	}
	startReceiver := func(size int64) string {
		t.Helper()
		rc := cfg
		rc.DataDir = t.TempDir()
		rc.Queue.URL = l.Queue.Server().ClientURL()
		rc.SMTP.MaxMessageBytes = size
		var logs apptest.SyncBuffer
		r, err := app.Start(ctx, rc, app.RoleSMTP, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatalf("start receiver: %v", err)
		}
		if err := r.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		return logs.String()
	}
	if out := startReceiver(4 << 20); !strings.Contains(out, "mail between the two will bounce") || !strings.Contains(out, "level=ERROR") {
		t.Errorf("SIZE 4MiB under a live max_msg_size of 1MiB: logged %q", out)
	}
	if out := startReceiver(1<<20 - queue.SizeMargin); strings.Contains(out, "bounce") {
		t.Errorf("SIZE that fits: logged %q", out)
	}
}

// TestASecondLeveeCannotRewriteTheLimits: a process started with another
// config against a running Levee's JetStream (a pod with a stale config, a
// second `levee serve` pointed at it) leaves the live limits as they are,
// even a per-domain cap that would trim queued mail, and reports the drift
// in its metric and in `levee queue limits` (the ops API).
func TestASecondLeveeCannotRewriteTheLimits(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.Worker.Concurrency = 0 // keep the mail queued
	first := apptest.Start(t, cfg)
	for i := range 5 {
		if err := apptest.Send(first.SMTPAddr, "s@client.test", []string{"rcpt@example.test"}, apptest.Message(i, 500)); err != nil {
			t.Fatal(apptest.ReplyCode(err))
		}
	}
	ctx := context.Background()
	before, err := first.Admin.Limits(ctx)
	if err != nil {
		t.Fatal(err)
	}

	second := cfg
	second.DataDir = t.TempDir()
	second.Queue.URL = first.Queue.Server().ClientURL()
	second.Queue.MaxMsgs = 7
	second.Queue.MaxBytes = 256 << 20 // 64 MiB a partition: room for max_msg_size
	second.Queue.PerDomainMaxMsgs = 4 // example.test has 5 queued
	l := apptest.Start(t, second)

	after, err := first.Admin.Limits(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.StreamLimits != before.StreamLimits {
		t.Errorf("a second process changed the live limits:\nbefore %+v\nafter  %+v", before.StreamLimits, after.StreamLimits)
	}
	if n, _, err := first.Queue.Backlog(ctx); err != nil || n != 5 {
		t.Errorf("backlog %d, %v after the second start; want the 5 queued", n, err)
	}
	if len(after.Drift) != 0 {
		t.Errorf("the first process reports drift from its own config: %v", after.Drift)
	}
	var report admin.LimitsReport
	if code := l.GetJSON("/api/v1/queue/limits", &report); code != 200 {
		t.Fatalf("GET /api/v1/queue/limits: %d", code)
	}
	keys := map[string]bool{}
	for _, d := range report.Drift {
		keys[d.Key] = true
	}
	if !report.ComparedWithConfig || report.MaxMsgs != cfg.Queue.MaxMsgs || len(keys) != 3 ||
		!keys["max_msgs"] || !keys["max_bytes"] || !keys["per_domain_max_msgs"] {
		t.Errorf("the second process's limits report %+v; want the live limits and drift in max_msgs, max_bytes, per_domain_max_msgs", report)
	}
	apptest.WaitFor(t, 10*time.Second, "the drift gauge", func() bool {
		return gauge(t, l, "levee_queue_limit_drift", "max_msgs") == 1 && gauge(t, l, "levee_queue_limit_drift", "max_age") == 0
	})
}

// gauge reads a gauge of l's registry by its one label's value.
func gauge(t *testing.T, l *apptest.Levee, name, label string) float64 {
	t.Helper()
	mfs, err := l.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == label {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// TestIntakeFirstMustDrainBeforeTheWatermark: a levee serve whose workers
// would step back past the receiver's watermark does not start (senders
// would be deferred while the workers wait); a receiver alone may set its
// watermark so.
func TestIntakeFirstMustDrainBeforeTheWatermark(t *testing.T) {
	cfg := apptest.Config(t)
	cfg.SMTP.HighWatermark, cfg.SMTP.LowWatermark = 0.5, 0.4
	l, err := app.Start(t.Context(), cfg, app.RoleAll, slog.New(slog.DiscardHandler))
	if err == nil {
		_ = l.Shutdown(context.Background())
		t.Fatal("levee serve started with worker.intake_first.max_fill 0.7 above smtp.low_watermark 0.4")
	}
	if !strings.Contains(err.Error(), "worker.intake_first.max_fill") {
		t.Errorf("error %q does not name worker.intake_first.max_fill", err)
	}
	cfg.Worker.IntakeFirst.Above = -1
	l, err = app.Start(t.Context(), cfg, app.RoleAll, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("with stepping back off: %v", err)
	}
	_ = l.Shutdown(context.Background())
}

// TestAStoreThatCannotBeOpenedIsAnErrorNotAPanic: a PostgreSQL store that
// refuses the connection (either URL scheme) fails the start with the
// cause; it used to panic closing a nil store.
func TestAStoreThatCannotBeOpenedIsAnErrorNotAPanic(t *testing.T) {
	for _, scheme := range []string{"postgres", "postgresql"} {
		cfg := apptest.Config(t)
		cfg.Store = scheme + "://postgres@127.0.0.1:1/levee?connect_timeout=2"
		l, err := app.Start(t.Context(), cfg, app.RoleAll, slog.New(slog.DiscardHandler))
		if err == nil {
			_ = l.Shutdown(context.Background())
			t.Fatalf("%s: started on a store that refuses connections", scheme)
		}
		if !strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("%s: error %q does not say which server failed", scheme, err)
		}
	}
}

// TestASecondLeveeOnTheSameDataDirFailsAndChangesNothing: the data
// directory is locked before anything in it is opened, so a second process
// fails at once, saying who holds it, and the running one's stream keeps
// its settings. Once the first stops, the directory can be used again.
func TestASecondLeveeOnTheSameDataDirFailsAndChangesNothing(t *testing.T) {
	cfg := apptest.Config(t)
	first, err := app.Start(t.Context(), cfg, app.RoleAll, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	before, err := first.Admin.Limits(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	second := cfg
	second.Queue.MaxMsgs = 5
	l, err := app.Start(t.Context(), second, app.RoleAll, slog.New(slog.DiscardHandler))
	if err == nil {
		_ = l.Shutdown(context.Background())
		t.Fatal("a second levee started on a data dir in use")
	}
	if !strings.Contains(err.Error(), "in use by another levee process (pid ") {
		t.Errorf("error %q does not say the data dir is in use, and by whom", err)
	}
	after, err := first.Admin.Limits(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if after.StreamLimits != before.StreamLimits {
		t.Errorf("the refused start changed the live limits:\nbefore %+v\nafter  %+v", before.StreamLimits, after.StreamLimits)
	}
	if err := first.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, err := app.Start(t.Context(), cfg, app.RoleAll, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("start after the first stopped: %v", err)
	}
	_ = again.Shutdown(context.Background())
}
