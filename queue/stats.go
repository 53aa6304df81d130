package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Every Levee process connected to the queue answers a stats request on
// StatsSubject with its ProcessStats, so that `levee queue status` and the
// dashboard can show worker concurrency and SMTP deferrals summed over a
// whole deployment, whichever process is asked. It is core NATS
// request/reply, outside any stream (the "_LEVEE." prefix keeps it clear of
// the stream subjects): a process that is gone simply does not answer.

// StatsSubject is the subject the processes of the queue named by stream
// answer stats requests on.
func StatsSubject(stream string) string { return "_LEVEE.stats." + stream }

// processWait is the longest Status waits for processes to answer. They
// answer from memory, so a live one answers within a round trip; Processes
// stops early once the answers stop coming.
const processWait = 250 * time.Millisecond

// sizeCheckWait is processWait for the check that no receiver accepts
// larger mail than a lowered max_msg_size: a receiver missed there means
// bounced mail, so it listens longer.
const sizeCheckWait = time.Second

// ProcessStats is one Levee process's own figures.
type ProcessStats struct {
	Instance  string       `json:"instance"` // host:pid
	Roles     string       `json:"roles"`
	StartedAt time.Time    `json:"started_at"`
	Worker    *WorkerStats `json:"worker,omitempty"`
	SMTP      *SMTPStats   `json:"smtp,omitempty"`
}

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

func (st *Status) addProcesses(procs []ProcessStats) {
	if procs == nil {
		procs = []ProcessStats{}
	}
	st.Processes = procs
	st.Workers, st.SMTP = WorkerTotals{}, SMTPTotals{}
	for _, p := range procs {
		if w := p.Worker; w != nil {
			st.Workers.Processes++
			st.Workers.Concurrency += w.Concurrency
		}
		if s := p.SMTP; s != nil {
			st.SMTP.Processes++
			st.SMTP.Accepted += s.Accepted
			st.SMTP.Deferred += s.Deferred
			st.SMTP.Rejected += s.Rejected
			st.SMTP.Sessions += s.Sessions
		}
	}
}

// ServeStats answers stats requests with what stats returns, until the
// queue closes. stats must be safe for concurrent use and quick.
func (q *Queue) ServeStats(stats func() ProcessStats) error {
	_, err := q.nc.Subscribe(StatsSubject(q.cfg.Stream), func(m *nats.Msg) {
		b, err := json.Marshal(stats())
		if err != nil {
			q.log.Warn("queue: stats reply", "err", err)
			return
		}
		_ = m.Respond(b) // a requester that left does not matter
	})
	if err != nil {
		return fmt.Errorf("queue: serve stats: %w", err)
	}
	return nil
}

// Processes asks every Levee process on this queue for its stats and
// collects the answers until wait has passed, or until no further answer
// came for a fifth of wait after the last one (processes answer from
// memory, so the answers arrive together), or ctx is done.
func (a *Admin) Processes(ctx context.Context, wait time.Duration) ([]ProcessStats, error) {
	inbox := nats.NewInbox()
	// Room for every answer of a large deployment: a full channel drops
	// answers, and the totals would come out short.
	ch := make(chan *nats.Msg, 1024)
	sub, err := a.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("queue: process stats: %w", err)
	}
	defer sub.Unsubscribe()
	if err := a.nc.PublishRequest(StatsSubject(a.cfg.Stream), inbox, nil); err != nil {
		return nil, fmt.Errorf("queue: process stats: %w", err)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	quiet := time.NewTimer(wait) // reset to wait/5 by each answer
	defer quiet.Stop()
	procs := []ProcessStats{}
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
			var p ProcessStats
			if err := json.Unmarshal(m.Data, &p); err != nil {
				bad = errors.Join(bad, fmt.Errorf("queue: process stats: %w", err))
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
