package app

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/levee-mail/levee/queue/fleet"
)

// How often a worker without a web role in its process asks the web
// processes for their readers' latency, how long it waits for answers, and
// an answer counts for three periods.
const (
	fleetReadersEvery = 5 * time.Second
	fleetReadersWait  = 250 * time.Millisecond
)

// fleetReaders is worker.ReaderLatency over the process stats: the read
// latency of the web process whose readers are worst off (fleet.Readers),
// refreshed every fleetReadersEvery by run.
type fleetReaders struct {
	nc     *nats.Conn
	stream string
	every  time.Duration // fleetReadersEvery; tests ask more often

	mu           sync.Mutex
	recent, idle time.Duration
	since, at    time.Time
	ok           bool
}

func (f *fleetReaders) run(ctx context.Context) {
	t := time.NewTicker(f.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		procs, err := fleet.Gather(ctx, f.nc, f.stream, fleetReadersWait)
		if err != nil && len(procs) == 0 {
			continue // the last answer ages out
		}
		recent, idle, since, ok := fleet.Readers(procs)
		f.mu.Lock()
		f.recent, f.idle, f.since, f.ok, f.at = recent, idle, since, ok, time.Now()
		f.mu.Unlock()
	}
}

// ReadLatency is the last answer, unless it is older than three periods.
func (f *fleetReaders) ReadLatency() (recent, idle time.Duration, since time.Time, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.ok || time.Since(f.at) > 3*f.every {
		return 0, 0, time.Time{}, false
	}
	return f.recent, f.idle, f.since, true
}
