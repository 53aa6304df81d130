package loadtest

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"time"
)

// Arrival is one message a schedule offers.
type Arrival struct {
	// At is the arrival's offset from the start of the run.
	At time.Duration
	// Size is the message size in bytes; 0 lets the message source choose.
	Size int
	// Rcpts is the number of recipients; 0 means 1.
	Rcpts int
	// Domain replaces the domain of the --to addresses when not empty.
	Domain string
}

// Schedule yields arrivals in time order. Next returns io.EOF after the
// last one; it is called from one goroutine, while the other methods may be
// called from others at the same time.
type Schedule interface {
	Next() (Arrival, error)
	// Phases names the parts of the run (before, during and after a surge)
	// that the reader probe's latency is reported by.
	Phases() []Phase
	// Duration is the offset of the end of the schedule (0 if unknown).
	Duration() time.Duration
	// RateAt is the scheduled rate at offset t in messages per second, for
	// the report's plot of the profile.
	RateAt(t time.Duration) float64
	// String describes the schedule for the report.
	String() string
}

// Phase is a named part of a run: [Start, End) offsets from its start.
type Phase struct {
	Name  string        `json:"name"`
	Start time.Duration `json:"start"`
	End   time.Duration `json:"end"`
}

// Phase names. A burst has before, during and after; other schedules have
// load; every run ends with drain, while the backlog, the retries and the
// queue catch up (until the last accepted message is stored, when the audit
// finds them all), then audit, while the audit looks every message up: the
// load tester's own load, which readers then feel and no verdict counts.
const (
	PhaseBefore = "before"
	PhaseDuring = "during"
	PhaseAfter  = "after"
	PhaseLoad   = "load"
	PhaseDrain  = "drain"
	PhaseAudit  = "audit"
)

// ArrivalOptions shape how a rate profile turns into arrivals.
type ArrivalOptions struct {
	// Poisson spaces arrivals with exponential gaps (independent senders);
	// otherwise they are evenly spaced, which makes runs comparable.
	Poisson bool
	// Seed makes Poisson arrivals reproducible.
	Seed uint64
	// Count stops the schedule after this many arrivals (0: no limit).
	Count int
}

// segment is a stretch of the profile whose rate changes linearly from
// `from` to `to` messages per second.
type segment struct {
	start, dur time.Duration
	from, to   float64
	phase      string
}

func (s segment) area() float64 { return (s.from + s.to) / 2 * s.dur.Seconds() }

// profile turns a piecewise-linear rate into arrivals: the i-th arrival is
// where the expected number of arrivals so far, Λ(t), reaches i (evenly
// spaced) or the sum of i exponential draws (Poisson).
type profile struct {
	segs  []segment
	desc  string
	opts  ArrivalOptions
	rng   *rand.Rand
	seg   int     // current segment
	base  float64 // Λ at the start of segs[seg]
	next  float64 // Λ of the next arrival
	count int
}

func newProfile(desc string, segs []segment, opts ArrivalOptions) (*profile, error) {
	var total time.Duration
	for _, s := range segs {
		if s.dur < 0 || s.from < 0 || s.to < 0 || math.IsNaN(s.from+s.to) || math.IsInf(s.from+s.to, 0) {
			return nil, fmt.Errorf("loadtest: schedule %s: negative or invalid rate or duration", desc)
		}
		total += s.dur
	}
	if total <= 0 {
		return nil, errors.New("loadtest: schedule " + desc + ": --duration must be > 0")
	}
	if opts.Count < 0 {
		return nil, errors.New("loadtest: --count must be >= 0")
	}
	p := &profile{segs: segs, desc: desc, opts: opts}
	if opts.Poisson {
		p.rng = rand.New(rand.NewPCG(opts.Seed, 0x1e7ee))
		p.next = p.rng.ExpFloat64()
	}
	return p, nil
}

// Constant offers rate messages per second for d.
func Constant(rate float64, d time.Duration, opts ArrivalOptions) (Schedule, error) {
	return newProfile(fmt.Sprintf("constant %s for %s", formatRate(rate), d),
		[]segment{{0, d, rate, rate, PhaseLoad}}, opts)
}

// Ramp changes the rate linearly from `from` to `to` over d.
func Ramp(from, to float64, d time.Duration, opts ArrivalOptions) (Schedule, error) {
	return newProfile(fmt.Sprintf("ramp %s to %s over %s", formatRate(from), formatRate(to), d),
		[]segment{{0, d, from, to, PhaseLoad}}, opts)
}

// BurstSpec is a surge on top of a baseline: Baseline until SurgeAt, then
// Surge for SurgeFor (reached over SurgeRamp and left over SurgeRamp, both
// counted in SurgeFor), then Baseline again until Duration.
type BurstSpec struct {
	Baseline  float64 // messages per second
	Surge     float64 // messages per second during the surge
	SurgeAt   time.Duration
	SurgeFor  time.Duration
	SurgeRamp time.Duration
	Duration  time.Duration
}

// Burst builds the surge schedule. A zero Duration is 3×SurgeFor; a zero
// SurgeAt centres the surge.
func Burst(b BurstSpec, opts ArrivalOptions) (Schedule, error) {
	if b.SurgeFor <= 0 {
		return nil, errors.New("loadtest: --surge-for must be > 0")
	}
	if b.Duration == 0 {
		b.Duration = 3 * b.SurgeFor
	}
	if b.SurgeAt == 0 {
		b.SurgeAt = (b.Duration - b.SurgeFor) / 2
	}
	switch {
	case b.SurgeAt < 0 || b.SurgeAt+b.SurgeFor > b.Duration:
		return nil, fmt.Errorf("loadtest: the surge (--surge-at %s, --surge-for %s) must fit in --duration %s", b.SurgeAt, b.SurgeFor, b.Duration)
	case b.SurgeRamp < 0 || 2*b.SurgeRamp > b.SurgeFor:
		return nil, fmt.Errorf("loadtest: --surge-ramp %s must be between 0 and half of --surge-for", b.SurgeRamp)
	}
	segs := []segment{{0, b.SurgeAt, b.Baseline, b.Baseline, PhaseBefore}}
	at := b.SurgeAt
	if b.SurgeRamp > 0 {
		segs = append(segs, segment{at, b.SurgeRamp, b.Baseline, b.Surge, PhaseDuring})
		at += b.SurgeRamp
	}
	flat := b.SurgeFor - 2*b.SurgeRamp
	segs = append(segs, segment{at, flat, b.Surge, b.Surge, PhaseDuring})
	at += flat
	if b.SurgeRamp > 0 {
		segs = append(segs, segment{at, b.SurgeRamp, b.Surge, b.Baseline, PhaseDuring})
		at += b.SurgeRamp
	}
	segs = append(segs, segment{at, b.Duration - at, b.Baseline, b.Baseline, PhaseAfter})
	desc := fmt.Sprintf("burst: baseline %s, surge %s for %s at %s, %s in all",
		formatRate(b.Baseline), formatRate(b.Surge), b.SurgeFor, b.SurgeAt, b.Duration)
	return newProfile(desc, segs, opts)
}

func (p *profile) String() string {
	d := p.desc
	if p.opts.Poisson {
		d += ", Poisson arrivals"
	}
	if p.opts.Count > 0 {
		d += fmt.Sprintf(", at most %d messages", p.opts.Count)
	}
	return d
}

func (p *profile) Duration() time.Duration {
	last := p.segs[len(p.segs)-1]
	return last.start + last.dur
}

func (p *profile) Phases() []Phase {
	var out []Phase
	for _, s := range p.segs {
		if s.dur == 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].Name == s.phase {
			out[n-1].End = s.start + s.dur
			continue
		}
		out = append(out, Phase{Name: s.phase, Start: s.start, End: s.start + s.dur})
	}
	return out
}

func (p *profile) RateAt(t time.Duration) float64 {
	for _, s := range p.segs {
		if t >= s.start && t < s.start+s.dur {
			return s.from + (s.to-s.from)*float64(t-s.start)/float64(s.dur)
		}
	}
	return 0
}

func (p *profile) Next() (Arrival, error) {
	if p.opts.Count > 0 && p.count >= p.opts.Count {
		return Arrival{}, io.EOF
	}
	for p.seg < len(p.segs) {
		s := p.segs[p.seg]
		x := p.next - p.base // arrivals still to go inside this segment
		if a := s.area(); x >= a {
			p.base += a
			p.seg++
			continue
		}
		at := s.start + time.Duration(solveRamp(s, x)*float64(time.Second))
		if p.opts.Poisson {
			p.next += p.rng.ExpFloat64()
		} else {
			p.next++
		}
		p.count++
		return Arrival{At: at}, nil
	}
	return Arrival{}, io.EOF
}

// solveRamp returns τ (seconds into s) where s's expected arrivals reach x:
// from·τ + (to−from)/(2·dur)·τ² = x, solved in the form that stays accurate
// when the rate barely changes.
func solveRamp(s segment, x float64) float64 {
	a := (s.to - s.from) / (2 * s.dur.Seconds())
	b := s.from
	disc := b*b + 4*a*x
	if disc < 0 {
		disc = 0
	}
	den := b + math.Sqrt(disc)
	if den <= 0 {
		return 0
	}
	return 2 * x / den
}

// expectedArrivals is Λ over [from, to): how many arrivals the schedule's
// rate profile promises in that interval (without a Count limit).
func expectedArrivals(s Schedule, from, to time.Duration) float64 {
	p, ok := s.(*profile)
	if !ok {
		return math.NaN()
	}
	var sum float64
	for _, g := range p.segs {
		lo, hi := max(from, g.start), min(to, g.start+g.dur)
		if hi <= lo {
			continue
		}
		r0, r1 := p.RateAt(lo), g.from+(g.to-g.from)*float64(hi-g.start)/float64(g.dur)
		sum += (r0 + r1) / 2 * (hi - lo).Seconds()
	}
	return sum
}
