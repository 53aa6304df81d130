package loadtest

import (
	"math"
	"time"
)

// histogram records durations in logarithmic buckets 2% wide, from 1µs to
// about an hour (longer values land in the last bucket; min and max stay
// exact). Its memory is fixed, whatever the number of samples, so that a
// long run at a high rate does not grow with every message. Not safe for
// concurrent use: callers hold their own lock.
type histogram struct {
	counts []uint64
	n      uint64
	sum    float64 // seconds
	min    time.Duration
	max    time.Duration
}

const (
	histBase    = float64(time.Microsecond)
	histGrowth  = 1.02
	histBuckets = 1110 // histBase * 1.02^1110 is about 1.1 hours
)

var histLogGrowth = math.Log(histGrowth)

// newHistogram returns an empty histogram.
func newHistogram() *histogram { return &histogram{counts: make([]uint64, histBuckets)} }

func histIndex(d time.Duration) int {
	if float64(d) <= histBase {
		return 0
	}
	i := int(math.Log(float64(d)/histBase) / histLogGrowth)
	return min(i, histBuckets-1)
}

// bucketBounds returns bucket i's lower and upper edge.
func bucketBounds(i int) (lo, hi time.Duration) {
	return time.Duration(histBase * math.Pow(histGrowth, float64(i))), time.Duration(histBase * math.Pow(histGrowth, float64(i+1)))
}

// Record adds one sample; negative durations count as 0.
func (h *histogram) Record(d time.Duration) {
	d = max(d, 0)
	h.counts[histIndex(d)]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d.Seconds()
}

// Merge adds o's samples to h.
func (h *histogram) Merge(o *histogram) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of samples.
func (h *histogram) Count() uint64 { return h.n }

// Quantile returns the value below which a fraction q (0..1) of the samples
// lie, to the bucket's 2% precision; 0 when empty.
func (h *histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	if q <= 0 {
		return h.min
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketBounds(i)
			if i == 0 {
				lo = 0
			}
			// The bucket's middle, but never outside what was seen.
			v := lo + (hi-lo)/2
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// Summary condenses the histogram for the JSON result.
func (h *histogram) Summary() Quantiles {
	q := Quantiles{Count: h.n}
	if h.n == 0 {
		return q
	}
	q.Mean = h.sum / float64(h.n)
	q.Min = h.min.Seconds()
	q.P50 = h.Quantile(0.50).Seconds()
	q.P90 = h.Quantile(0.90).Seconds()
	q.P99 = h.Quantile(0.99).Seconds()
	q.P999 = h.Quantile(0.999).Seconds()
	q.Max = h.max.Seconds()
	return q
}

// Bins returns the non-empty range of buckets regrouped into about n bins of
// equal width on a log scale, for plotting a distribution.
func (h *histogram) Bins(n int) []HistBin {
	if h.n == 0 || n < 1 {
		return nil
	}
	first, last := -1, -1
	for i, c := range h.counts {
		if c > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	per := max(1, (last-first+1+n-1)/n)
	var bins []HistBin
	for i := first; i <= last; i += per {
		var c uint64
		for j := i; j < min(i+per, last+1); j++ {
			c += h.counts[j]
		}
		lo, _ := bucketBounds(i)
		_, hi := bucketBounds(min(i+per, last+1) - 1)
		bins = append(bins, HistBin{Min: lo.Seconds(), Max: hi.Seconds(), Count: c})
	}
	return bins
}

// HistBin is one bar of a latency distribution, edges in seconds.
type HistBin struct {
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Count uint64  `json:"count"`
}

// Quantiles summarise a latency distribution; every value is in seconds.
type Quantiles struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean"`
	Min   float64 `json:"min"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}
