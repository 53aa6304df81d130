package loadtest

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/emersion/go-smtp"
)

// worker owns one SMTP session at a time and delivers the jobs it is
// handed, like one delivery process of an MTA.
type worker struct {
	r        *run
	id       int
	s        *session
	hdr      bytes.Buffer
	parts    [][]byte
	rng      *rand.Rand
	failures int // consecutive connection failures, for the reconnect backoff
	idBuf    []byte
}

func (r *run) work(ctx context.Context, id int) {
	w := &worker{r: r, id: id, rng: rand.New(rand.NewPCG(r.cfg.Seed, uint64(id)+1<<32))}
	defer w.drop(true)
	for j := range r.jobs {
		w.deliver(ctx, j)
		r.back <- j
	}
}

func (w *worker) drop(quit bool) {
	if w.s != nil {
		w.s.close(quit)
		w.s = nil
		w.r.sessions.Add(-1)
	}
}

// deliver makes one attempt at j and decides what follows: accepted,
// failed, retried later or given up.
func (w *worker) deliver(ctx context.Context, j *job) {
	cfg := &w.r.cfg
	if w.s != nil && cfg.MessagesPerConnection > 0 && w.s.sent >= cfg.MessagesPerConnection {
		w.drop(true)
	}
	if w.s == nil && !w.connect(ctx, j) {
		return
	}
	if time.Since(w.s.lastUsed) > cfg.IdleProbe {
		w.s.dirty = true // probe a session that sat idle with RSET
	}
	seq := strconv.FormatUint(j.seq, 10)
	w.idBuf = append(append(append(w.idBuf[:0], seq...), '.'), w.r.runID...)
	ltID := string(w.idBuf)
	w.hdr.Reset()
	writeOwnHeader(&w.hdr, messageID(j.seq, w.r.runID), ltID, j.due)
	rest := w.r.source.Compose(j.seq, j.arr, cfg.From, j.rcpts, &w.hdr)
	w.parts = append(append(w.parts[:0], w.hdr.Bytes()), rest...)
	size := 0
	for _, p := range w.parts {
		size += len(p)
	}
	j.attempts++
	began := time.Now()
	w.r.stats.attempt(began)
	res, err := w.s.send(cfg.From, j.rcpts, size, w.parts)
	now := time.Now()
	if err != nil {
		w.drop(false)
	}
	switch {
	case res.refused != nil:
		w.refused(j, res.refused, now)
	case err != nil:
		// The connection broke: the message may or may not have been
		// accepted. An MTA sends it again; so do we, byte for byte, and
		// the audit tells whether the server stored it once.
		w.r.stats.netError()
		w.later(j, now)
	default:
		j.final = true
		w.r.stats.accept(j, began, now, res.rejectedRcpts)
	}
}

// messageID is the Message-ID (without <>) the audit looks up.
func messageID(seq uint64, runID string) string {
	return strconv.FormatUint(seq, 10) + "." + runID + "@loadtest.levee"
}

// connect opens a session, waiting first if the last ones failed, so that a
// server that refuses connections is not hammered. On failure the job is
// deferred and false returned.
func (w *worker) connect(ctx context.Context, j *job) bool {
	cfg := &w.r.cfg
	if w.failures > 0 {
		wait := cfg.Retry.backoff(w.failures, w.rng)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if ctx.Err() != nil {
		j.final = true
		w.r.stats.finish(j, stateUnsent, time.Now())
		return false
	}
	s, err := dialSession(ctx, w.r.sessionConfig())
	now := time.Now()
	if err != nil {
		w.failures++
		w.r.stats.connError(now)
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			w.refused(j, se, now) // 421 greeting: too many connections
		} else {
			w.later(j, now)
		}
		return false
	}
	w.failures = 0
	w.s = s
	w.r.sessions.Add(1)
	return true
}

// refused handles a reply that was not 250: 4xx is retried, 5xx fails.
func (w *worker) refused(j *job, e *smtp.SMTPError, now time.Time) {
	w.r.stats.refuse(e, now)
	if e.Code/100 == 4 {
		w.later(j, now)
		return
	}
	j.final = true
	w.r.stats.finish(j, stateFailed, now)
}

// later schedules the next attempt, or gives up when it would fall past
// the retry time.
func (w *worker) later(j *job, now time.Time) {
	p := w.r.cfg.Retry
	next := now.Add(p.backoff(j.attempts, w.rng))
	if next.Sub(j.due) > p.GiveUpAfter {
		j.final = true
		w.r.stats.finish(j, stateExpired, now)
		return
	}
	j.notBefore = next
	w.r.stats.retry()
}
