package admin

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/levee-mail/levee/queue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Admin is the operator's handle on a queue: status, live limits and dead
// letters. It needs only a NATS connection, so that `levee queue` and
// `levee dlq` work straight against JetStream as well as inside a running
// Levee. It never creates or reconfigures anything but what an operator
// asked for.
type Admin struct {
	cfg        queue.Config
	configured bool
	changed    func()
	durable    func(context.Context) error
	nc         *nats.Conn
	js         jetstream.JetStream
	log        *slog.Logger

	// limitsMu serialises UpdateLimits: each writes back a whole stream
	// config read just before, so two at once would undo one another.
	limitsMu sync.Mutex
	// seen is this process's memory of the intake freezes it found, by
	// stream (Run).
	seen map[string]freezeSighting
}

// Config is what an Admin knows of the queue.
type Config struct {
	// Queue names the streams, subjects and consumer (defaults applied),
	// and says whether the server is embedded (no URL) for the status.
	Queue queue.Config
	// Configured says that Queue is the configuration Levee runs with, not
	// just the names: Limits then reports how the live limits differ
	// from it.
	Configured bool
	// LimitsChanged, if set, runs after UpdateLimits changed the limits:
	// the process's queue refreshes its fill at once (queue.Queue.Refresh).
	LimitsChanged func()
	// Durable, if set, returns once the server's acknowledged writes are on
	// disk (queue.Queue.WaitDurable): a replay syncs the message it put back
	// before it deletes the dead letter.
	Durable func(context.Context) error
	// Log may be nil.
	Log *slog.Logger
}

// New is an Admin on nc, which the caller owns and closes.
func New(nc *nats.Conn, cfg Config) (*Admin, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("admin: jetstream: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Admin{cfg: cfg.Queue.WithDefaults(), configured: cfg.Configured, changed: cfg.LimitsChanged, durable: cfg.Durable, nc: nc, js: js, log: log,
		seen: map[string]freezeSighting{}}, nil
}

// layout is the mail streams mail is published to, which limits apply to:
// the config's layout; an Admin that knows only the names (the CLI
// straight through JetStream) takes the layout the last start set up, as
// the streams' metadata say (queue.CurrentLayout).
func (a *Admin) layout(ctx context.Context) ([]queue.Partition, error) {
	if a.configured {
		return a.cfg.Layout(), nil
	}
	found, err := queue.CurrentLayout(ctx, a.js, a.cfg)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("admin: no mail stream %s on the server", a.cfg.Stream)
	}
	return found, nil
}

// routing is the config that sends a message to its partition: the
// config's, or for an Admin that knows only the names, one with the
// partition count of the current layout.
func (a *Admin) routing(ctx context.Context) (queue.Config, error) {
	if a.configured {
		return a.cfg, nil
	}
	layout, err := a.layout(ctx)
	if err != nil {
		return queue.Config{}, err
	}
	c, ok := a.cfg.WithLayout(layout)
	if !ok {
		return queue.Config{}, fmt.Errorf("admin: the current mail streams (%s) are not one layout of %s; run with the config (--config) to route mail", streamNames(layout), a.cfg.Stream)
	}
	return c, nil
}

func streamNames(ps []queue.Partition) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Stream
	}
	return strings.Join(names, ", ")
}
