package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/levee-mail/levee/ingest"
	"github.com/levee-mail/levee/internal/redact"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/queue/admin"
	"github.com/levee-mail/levee/queue/fleet"
	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/postgres"
	"github.com/levee-mail/levee/store/sqlite"
	"github.com/levee-mail/levee/web"
	"github.com/levee-mail/levee/worker"
)

// Levee is one process: every role for `levee serve`, one role each for
// `levee smtpd`, `levee worker` and `levee web`. Every process serves
// /metrics, /healthz and /readyz on the HTTP address.
type Levee struct {
	cfg      Config
	roles    Role
	log      *slog.Logger
	Registry *prometheus.Registry

	Queue  *queue.Queue
	Admin  *admin.Admin
	Store  store.Store    // nil for smtpd
	SMTP   *ingest.Server // nil unless RoleSMTP
	Worker *worker.Worker // nil unless RoleWorker
	HTTP   *web.Server

	// The autoscaler runs until stopAutoscale, the admin side's background
	// work (history, freeze lifting) until stopOps; each WaitGroup is done
	// after.
	stopAutoscale, stopOps  context.CancelFunc
	autoscaling, opsRunning sync.WaitGroup

	// unlockDataDir releases data_dir for another process (see
	// lockDataDir), once everything in it is closed.
	unlockDataDir func()

	instance string // host:pid, in stats replies
	started  time.Time
}

// Start opens what the roles need and starts listening. On error, whatever
// was opened is closed again.
func Start(ctx context.Context, cfg Config, roles Role, log *slog.Logger) (*Levee, error) {
	if err := cfg.Finish(); err != nil {
		return nil, err
	}
	if roles != RoleAll && cfg.Queue.URL == "" {
		// An embedded server per role process would be a queue per process.
		return nil, fmt.Errorf("queue.nats_url: `levee %s` needs an external JetStream (--nats-url); `levee serve` embeds one", roles)
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(schedulerLatency)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	host, _ := os.Hostname()
	l := &Levee{cfg: cfg, roles: roles, log: log, Registry: reg,
		instance: fmt.Sprintf("%s:%d", host, os.Getpid()), started: time.Now()}
	l.stopAutoscale, l.stopOps = func() {}, func() {}
	l.unlockDataDir = unlock
	if err := l.start(ctx); err != nil {
		_ = l.close(context.Background())
		return nil, err
	}
	return l, nil
}

// schedulerLatency adds go_sched_latencies_seconds to the Go collector's
// defaults: how long goroutines wait for a CPU once runnable. In levee serve
// the web role's reads (and SQLite's queries, which run as Go code) share
// the process with the SMTP sessions and the workers; when readers slow
// down while the drain is at its floor, this is where it shows.
var schedulerLatency = collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sched/latencies:seconds$`)}

// start opens the store and the queue, builds the roles' parts, then
// starts listening.
func (l *Levee) start(ctx context.Context) (err error) {
	cfg := l.cfg
	if l.roles&(RoleWorker|RoleWeb) != 0 {
		if l.Store, err = openStore(ctx, cfg); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	if l.Queue, err = queue.Open(ctx, cfg.Queue, l.Registry, l.log); err != nil {
		// Open's errors say "queue: ..." or name a queue.* key already.
		if !strings.HasPrefix(err.Error(), "queue") {
			err = fmt.Errorf("queue: %w", err)
		}
		return err
	}
	if l.Admin, err = admin.New(l.Queue.Conn(), admin.Config{Queue: cfg.Queue, Configured: true, LimitsChanged: l.Queue.Refresh, Durable: l.Queue.WaitDurable, Log: l.log}); err != nil {
		return err
	}
	if err := l.buildRoles(ctx); err != nil {
		return err
	}
	// Once the roles are built: processStats reads them.
	if err := fleet.Serve(l.Queue.Conn(), cfg.Queue.Stream, l.processStats, l.log); err != nil {
		return err
	}
	return l.listen(ctx)
}

// buildRoles makes the worker, the SMTP receiver and the HTTP server the
// roles call for, and starts the admin side's background work.
func (l *Levee) buildRoles(ctx context.Context) (err error) {
	cfg, reg, log := l.cfg, l.Registry, l.log
	if l.roles&RoleWorker != 0 {
		consumer, err := l.Queue.Consumer(ctx)
		if err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		if l.Worker, err = worker.New(cfg.Worker, consumer, l.Store, reg, log); err != nil {
			return err
		}
	}
	floor, err := l.diskFloor()
	if err != nil {
		return err
	}
	if l.roles&RoleSMTP != 0 {
		if l.SMTP, err = ingest.New(cfg.SMTP, l.Queue, floorFill{queue: l.Queue, floor: floor}, reg, log); err != nil {
			return err
		}
		l.warnIfSIZEBounces(ctx)
	}
	if l.Worker != nil && l.SMTP != nil {
		// One process, one machine: draining yields to accepting.
		if err := cfg.checkIntakeFirst(); err != nil {
			return err
		}
		l.Worker.PutIntakeFirst(l.SMTP, l.Queue)
	}
	ops := admin.NewOps(l.Admin)
	octx, cancel := context.WithCancel(context.Background())
	l.stopOps = cancel
	l.opsRunning.Go(func() { ops.Run(octx) })
	l.opsRunning.Go(func() { floor.Run(octx) })
	l.HTTP, err = web.New(cfg.HTTP, web.Deps{Reader: l.reader(), Queue: ops, Ready: l.readiness(), Registerer: reg, Log: log})
	return err
}

// startAutoscaler runs the worker's autoscaler, once the worker's loops
// run, when it is on. Concurrency 0 means paused: then the autoscaler must
// not wake the loops.
func (l *Levee) startAutoscaler() error {
	as := l.cfg.Worker.Autoscale
	if !as.Enabled || l.cfg.Worker.Concurrency == 0 {
		return nil
	}
	deps := worker.AutoscalerDeps{Backlog: l.Queue, Registerer: l.Registry, Log: l.log}
	actx, cancel := context.WithCancel(context.Background())
	if l.HTTP != nil && l.roles&RoleWeb != 0 {
		// The web app's readers are in this process: they set the pace.
		deps.Readers = l.HTTP
	} else {
		// Split roles: the web processes' readers, from their stats.
		fr := &fleetReaders{nc: l.Queue.Conn(), stream: l.cfg.Queue.Stream, every: fleetReadersEvery}
		l.autoscaling.Go(func() { fr.run(actx) })
		deps.Readers = fr
	}
	a, err := worker.NewAutoscaler(as, l.Worker, deps)
	if err != nil {
		cancel()
		l.autoscaling.Wait()
		return err
	}
	l.stopAutoscale = cancel
	l.autoscaling.Go(func() { a.Run(actx) })
	return nil
}

// reader is the store for the web role's mailbox API, nil for the others.
func (l *Levee) reader() web.MailReader {
	if l.roles&RoleWeb == 0 || l.Store == nil {
		return nil
	}
	return l.Store
}

// readiness are the checks of /readyz. A process that receives or drains
// mail is not ready without JetStream; the read API is, so that a queue
// outage does not take it down too.
func (l *Levee) readiness() map[string]web.Check {
	ready := map[string]web.Check{}
	if l.roles&(RoleSMTP|RoleWorker) != 0 {
		ready["queue"] = func(context.Context) error {
			if !l.Queue.Conn().IsConnected() {
				return errors.New("not connected to JetStream")
			}
			// A full disk under the embedded server: publishes fail.
			return l.Queue.StoreFault()
		}
	}
	if l.Store != nil {
		ready["store"] = l.storeReady
	}
	return ready
}

// storeReady fails while the workers wait out a store outage, a full disk
// included, which the store's Ping (a read) does not notice.
func (l *Levee) storeReady(ctx context.Context) error {
	if l.Worker != nil {
		if err := l.Worker.StoreOutage(); err != nil {
			return err
		}
	}
	return l.Store.Ping(ctx)
}

// listen starts the HTTP server, the SMTP listener and the worker's loops.
func (l *Levee) listen(ctx context.Context) error {
	cfg := l.cfg
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
		if err := l.startAutoscaler(); err != nil {
			return err
		}
		attrs = append(attrs, "store", redact.URL(cfg.Store), "workers", cfg.Worker.Concurrency)
		if as := cfg.Worker.Autoscale.WithDefaults(); as.Enabled && cfg.Worker.Concurrency > 0 {
			budget := fmt.Sprintf("%gx idle, at least %s", as.LatencyBudgetFactor, as.LatencyFloor)
			if as.LatencyBudget > 0 {
				budget = as.LatencyBudget.String()
			}
			attrs = append(attrs, "autoscale", fmt.Sprintf("%d..%d, p95 budget %s", as.Min, as.Max, budget))
		}
	}
	l.log.Info("levee started", attrs...)
	return nil
}

// openStore picks the backend from the store setting: a postgres:// URL or
// a SQLite file path.
// A failed Open returns a nil interface, never a typed nil pointer in one,
// which Close would be called on (and panic).
func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if postgres.IsURL(cfg.Store) {
		s, err := postgres.Open(ctx, postgres.Config{URL: cfg.Store})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	s, err := sqlite.Open(ctx, sqlite.Config{Path: cfg.Store})
	if err != nil {
		return nil, err
	}
	return s, nil
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
	// The autoscaler stops before the worker drains: it would start loops
	// the drain just stopped.
	l.stopAutoscale()
	l.autoscaling.Wait()
	if l.Worker != nil {
		errs = append(errs, l.Worker.Shutdown(ctx))
	}
	if l.HTTP != nil {
		errs = append(errs, l.HTTP.Shutdown(ctx))
	}
	l.stopOps()
	l.opsRunning.Wait()
	if l.Queue != nil {
		errs = append(errs, l.Queue.Close(ctx))
	}
	if l.Store != nil {
		errs = append(errs, l.Store.Close())
	}
	// Last: everything in the data directory is closed.
	l.unlockDataDir()
	return errors.Join(errs...)
}

// warnIfSIZEBounces says loudly when the stream's max_msg_size, which may
// have been lowered live (and live limits outlast restarts), is below what
// this receiver advertises in SIZE plus header room: the mail between the
// two will be read, refused by the queue and bounced (552 5.3.4). It does
// not refuse to start, since receiving the rest of the mail matters more.
func (l *Levee) warnIfSIZEBounces(ctx context.Context) {
	lim, err := l.Admin.Limits(ctx)
	if err != nil {
		return
	}
	if need := l.cfg.SMTP.MaxMessageBytes + queue.SizeMargin; int64(lim.MaxMsgSize) < need {
		l.log.Error("smtp.max_message_bytes is above the queue's live max_msg_size minus 64KiB of headers: mail between the two will bounce (552 5.3.4); lower smtp.max_message_bytes or raise the limit with `levee queue limits set --max-msg-size`",
			"smtp.max_message_bytes", l.cfg.SMTP.MaxMessageBytes, "queue max_msg_size", lim.MaxMsgSize)
	}
}

// processStats is this process's answer to a stats request (see
// fleet.Serve): what `levee queue status` sums over a deployment.
func (l *Levee) processStats() fleet.Stats {
	p := fleet.Stats{Instance: l.instance, Roles: l.roles.String(), StartedAt: l.started}
	if l.Worker != nil {
		p.Worker = &fleet.WorkerStats{Concurrency: l.Worker.Concurrency()}
	}
	if l.SMTP != nil {
		st := l.SMTP.Stats()
		p.SMTP = &fleet.SMTPStats{Accepted: st.Accepted, Deferred: st.Deferred, Rejected: st.Rejected, Sessions: st.Sessions,
			MaxMessageBytes: l.cfg.SMTP.MaxMessageBytes}
	}
	if l.HTTP != nil && l.roles&RoleWeb != 0 {
		if recent, idle, since, ok := l.HTTP.ReadLatency(); ok {
			p.Web = &fleet.WebStats{ReadP99: recent.Seconds(), IdleP99: idle.Seconds(), Since: since}
		}
	}
	return p
}
