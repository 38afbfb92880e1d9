package bench

import (
	"math"
	"slices"
	"time"
)

// Latency summarises the latencies of one phase, in milliseconds. Percentiles
// are exact (nearest rank over every sample), not estimated from buckets,
// except those of a Histogram (the soak's), within 0.4 %.
type Latency struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	// P999 is the 99.9th percentile.
	P999 float64 `json:"p999_ms,omitempty"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// Samples collects latencies. It is not safe for concurrent use: give each
// worker its own and Merge them when the workers are done.
type Samples struct {
	d      []time.Duration
	sorted bool
}

// Add records one latency.
func (s *Samples) Add(d time.Duration) {
	s.d = append(s.d, d)
	s.sorted = false
}

// Merge adds every sample of o.
func (s *Samples) Merge(o *Samples) {
	s.d = append(s.d, o.d...)
	s.sorted = false
}

// Len returns the number of samples.
func (s *Samples) Len() int { return len(s.d) }

// Percentile returns the p-th percentile (0 < p ≤ 100) by nearest rank: the
// smallest sample such that at least p % of the samples are at or below it.
// It returns 0 without samples.
func (s *Samples) Percentile(p float64) time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	s.sort()
	rank := int(math.Ceil(p / 100 * float64(len(s.d))))
	return s.d[min(max(rank, 1), len(s.d))-1]
}

func (s *Samples) sort() {
	if !s.sorted {
		slices.Sort(s.d)
		s.sorted = true
	}
}

// Summary returns the phase's latency summary, or nil without samples.
func (s *Samples) Summary() *Latency {
	if len(s.d) == 0 {
		return nil
	}
	s.sort()
	var sum time.Duration
	for _, d := range s.d {
		sum += d
	}
	return &Latency{
		P50:  ms(s.Percentile(50)),
		P90:  ms(s.Percentile(90)),
		P99:  ms(s.Percentile(99)),
		P999: ms(s.Percentile(99.9)),
		Max:  ms(s.d[len(s.d)-1]),
		Mean: ms(sum / time.Duration(len(s.d))),
	}
}

// ms converts d to (fractional) milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Rate returns n per second over d, or 0 when d is not positive.
func Rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
