package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram collects latencies in constant memory, for phases too long to
// keep every sample (the soak: millions of alarms, whose samples would grow
// the very heap it watches). Values are microseconds in log-linear buckets:
// exact below 512 µs, then 256 buckets per power of two, so a percentile is
// within 0.4 % of the exact one (reported as its bucket's midpoint); the
// maximum is exact. Add is safe for concurrent use (atomic counters, no
// lock); read it once the adders are done.
type Histogram struct {
	counts [histBuckets]atomic.Int64
	n      atomic.Int64
	sumUS  atomic.Int64
	maxUS  atomic.Int64
}

const (
	histSubBits = 8
	histSub     = 1 << histSubBits // buckets per power of two
	histExact   = 2 * histSub      // values below this have a bucket each
	// histMaxUS bounds the values (longer ones count as this: 2^40 µs is
	// about 12 days).
	histMaxUS   = 1<<40 - 1
	histBuckets = histExact + (40-histSubBits-1)*histSub
)

// histIndex returns the bucket of us (0 ≤ us ≤ histMaxUS).
func histIndex(us int64) int {
	if us < histExact {
		return int(us)
	}
	shift := bits.Len64(uint64(us)) - histSubBits - 1 // us>>shift is in [histSub, histExact)
	return histExact + (shift-1)*histSub + int(us>>shift) - histSub
}

// histRange returns the smallest value of bucket i and its width.
func histRange(i int) (lo, width int64) {
	if i < histExact {
		return int64(i), 1
	}
	shift := (i-histExact)/histSub + 1
	return int64((i-histExact)%histSub+histSub) << shift, 1 << shift
}

// Add records one latency; a negative one counts as zero.
func (h *Histogram) Add(d time.Duration) {
	us := min(max(d.Microseconds(), 0), histMaxUS)
	h.counts[histIndex(us)].Add(1)
	h.n.Add(1)
	h.sumUS.Add(us)
	for {
		m := h.maxUS.Load()
		if us <= m || h.maxUS.CompareAndSwap(m, us) {
			break
		}
	}
}

// Len returns the number of latencies recorded.
func (h *Histogram) Len() int64 { return h.n.Load() }

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sumUS.Add(o.sumUS.Load())
	if m := o.maxUS.Load(); m > h.maxUS.Load() {
		h.maxUS.Store(m)
	}
}

// Percentile returns the p-th percentile (0 < p ≤ 100) by nearest rank, as
// the midpoint of its bucket (never above the maximum); 0 without samples.
func (h *Histogram) Percentile(p float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := min(max(int64(math.Ceil(p/100*float64(n))), 1), n)
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, w := histRange(i)
			return time.Duration(min(lo+w/2, h.maxUS.Load())) * time.Microsecond
		}
	}
	return time.Duration(h.maxUS.Load()) * time.Microsecond
}

// Summary returns the latency summary, P999 included, or nil without
// samples.
func (h *Histogram) Summary() *Latency {
	n := h.n.Load()
	if n == 0 {
		return nil
	}
	return &Latency{
		P50:  ms(h.Percentile(50)),
		P90:  ms(h.Percentile(90)),
		P99:  ms(h.Percentile(99)),
		P999: ms(h.Percentile(99.9)),
		Max:  ms(time.Duration(h.maxUS.Load()) * time.Microsecond),
		Mean: ms(time.Duration(h.sumUS.Load()/n) * time.Microsecond),
	}
}
