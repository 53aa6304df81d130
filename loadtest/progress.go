package loadtest

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// auditProgress is what the progress line shows while the audit runs.
type auditProgress struct {
	running       atomic.Bool
	found, wanted atomic.Int64
}

// progressLoop writes the progress line: every second on a terminal, where
// it rewrites itself, otherwise every ProgressEvery as a log line.
func (r *run) progressLoop(ctx context.Context) {
	every := r.cfg.ProgressEvery
	if r.cfg.ProgressLive {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.progress(now)
		}
	}
}

func (r *run) progress(now time.Time) {
	s := r.stats.snapshot()
	var b strings.Builder
	fmt.Fprintf(&b, "%7s %-6s offered %d  accepted %d  deferred %d  failed %d",
		now.Sub(r.start).Truncate(time.Second), r.phaseAt(now.Sub(r.start)), s.offered, s.accepted, s.deferred, s.failed)
	if s.expired+s.unsent > 0 {
		fmt.Fprintf(&b, "  given up %d", s.expired+s.unsent)
	}
	fmt.Fprintf(&b, "  backlog %d  sessions %d", r.backlog.Load()+r.retrying.Load(), r.sessions.Load())
	if r.scraper != nil {
		if q, ok := r.scraper.latest(); ok {
			fmt.Fprintf(&b, "  queue %d", q.Messages)
		} else {
			b.WriteString("  queue ?")
		}
	}
	if r.readers != nil {
		if p99, ok := r.readers.recentP99(now, 5*time.Second); ok {
			fmt.Fprintf(&b, "  reader p99 %s", fmtDur(p99))
		}
	}
	if r.auditing.running.Load() {
		fmt.Fprintf(&b, "  audit %d/%d stored", r.auditing.found.Load(), r.auditing.wanted.Load())
	}
	if r.cfg.ProgressLive {
		fmt.Fprintf(r.cfg.Progress, "\r%s\x1b[K", b.String())
	} else {
		fmt.Fprintln(r.cfg.Progress, b.String())
	}
}

// progressDone ends the live line so that what follows starts on its own.
func (r *run) progressDone() {
	if r.cfg.Progress != nil && r.cfg.ProgressLive {
		r.progress(time.Now())
		fmt.Fprintln(r.cfg.Progress)
	}
}

// fmtDur rounds a latency for people: 3 significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Microsecond:
		return d.String()
	case d < time.Millisecond:
		return d.Round(time.Microsecond / 100).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
