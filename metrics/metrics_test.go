package metrics

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestMethodLabelsAreBounded: 10,000 distinct method names of one class
// make at most MaxMethodsPerClass series plus "other"; names that are not
// short valid UTF-8 are "other"; another class has its own budget.
func TestMethodLabelsAreBounded(t *testing.T) {
	s := New()
	for i := range 10000 {
		m := fmt.Sprintf("m%d", i)
		s.Invocations.WithLabelValues("C", s.Method("C", m), "OK").Inc()
	}
	require.Equal(t, MaxMethodsPerClass+1, testutil.CollectAndCount(s.Invocations), "series")
	require.Equal(t, 10000.0, Value(s.Invocations))
	require.Equal(t, "m0", s.Method("C", "m0"), "a known name keeps its label")
	require.Equal(t, "other", s.Method("C", "new"))
	require.Equal(t, "get", s.Method("D", "get"), "each class has its own budget")
	require.Equal(t, "other", s.Method("D", "\x82bad"))
	require.Equal(t, "other", s.Method("D", string(make([]byte, 200))))
}

// TestValueReadsCountersGaugesAndHistograms: Value sums a family's series;
// for a histogram it is its number of observations.
func TestValueReadsCountersGaugesAndHistograms(t *testing.T) {
	s := New()
	s.AlarmRuns.WithLabelValues("C", "success").Add(2)
	s.AlarmRuns.WithLabelValues("C", "failure").Inc()
	s.AlarmLateness.WithLabelValues("C").Observe(0.5)
	s.AlarmLateness.WithLabelValues("C").Observe(1.5)
	require.Equal(t, 3.0, Value(s.AlarmRuns))
	require.Equal(t, 1.0, Value(s.AlarmRuns.WithLabelValues("C", "failure")))
	require.Equal(t, 2.0, Value(s.AlarmLateness))
	require.Zero(t, Value(Discard().Evictions)+Value(s.Evictions))
}

// BenchmarkInvocationMetrics is what one invocation costs in metrics on
// the owner (label, count, latency), beside the ~40 µs of CPU a call
// costs end to end on this machine (durable bench invoke):
//
//	go test -run '^$' -bench InvocationMetrics ./metrics/
func BenchmarkInvocationMetrics(b *testing.B) {
	s := New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			label := s.Method("Counter", "increment")
			s.Invocations.WithLabelValues("Counter", label, "OK").Inc()
			s.InvocationSeconds.WithLabelValues("Counter", label).Observe(0.002)
		}
	})
}

// TestOnlyOffSkipsUpdates: New and Discard are Enabled (metrics on change
// nothing); Off is not, yet its collectors are real and registered, so the
// agent can add its own and a scrape still works.
func TestOnlyOffSkipsUpdates(t *testing.T) {
	require.True(t, New().Enabled())
	require.True(t, Discard().Enabled())
	off := Off()
	require.False(t, off.Enabled())
	require.Equal(t, New().Names(), off.Names())
	_, err := off.Registry.Gather()
	require.NoError(t, err)
}
