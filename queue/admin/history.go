package admin

import (
	"context"
	"sync"
	"time"

	"github.com/levee-mail/levee/queue/fleet"
)

// Rates are per-second changes between two statuses.
type Rates struct {
	// WindowSeconds is the time between the two statuses; 0 when there was
	// no earlier one, and then every rate is 0.
	WindowSeconds float64 `json:"window_seconds"`
	// Ingest: messages accepted into the stream (duplicates excluded).
	Ingest float64 `json:"ingest_per_second"`
	// Drain: messages removed from the stream (stored or dead-lettered).
	Drain float64 `json:"drain_per_second"`
	// Deferrals: 4xx replies of the receivers that answered both times
	// (see deferredBetween).
	Deferrals float64 `json:"deferrals_per_second"`
}

// RatesBetween differentiates two statuses of the same stream, prev taken
// before cur. Counters that went backwards (a restarted receiver, a
// recreated stream) count as zero rather than negative.
func RatesBetween(prev, cur Status) Rates {
	dt := cur.At.Sub(prev.At).Seconds()
	if dt <= 0 || prev.At.IsZero() {
		return Rates{}
	}
	r := Rates{WindowSeconds: dt}
	r.Ingest = float64(delta(prev.LastSeq, cur.LastSeq)) / dt
	r.Drain = float64(delta(removed(prev), removed(cur))) / dt
	r.Deferrals = float64(deferredBetween(prev.Processes, cur.Processes)) / dt
	return r
}

// deferredBetween sums the deferrals of each receiver that answered both
// times (the same instance, started at the same time): a receiver missing
// from one of the samples, or restarted between them, would otherwise
// show its whole lifetime's count as a burst, or a drop.
func deferredBetween(prev, cur []fleet.Stats) uint64 {
	type key struct {
		instance string
		started  time.Time
	}
	before := make(map[key]uint64, len(prev))
	for _, p := range prev {
		if p.SMTP != nil {
			before[key{p.Instance, p.StartedAt.UTC()}] = p.SMTP.Deferred
		}
	}
	var sum uint64
	for _, p := range cur {
		if p.SMTP == nil {
			continue
		}
		if b, ok := before[key{p.Instance, p.StartedAt.UTC()}]; ok {
			sum += delta(b, p.SMTP.Deferred)
		}
	}
	return sum
}

// removed is how many messages ever left the stream.
func removed(s Status) uint64 {
	if s.LastSeq < s.Messages {
		return 0
	}
	return s.LastSeq - s.Messages
}

func delta(a, b uint64) uint64 {
	if b < a {
		return 0
	}
	return b - a
}

// Sample is one point of the queue's recent history (the dashboard's charts).
type Sample struct {
	At                time.Time `json:"at"`
	Messages          uint64    `json:"messages"`
	Bytes             uint64    `json:"bytes"`
	Fill              float64   `json:"fill"`
	Ingest            float64   `json:"ingest_per_second"`
	Drain             float64   `json:"drain_per_second"`
	Deferrals         float64   `json:"deferrals_per_second"`
	WorkerConcurrency int       `json:"worker_concurrency"`
	DeadLetters       uint64    `json:"dead_letters"`
	OldestAgeSeconds  float64   `json:"oldest_message_age_seconds"`
}

// StatusSource is what a Sampler samples (an *Admin).
type StatusSource interface {
	Status(ctx context.Context) (Status, error)
}

// Sampler takes a status every Interval and keeps the last Keep of them, so
// that a status can come with rates over RateWindow and the dashboard with
// its recent history. One per process that serves the ops API.
type Sampler struct {
	src      StatusSource
	interval time.Duration
	keep     int
	window   time.Duration

	mu       sync.Mutex
	statuses []Status // ring of the last statuses, oldest first
	samples  []Sample
}

// Sampler defaults: a point every 2 s for 15 minutes, rates over 10 s.
const (
	DefaultSampleInterval = 2 * time.Second
	DefaultSampleKeep     = 450
	DefaultRateWindow     = 10 * time.Second
)

// NewSampler samples src; zero arguments take the defaults.
func NewSampler(src StatusSource, interval time.Duration, keep int, window time.Duration) *Sampler {
	if interval <= 0 {
		interval = DefaultSampleInterval
	}
	if keep <= 0 {
		keep = DefaultSampleKeep
	}
	if window <= 0 {
		window = DefaultRateWindow
	}
	return &Sampler{src: src, interval: interval, keep: keep, window: window}
}

// Interval is the time between samples.
func (s *Sampler) Interval() time.Duration { return s.interval }

// Run samples until ctx is done. A failed status is skipped: the history
// shows a gap, not a made-up point.
func (s *Sampler) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.sampleOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Sampler) sampleOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.interval)
	defer cancel()
	st, err := s.src.Status(ctx)
	if err != nil {
		return
	}
	s.add(st)
}

func (s *Sampler) add(st Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r Rates
	if n := len(s.statuses); n > 0 {
		r = RatesBetween(s.statuses[n-1], st)
	}
	s.statuses = append(s.statuses, st)
	s.samples = append(s.samples, Sample{
		At: st.At, Messages: st.Messages, Bytes: st.Bytes, Fill: st.Fill.Max,
		Ingest: r.Ingest, Drain: r.Drain, Deferrals: r.Deferrals,
		WorkerConcurrency: st.Workers.Concurrency, DeadLetters: st.DeadLetters,
		OldestAgeSeconds: st.OldestMessageAge.Seconds(),
	})
	if over := len(s.statuses) - s.keep; over > 0 {
		s.statuses = append(s.statuses[:0:0], s.statuses[over:]...)
		s.samples = append(s.samples[:0:0], s.samples[over:]...)
	}
}

// Status returns a fresh status with rates over about the rate window: from
// the newest sample at least that old (or the oldest one there is).
func (s *Sampler) Status(ctx context.Context) (Status, error) {
	st, err := s.src.Status(ctx)
	if err != nil {
		return Status{}, err
	}
	s.mu.Lock()
	var prev Status
	for i := len(s.statuses) - 1; i >= 0; i-- {
		prev = s.statuses[i]
		if st.At.Sub(prev.At) >= s.window {
			break
		}
	}
	s.mu.Unlock()
	st.Rates = RatesBetween(prev, st)
	return st, nil
}

// History returns the samples taken after since (all when since is zero),
// oldest first.
func (s *Sampler) History(since time.Time) []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Sample{}
	for _, x := range s.samples {
		if x.At.After(since) {
			out = append(out, x)
		}
	}
	return out
}
