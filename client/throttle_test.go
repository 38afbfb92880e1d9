package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

func TestThrottleSendsEverythingWhileTheClusterAccepts(t *testing.T) {
	th := newThrottle()
	for range 1000 {
		require.True(t, th.allow())
		th.done(true)
	}
}

// TestThrottleSendsAboutKTimesWhatTheClusterAccepts: 1,000 calls a second
// are offered to a cluster that accepts 50 a second. Once the window is
// full of that, about k × 50 calls a second are still sent (enough to see
// a recovery), the rest refused here; when the cluster accepts everything
// again, within two windows every call is sent again.
func TestThrottleSendsAboutKTimesWhatTheClusterAccepts(t *testing.T) {
	const offered, capacity = 1000, 50
	now := time.Unix(1_900_000_000, 0)
	th := newThrottle()
	th.now = func() time.Time { return now }
	seq := 0.0
	th.rnd = func() float64 { seq += 0.618033988749895; return seq - float64(int(seq)) } // evenly spread
	// second runs one second of offered load and returns how many calls
	// were sent; the cluster accepts up to accept of them.
	second := func(accept int) (sent int) {
		accepted := 0
		for range offered {
			now = now.Add(time.Second / offered)
			if !th.allow() {
				continue
			}
			sent++
			ok := accepted < accept
			if ok {
				accepted++
			}
			th.done(ok)
		}
		return sent
	}
	for range throttleBuckets {
		second(capacity)
	}
	total := 0
	for range 10 {
		total += second(capacity)
	}
	perSecond := float64(total) / 10
	require.InDelta(t, throttleK*capacity, perSecond, 0.5*capacity,
		"sent %.0f calls/s to a cluster accepting %d/s (k=%d)", perSecond, capacity, throttleK)

	// Recovery: each second sends about k × the share accepted over the
	// window, so the share doubles until every call is sent again.
	recovered := 0
	for recovered < 2*throttleBuckets && second(offered) < offered {
		recovered++
	}
	require.Less(t, recovered, 2*throttleBuckets, "the throttle still refuses calls two windows after the cluster recovered")
	t.Logf("sent %.0f calls/s while the cluster accepted %d/s; every call sent again %d s after it recovered", perSecond, capacity, recovered+1)
}

// TestThrottleCountsOnlyNodeOverload: a busy object or a full etcd is not
// the cluster shedding load.
func TestThrottleCountsOnlyNodeOverload(t *testing.T) {
	refusal := func(reason string, after time.Duration) error {
		st, err := status.New(codes.ResourceExhausted, reason).WithDetails(&durablev1.ErrorDetail{Reason: reason, RetryAfterMs: after.Milliseconds()})
		require.NoError(t, err)
		return st.Err()
	}
	for _, tc := range []struct {
		err        error
		overloaded bool
		retry      bool
		after      time.Duration
	}{
		{refusal("OVERLOADED", 50*time.Millisecond), true, true, 50 * time.Millisecond},
		{errThrottled(), true, true, throttledRetryAfter},
		{refusal("OBJECT_BUSY", 20*time.Millisecond), false, true, 20 * time.Millisecond},
		{refusal("STORAGE_FULL", 10*time.Second), false, false, 0},
		{status.Error(codes.ResourceExhausted, "grpc: message too large"), false, false, 0},
		{status.Error(codes.Unavailable, "down"), false, false, 0},
		{nil, false, false, 0},
	} {
		require.Equal(t, tc.overloaded, overloaded(tc.err), "overloaded(%v)", tc.err)
		after, retry := RetryAfter(tc.err)
		require.Equal(t, tc.retry, retry, "RetryAfter(%v)", tc.err)
		require.Equal(t, tc.after, after, "RetryAfter(%v)", tc.err)
	}
}
