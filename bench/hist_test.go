package bench

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHistogramPercentilesAreWithinItsPrecision compares a Histogram with
// the exact percentiles of the same samples: below 512 µs they are equal,
// above within 0.4 %; the maximum is exact.
func TestHistogramPercentilesAreWithinItsPrecision(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var exact Samples
	for range 100000 {
		// Log-uniform from 1 µs to about 17 minutes.
		d := time.Duration(float64(time.Microsecond) * float64(uint64(1)<<rng.IntN(30)) * (1 + rng.Float64()))
		d = d.Truncate(time.Microsecond)
		h.Add(d)
		exact.Add(d)
	}
	require.EqualValues(t, 100000, h.Len())
	for _, p := range []float64{0.1, 1, 10, 50, 90, 99, 99.9, 100} {
		want, got := exact.Percentile(p), h.Percentile(p)
		if want < 512*time.Microsecond {
			require.Equal(t, want, got, "p%g", p)
			continue
		}
		require.InEpsilon(t, float64(want), float64(got), 0.004, "p%g: exact %s, histogram %s", p, want, got)
	}
	s := h.Summary()
	require.Equal(t, exact.Summary().Max, s.Max)
	require.True(t, s.P50 <= s.P90 && s.P90 <= s.P99 && s.P99 <= s.P999 && s.P999 <= s.Max, "%+v", *s)
}

func TestHistogramBucketsTileTheRange(t *testing.T) {
	var next int64
	for i := range histBuckets {
		lo, w := histRange(i)
		require.Equal(t, next, lo, "bucket %d starts where %d ended", i, i-1)
		require.Equal(t, i, histIndex(lo))
		require.Equal(t, i, histIndex(lo+w-1))
		next = lo + w
	}
	require.EqualValues(t, int64(histMaxUS)+1, next)
}

// TestHistogramTakesConcurrentAddsAndMerges adds from several goroutines
// (the soak's handlers do) and merges.
func TestHistogramTakesConcurrentAddsAndMerges(t *testing.T) {
	var a, b Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				a.Add(time.Duration(g*1000+i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	b.Add(-time.Second) // counts as zero
	b.Add(time.Hour)
	b.Merge(&a)
	require.EqualValues(t, 8002, b.Len())
	require.Equal(t, time.Hour, b.Percentile(100))
	require.Equal(t, time.Duration(0), b.Percentile(0.001))
	require.Nil(t, (&Histogram{}).Summary())
}
