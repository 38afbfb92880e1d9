package bench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPercentileIsNearestRank(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100 … 1, unsorted on purpose
	}
	for _, tc := range []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty is zero", nil, 50, 0},
		{"one sample is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p90 of 1..100", ms(hundred...), 90, 90 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p50 of four rounds up to the second", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p51 of four is the third", ms(4, 1, 3, 2), 51, 3 * time.Millisecond},
		{"p99 of ten is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"tiny p is the min", ms(5, 3, 9), 0.001, 3 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Samples
			for _, d := range tc.samples {
				s.Add(d)
			}
			require.Equal(t, tc.want, s.Percentile(tc.p))
		})
	}
}

func TestSummaryOfMergedSamples(t *testing.T) {
	var a, b Samples
	for i := 1; i <= 50; i++ {
		a.Add(time.Duration(i) * time.Millisecond)
		b.Add(time.Duration(i+50) * time.Millisecond)
	}
	a.Merge(&b)
	require.Equal(t, 100, a.Len())
	got := a.Summary()
	require.Equal(t, &Latency{P50: 50, P90: 90, P99: 99, P999: 100, Max: 100, Mean: 50.5}, got)

	var empty Samples
	require.Nil(t, empty.Summary(), "no samples, no latency")
}

func TestRate(t *testing.T) {
	require.InDelta(t, 2000.0, Rate(1000, 500*time.Millisecond), 1e-9)
	require.Zero(t, Rate(10, 0), "no time, no rate")
}

// TestClosedLoopMeasuresAnOperationSlowerThanItsWindow: on a slow machine an
// operation may outlast the phase; the phase still measures one, over the
// time it took, rather than failing.
func TestClosedLoopMeasuresAnOperationSlowerThanItsWindow(t *testing.T) {
	l := Load{Name: "slow", Concurrency: 1, Warmup: time.Millisecond, Duration: 10 * time.Millisecond, Unit: "ops",
		Op: func(context.Context, int) error { time.Sleep(40 * time.Millisecond); return nil }}
	out, err := l.Closed(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Count != 1 || out.Elapsed < 30*time.Millisecond {
		t.Fatalf("count %d over %s, want 1 over the operation's time", out.Count, out.Elapsed)
	}
}
