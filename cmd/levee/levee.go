package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/levee-mail/levee/ingest"
	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/postgres"
	"github.com/levee-mail/levee/store/sqlite"
	"github.com/levee-mail/levee/web"
	"github.com/levee-mail/levee/worker"
)

// Role is one part of Levee that a process can run.
type Role int

const (
	// RoleSMTP receives mail and publishes it to the queue.
	RoleSMTP Role = 1 << iota
	// RoleWorker drains the queue into the store.
	RoleWorker
	// RoleWeb serves the mailbox API (every process serves /metrics and health).
	RoleWeb

	// RoleAll is `levee serve`.
	RoleAll = RoleSMTP | RoleWorker | RoleWeb
)

func (r Role) String() string {
	var parts []string
	for _, p := range []struct {
		role Role
		name string
	}{{RoleSMTP, "smtpd"}, {RoleWorker, "worker"}, {RoleWeb, "web"}} {
		if r&p.role != 0 {
			parts = append(parts, p.name)
		}
	}
	return strings.Join(parts, "+")
}

// Levee is one process: every role for `levee serve`, one role each for
// `levee smtpd`, `levee worker` and `levee web`. Every process serves
// /metrics, /healthz and /readyz on the HTTP address.
type Levee struct {
	cfg      Config
	roles    Role
	log      *slog.Logger
	Registry *prometheus.Registry

	Queue  *queue.Queue
	Store  store.Store    // nil for smtpd
	SMTP   *ingest.Server // nil unless RoleSMTP
	Worker *worker.Worker // nil unless RoleWorker
	HTTP   *web.Server

	// The autoscaler runs until stopAutoscale; autoscaleDone closes after.
	stopAutoscale context.CancelFunc
	autoscaleDone chan struct{}
	// The ops API's status sampler, likewise.
	stopSampler context.CancelFunc
	samplerDone chan struct{}

	instance string // host:pid, in stats replies
	started  time.Time
}

// Start opens what the roles need and starts listening. On error, whatever
// was opened is closed again.
func Start(ctx context.Context, cfg Config, roles Role, log *slog.Logger) (*Levee, error) {
	if err := cfg.finish(); err != nil {
		return nil, err
	}
	if roles != RoleAll && cfg.Queue.URL == "" {
		// An embedded server per role process would be a queue per process.
		return nil, fmt.Errorf("queue.nats_url: `levee %s` needs an external JetStream (--nats-url); `levee serve` embeds one", roles)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	host, _ := os.Hostname()
	l := &Levee{cfg: cfg, roles: roles, log: log, Registry: reg,
		instance: fmt.Sprintf("%s:%d", host, os.Getpid()), started: time.Now()}
	if err := l.start(ctx); err != nil {
		_ = l.close(context.Background())
		return nil, err
	}
	return l, nil
}

func (l *Levee) start(ctx context.Context) (err error) {
	cfg, log, reg := l.cfg, l.log, l.Registry
	if l.roles&(RoleWorker|RoleWeb) != 0 {
		if l.Store, err = openStore(ctx, cfg); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	if l.Queue, err = queue.Open(ctx, cfg.Queue, reg, log); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if l.roles&RoleWorker != 0 {
		consumer, err := l.Queue.Consumer(ctx)
		if err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		if l.Worker, err = worker.New(cfg.Worker, consumer, l.Store, l.Queue, reg, log); err != nil {
			return err
		}
	}
	if l.roles&RoleSMTP != 0 {
		if l.SMTP, err = ingest.New(cfg.SMTP, queuePublisher{l.Queue}, l.Queue, reg, log); err != nil {
			return err
		}
		l.warnIfSIZEBounces(ctx)
	}
	ready := map[string]web.Check{}
	// A process that receives or drains mail is not ready without JetStream;
	// the read API is, so that a queue outage does not take it down too.
	if l.roles&(RoleSMTP|RoleWorker) != 0 {
		ready["queue"] = func(context.Context) error {
			if !l.Queue.Conn().IsConnected() {
				return errors.New("not connected to JetStream")
			}
			return nil
		}
	}
	var reader web.MailReader
	if l.Store != nil {
		ready["store"] = l.Store.Ping
		if l.roles&RoleWeb != 0 {
			reader = l.Store
		}
	}
	if err := l.Queue.ServeStats(l.processStats); err != nil {
		return err
	}
	ops := queue.NewOps(l.Queue.Admin())
	sctx, cancel := context.WithCancel(context.Background())
	l.stopSampler, l.samplerDone = cancel, make(chan struct{})
	go func() { defer close(l.samplerDone); ops.Run(sctx) }()
	if l.HTTP, err = web.New(cfg.HTTP, reader, ops, reg, ready, reg, log); err != nil {
		return err
	}
	if err := l.HTTP.Start(ctx); err != nil {
		return fmt.Errorf("http: %w", err)
	}
	attrs := []any{"roles", l.roles.String(), "http", l.HTTP.Addr().String(), "data_dir", cfg.DataDir}
	if l.SMTP != nil {
		if err := l.SMTP.Start(ctx); err != nil {
			return fmt.Errorf("smtp: %w", err)
		}
		attrs = append([]any{"smtp", l.SMTP.Addr().String()}, attrs...)
	}
	if l.Worker != nil {
		l.Worker.Start()
		attrs = append(attrs, "store", redactURL(cfg.Store), "workers", cfg.Worker.Concurrency)
		// Concurrency 0 means paused: the autoscaler must not wake the loops.
		if cfg.Worker.Autoscale.Enabled && cfg.Worker.Concurrency > 0 {
			as, err := worker.NewAutoscaler(cfg.Worker.Autoscale, l.Worker, worker.QueueBacklog(l.Queue), nil, reg, log)
			if err != nil {
				return err
			}
			actx, cancel := context.WithCancel(context.Background())
			l.stopAutoscale, l.autoscaleDone = cancel, make(chan struct{})
			go func() { defer close(l.autoscaleDone); as.Run(actx) }()
			attrs = append(attrs, "autoscale", fmt.Sprintf("%d..%d, p95 budget %s",
				cfg.Worker.Autoscale.Min, cfg.Worker.Autoscale.Max, cfg.Worker.Autoscale.LatencyBudget))
		}
	}
	log.Info("levee started", attrs...)
	return nil
}

// openStore picks the backend from the store setting: a postgres:// URL or
// a SQLite file path.
func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if postgres.IsURL(cfg.Store) {
		return postgres.Open(ctx, postgres.Config{URL: cfg.Store})
	}
	return sqlite.Open(ctx, sqlite.Config{Path: cfg.Store})
}

// redactURL hides a password in a store URL for logging.
func redactURL(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		if at := strings.LastIndex(s, "@"); at > i {
			if colon := strings.Index(s[i+3:at], ":"); colon >= 0 {
				return s[:i+3+colon] + ":***" + s[at:]
			}
		}
	}
	return s
}

// Shutdown stops in the order of the flow: SMTP stops taking mail and
// finishes its sessions (they still need the queue), the workers finish their
// deliveries (they need queue and store), then HTTP, the queue and the store
// close. ctx bounds the whole drain.
func (l *Levee) Shutdown(ctx context.Context) error {
	return l.close(ctx)
}

func (l *Levee) close(ctx context.Context) error {
	var errs []error
	if l.SMTP != nil {
		errs = append(errs, l.SMTP.Shutdown(ctx))
	}
	if l.stopAutoscale != nil {
		// Stop it first, or it would start loops the drain just stopped.
		l.stopAutoscale()
		<-l.autoscaleDone
	}
	if l.Worker != nil {
		errs = append(errs, l.Worker.Shutdown(ctx))
	}
	if l.HTTP != nil {
		errs = append(errs, l.HTTP.Shutdown(ctx))
	}
	if l.stopSampler != nil {
		l.stopSampler()
		<-l.samplerDone
	}
	if l.Queue != nil {
		errs = append(errs, l.Queue.Close(ctx))
	}
	if l.Store != nil {
		errs = append(errs, l.Store.Close())
	}
	return errors.Join(errs...)
}

// queuePublisher maps the queue's outcomes onto the receiver's, so that the
// receiver decides every reply code without knowing JetStream.
type queuePublisher struct{ q *queue.Queue }

func (p queuePublisher) Publish(ctx context.Context, m *mail.Message) (bool, error) {
	res, err := p.q.Publish(ctx, m)
	switch {
	case err == nil:
		return res.Duplicate, nil
	case errors.Is(err, queue.ErrQueueFull):
		return false, fmt.Errorf("%w: %w", ingest.ErrQueueFull, err)
	case errors.Is(err, queue.ErrTooLarge):
		return false, fmt.Errorf("%w: %w", ingest.ErrTooLarge, err)
	default:
		return false, fmt.Errorf("%w: %w", ingest.ErrUnavailable, err)
	}
}

// warnIfSIZEBounces says loudly when the stream's max_msg_size, which may
// have been lowered live (and live limits outlast restarts), is below what
// this receiver advertises in SIZE plus header room: the mail between the
// two will be read, refused by the queue and bounced (552 5.3.4). It does
// not refuse to start, since receiving the rest of the mail matters more.
func (l *Levee) warnIfSIZEBounces(ctx context.Context) {
	lim, err := l.Queue.Admin().Limits(ctx)
	if err != nil {
		return
	}
	if need := l.cfg.SMTP.MaxMessageBytes + queue.SizeMargin; int64(lim.MaxMsgSize) < need {
		l.log.Error("smtp.max_message_bytes is above the queue's live max_msg_size minus 64KiB of headers: mail between the two will bounce (552 5.3.4); lower smtp.max_message_bytes or raise the limit with `levee queue limits set --max-msg-size`",
			"smtp.max_message_bytes", l.cfg.SMTP.MaxMessageBytes, "queue max_msg_size", lim.MaxMsgSize)
	}
}

// processStats is this process's answer to a stats request (see
// queue.ServeStats): what `levee queue status` sums over a deployment.
func (l *Levee) processStats() queue.ProcessStats {
	p := queue.ProcessStats{Instance: l.instance, Roles: l.roles.String(), StartedAt: l.started}
	if l.Worker != nil {
		p.Worker = &queue.WorkerStats{Concurrency: l.Worker.Concurrency()}
	}
	if l.SMTP != nil {
		st := l.SMTP.Stats()
		p.SMTP = &queue.SMTPStats{Accepted: st.Accepted, Deferred: st.Deferred, Rejected: st.Rejected, Sessions: st.Sessions,
			MaxMessageBytes: l.cfg.SMTP.MaxMessageBytes}
	}
	return p
}
