package loadtest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/levee-mail/levee/internal/bytesize"
)

// ParseRate reads an arrival rate in messages per second from "200/s",
// "200" (per second), "12000/m" or "500/h".
func ParseRate(s string) (float64, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("rate %q: want a number of messages per second, like 200/s, 12000/m or 500/h", s)
	}
	switch strings.TrimSpace(unit) {
	case "", "s", "sec":
		return v, nil
	case "m", "min":
		return v / 60, nil
	case "h", "hour":
		return v / 3600, nil
	default:
		return 0, fmt.Errorf("rate %q: unknown unit %q (use /s, /m or /h)", s, unit)
	}
}

// ParseSurge reads the surge rate, either a multiple of the baseline ("10x")
// or an absolute rate ("2000/s").
func ParseSurge(s string, baseline float64) (float64, error) {
	if m, ok := strings.CutSuffix(strings.TrimSpace(s), "x"); ok {
		f, err := strconv.ParseFloat(m, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, fmt.Errorf("surge %q: want a multiple of the baseline like 10x, or a rate like 2000/s", s)
		}
		return baseline * f, nil
	}
	return ParseRate(s)
}

// formatRate renders messages per second compactly ("200/s", "0.5/s").
func formatRate(r float64) string {
	return strconv.FormatFloat(r, 'f', -1, 64) + "/s"
}

// ParseSize reads a byte count spelled as everywhere else in Levee (see
// bytesize.Parse): "4096", "4k", "4KiB", "1MiB", "4KB". k, m, KiB and MiB
// are binary (k = 1024); KB and MB are decimal (KB = 1000), as in the
// config. It refuses more than 2 GiB, far beyond any message or in-memory
// corpus of a load test.
func ParseSize(s string) (int, error) {
	n, err := bytesize.Parse(s)
	if err != nil || n > 1<<31 {
		return 0, fmt.Errorf("size %q: want bytes like 4096, 4KiB or 1MiB", s)
	}
	return int(n), nil
}

// SizeDist draws message sizes. Zero value: every message DefaultSize.
type SizeDist struct {
	kind   string // "fixed", "uniform", "lognormal"
	a, b   float64
	spec   string
	capped int
}

// DefaultSize is the generated message size when none is given.
const DefaultSize = 4 << 10

// ParseSizeDist reads a size distribution:
//
//	4KiB                   every message 4 KiB
//	uniform:1KiB-64KiB     uniform between the two
//	lognormal:8KiB,1.0     log-normal with that median and sigma (real
//	                       mail is roughly log-normal: many small, a few large)
func ParseSizeDist(s string) (SizeDist, error) {
	kind, arg, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		n, err := ParseSize(s)
		if err != nil {
			return SizeDist{}, err
		}
		return SizeDist{kind: "fixed", a: float64(n), spec: s}, nil
	}
	switch kind {
	case "uniform":
		lo, hi, ok := strings.Cut(arg, "-")
		a, err1 := ParseSize(lo)
		b, err2 := ParseSize(hi)
		if !ok || errors.Join(err1, err2) != nil || b < a {
			return SizeDist{}, fmt.Errorf("size %q: want uniform:MIN-MAX, like uniform:1KiB-64KiB", s)
		}
		return SizeDist{kind: kind, a: float64(a), b: float64(b), spec: s}, nil
	case "lognormal":
		med, sig, ok := strings.Cut(arg, ",")
		m, err1 := ParseSize(med)
		sigma, err2 := strconv.ParseFloat(strings.TrimSpace(sig), 64)
		if !ok || errors.Join(err1, err2) != nil || m <= 0 || sigma < 0 || sigma > 5 {
			return SizeDist{}, fmt.Errorf("size %q: want lognormal:MEDIAN,SIGMA, like lognormal:8KiB,1.0", s)
		}
		return SizeDist{kind: kind, a: math.Log(float64(m)), b: sigma, spec: s}, nil
	default:
		return SizeDist{}, fmt.Errorf("size %q: unknown distribution %q (fixed size, uniform: or lognormal:)", s, kind)
	}
}

// Capped returns the distribution with draws limited to maxSize bytes.
func (d SizeDist) Capped(maxSize int) SizeDist { d.capped = maxSize; return d }

// String is the spec the distribution was parsed from.
func (d SizeDist) String() string {
	if d.spec == "" {
		return strconv.Itoa(DefaultSize)
	}
	return d.spec
}

// draw returns one size using r.
func (d SizeDist) draw(r *rand.Rand) int {
	var v float64
	switch d.kind {
	case "fixed":
		v = d.a
	case "uniform":
		v = d.a + r.Float64()*(d.b-d.a)
	case "lognormal":
		v = math.Exp(d.a + d.b*r.NormFloat64())
	default:
		v = DefaultSize
	}
	n := int(v)
	if d.capped > 0 {
		n = min(n, d.capped)
	}
	return max(n, 0)
}
