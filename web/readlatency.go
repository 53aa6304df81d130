package web

import (
	"slices"
	"sync"
	"time"

	"github.com/levee-mail/levee/internal/baseline"
)

// Reader latency windows: the p99 of each readWindow of mailbox API reads;
// the idle baseline is the lowest p99 of the windows within readIdleSpan
// that saw at least readMinSamples reads.
const (
	readWindow     = 5 * time.Second
	readIdleSpan   = 30 * time.Minute
	readMinSamples = 20
	// readMaxSamples bounds one window's memory (a busy web app's reads
	// beyond it are sampled: every read still counts, one in k is kept).
	readMaxSamples = 20000
)

// readLatency tracks how long the mailbox API's reads take, as the readers
// (a web app paging through mailboxes) feel it: the p99 of the last
// complete window, and the idle baseline, the best such p99 of the last
// half hour. The workers hold their drain to a budget relative to it
// (worker.autoscale.reader_budget).
type readLatency struct {
	mu     sync.Mutex
	now    func() time.Time
	start  time.Time       // of the current window
	cur    []time.Duration // its samples
	seen   int             // reads in the current window
	last   time.Duration   // p99 of the last complete window; 0: none
	lastN  int
	lastAt time.Time         // when that window started
	idle   *baseline.Windows // p99s of the complete windows with enough samples
}

func newReadLatency(now func() time.Time) *readLatency {
	return &readLatency{now: now, start: now(), idle: baseline.New(readIdleSpan)}
}

// observe records one read.
func (r *readLatency) observe(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roll()
	r.seen++
	if len(r.cur) < readMaxSamples {
		r.cur = append(r.cur, d)
	} else {
		r.cur[r.seen%readMaxSamples] = d // overwrite round-robin: a sample of the window
	}
}

// roll closes the windows that ended.
func (r *readLatency) roll() {
	t := r.now()
	elapsed := t.Sub(r.start)
	if elapsed < readWindow {
		return
	}
	var p99 time.Duration
	if len(r.cur) > 0 {
		slices.Sort(r.cur)
		p99 = r.cur[min(len(r.cur)-1, len(r.cur)*99/100)]
	}
	if len(r.cur) >= readMinSamples {
		r.idle.Add(t, p99)
	}
	r.last, r.lastN, r.lastAt = p99, len(r.cur), r.start
	if elapsed >= 2*readWindow {
		r.last, r.lastN = 0, 0 // the window before now saw no reads
	}
	r.cur, r.seen = r.cur[:0], 0
	r.start = t
}

// ReadLatency is the p99 of the reads in the last complete window, when
// that window started, and the idle baseline: the 10th percentile of the
// windows' p99s of the last half hour (their minimum would be one lucky
// window, and noise above it would read as over budget). ok is false until
// a window with enough reads was seen, or when the last window had too few
// to judge by.
func (r *readLatency) ReadLatency() (recent, idle time.Duration, since time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roll()
	idle, n := r.idle.Baseline(r.now())
	if r.lastN < readMinSamples || n == 0 {
		return 0, 0, time.Time{}, false
	}
	return r.last, idle, r.lastAt, true
}
