package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Subject is the subject the processes of the queue named by stream answer
// stats requests on.
func Subject(stream string) string { return "_LEVEE.stats." + stream }

// Stats is one Levee process's own figures.
type Stats struct {
	Instance  string       `json:"instance"` // host:pid
	Roles     string       `json:"roles"`
	StartedAt time.Time    `json:"started_at"`
	Worker    *WorkerStats `json:"worker,omitempty"`
	SMTP      *SMTPStats   `json:"smtp,omitempty"`
	Web       *WebStats    `json:"web,omitempty"`
}

// WebStats is a web process's mailbox API read latency, once it has read
// enough to judge (web.Server.ReadLatency): workers in other processes
// pace their drain by it.
type WebStats struct {
	ReadP99 float64   `json:"read_p99_seconds"`
	IdleP99 float64   `json:"idle_p99_seconds"`
	Since   time.Time `json:"since"` // start of the window ReadP99 is over
}

// Readers is the read latency of the web process whose readers are worst
// off against their idle baseline, among procs; ok is false when none
// reported one.
func Readers(procs []Stats) (recent, idle time.Duration, since time.Time, ok bool) {
	worst := -1.0
	for _, p := range procs {
		w := p.Web
		if w == nil || w.IdleP99 <= 0 {
			continue
		}
		if r := w.ReadP99 / w.IdleP99; r > worst {
			worst = r
			recent, idle, since, ok = secondsOf(w.ReadP99), secondsOf(w.IdleP99), w.Since, true
		}
	}
	return recent, idle, since, ok
}

func secondsOf(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// WorkerStats is a worker process's drain state.
type WorkerStats struct {
	Concurrency int `json:"concurrency"`
}

// SMTPStats counts a receiver's transaction outcomes since it started.
type SMTPStats struct {
	Accepted uint64 `json:"accepted_total"`
	Deferred uint64 `json:"deferred_total"`
	Rejected uint64 `json:"rejected_total"`
	Sessions int64  `json:"sessions"`
	// MaxMessageBytes is the SIZE the receiver advertises: a live
	// max_msg_size below it plus headers would bounce mail it accepts.
	MaxMessageBytes int64 `json:"max_message_bytes,omitempty"`
}

// WorkerTotals sums the worker processes.
type WorkerTotals struct {
	Processes   int `json:"processes"`
	Concurrency int `json:"concurrency"`
}

// SMTPTotals sums the receivers.
type SMTPTotals struct {
	Processes int    `json:"processes"`
	Accepted  uint64 `json:"accepted_total"`
	Deferred  uint64 `json:"deferred_total"`
	Rejected  uint64 `json:"rejected_total"`
	Sessions  int64  `json:"sessions"`
}

// Sum adds up the workers and the receivers among procs.
func Sum(procs []Stats) (WorkerTotals, SMTPTotals) {
	var w WorkerTotals
	var s SMTPTotals
	for _, p := range procs {
		if ws := p.Worker; ws != nil {
			w.Processes++
			w.Concurrency += ws.Concurrency
		}
		if ss := p.SMTP; ss != nil {
			s.Processes++
			s.Accepted += ss.Accepted
			s.Deferred += ss.Deferred
			s.Rejected += ss.Rejected
			s.Sessions += ss.Sessions
		}
	}
	return w, s
}

// Serve answers stats requests for the queue named by stream on nc with
// what stats returns, until nc closes. stats must be safe for concurrent
// use and quick. log may be nil.
func Serve(nc *nats.Conn, stream string, stats func() Stats, log *slog.Logger) error {
	_, err := nc.Subscribe(Subject(stream), func(m *nats.Msg) {
		b, err := json.Marshal(stats())
		if err != nil {
			if log != nil {
				log.Warn("fleet: stats reply", "err", err)
			}
			return
		}
		_ = m.Respond(b) // a requester that left does not matter
	})
	if err != nil {
		return fmt.Errorf("fleet: serve stats: %w", err)
	}
	return nil
}

// Gather asks every Levee process on the queue named by stream for its
// stats and collects the answers until wait has passed, or until no further
// answer came for a fifth of wait after the last one (processes answer from
// memory, so the answers arrive together), or ctx is done. Answers it could
// not read are left out and reported in the error, beside those it read.
func Gather(ctx context.Context, nc *nats.Conn, stream string, wait time.Duration) ([]Stats, error) {
	inbox := nats.NewInbox()
	// Room for every answer of a large deployment: a full channel drops
	// answers, and the totals would come out short.
	ch := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("fleet: stats: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(Subject(stream), inbox, nil); err != nil {
		return nil, fmt.Errorf("fleet: stats: %w", err)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	quiet := time.NewTimer(wait) // reset to wait/5 by each answer
	defer quiet.Stop()
	procs := []Stats{}
	var bad error
	for {
		select {
		case m := <-ch:
			if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
				// The server's "no responders": no process is
				// listening, so no answer is coming.
				return procs, bad
			}
			quiet.Reset(wait / 5)
			var p Stats
			if err := json.Unmarshal(m.Data, &p); err != nil {
				bad = errors.Join(bad, fmt.Errorf("fleet: stats: %w", err))
				continue
			}
			procs = append(procs, p)
		case <-quiet.C:
			return procs, bad
		case <-deadline.C:
			return procs, bad
		case <-ctx.Done():
			return procs, errors.Join(bad, ctx.Err())
		}
	}
}
