package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestThrottleSendsEverythingWhileTheClusterAccepts(t *testing.T) {
	th := newThrottle()
	for range 1000 {
		require.True(t, th.allow())
		th.done(true)
	}
}

// TestThrottleLetsAboutKTimesTheAcceptedThrough: with the cluster accepting
// one call in ten, about k/10 of the calls are still sent.
func TestThrottleLetsAboutKTimesTheAcceptedThrough(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	th := newThrottle()
	th.now = func() time.Time { return now }
	seq := 0.0
	th.rnd = func() float64 { seq += 0.618033988749895; return seq - float64(int(seq)) } // evenly spread
	sent, acceptedN := 0, 0
	for i := range 20000 {
		if i%100 == 0 {
			now = now.Add(5 * time.Millisecond)
		}
		if !th.allow() {
			continue
		}
		sent++
		ok := sent%10 == 0 // the cluster accepts one sent call in ten
		th.done(ok)
		if ok {
			acceptedN++
		}
	}
	// The cluster accepts a tenth of what is sent: at the fixed point
	// requests ≈ k·accepts is reached only by refusing most calls here.
	require.Less(t, sent, 5000, "the throttle let too much through")
	require.Positive(t, acceptedN)
}
