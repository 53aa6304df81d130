package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/levee-mail/levee/ingest"
	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/queue"
	"github.com/levee-mail/levee/store/sqlite"
	"github.com/levee-mail/levee/web"
	"github.com/levee-mail/levee/worker"
)

// Levee is every role in one process: the SMTP receiver, the queue (with
// the embedded JetStream server unless an external one is configured), the
// workers, the store and the HTTP server.
type Levee struct {
	cfg      Config
	log      *slog.Logger
	Registry *prometheus.Registry

	Queue  *queue.Queue
	Store  *sqlite.Store
	SMTP   *ingest.Server
	Worker *worker.Worker
	HTTP   *web.Server
}

// Start opens every component and starts listening. On error, whatever was
// opened is closed again.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Levee, error) {
	if err := cfg.finish(); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	l := &Levee{cfg: cfg, log: log, Registry: reg}
	if err := l.start(ctx); err != nil {
		_ = l.close(context.Background())
		return nil, err
	}
	return l, nil
}

func (l *Levee) start(ctx context.Context) (err error) {
	cfg, log, reg := l.cfg, l.log, l.Registry
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if l.Store, err = sqlite.Open(ctx, sqlite.Config{Path: cfg.Store}); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if l.Queue, err = queue.Open(ctx, cfg.Queue, reg, log); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	consumer, err := l.Queue.Consumer(ctx)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	if l.Worker, err = worker.New(cfg.Worker, consumer, l.Store, l.Queue, reg, log); err != nil {
		return err
	}
	if l.SMTP, err = ingest.New(cfg.SMTP, queuePublisher{l.Queue}, l.Queue, reg, log); err != nil {
		return err
	}
	ready := map[string]web.Check{
		"store": l.Store.Ping,
		"queue": func(context.Context) error {
			if !l.Queue.Conn().IsConnected() {
				return errors.New("not connected to JetStream")
			}
			return nil
		},
	}
	if l.HTTP, err = web.New(cfg.HTTP, l.Store, queueStatus{l.Queue}, reg, ready, reg, log); err != nil {
		return err
	}
	if err := l.HTTP.Start(ctx); err != nil {
		return fmt.Errorf("http: %w", err)
	}
	if err := l.SMTP.Start(ctx); err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	l.Worker.Start()
	log.Info("levee started", "smtp", l.SMTP.Addr().String(), "http", l.HTTP.Addr().String(),
		"data_dir", cfg.DataDir, "store", cfg.Store, "workers", cfg.Worker.Concurrency)
	return nil
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
	if l.Worker != nil {
		errs = append(errs, l.Worker.Shutdown(ctx))
	}
	if l.HTTP != nil {
		errs = append(errs, l.HTTP.Shutdown(ctx))
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

type queueStatus struct{ q *queue.Queue }

func (s queueStatus) Status(ctx context.Context) (any, error) { return s.q.Status(ctx) }
