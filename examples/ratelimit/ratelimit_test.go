package ratelimit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/examples/ratelimit"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

var sharedEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &sharedEtcd) }

// cfg: five tokens, one every 500 ms.
var cfg = ratelimit.Config{Burst: 5, PerSecond: 2}

func start(t *testing.T) *nodetest.Harness {
	t.Helper()
	return nodetest.StartOne(t, nodetest.Options{
		Etcd:  sharedEtcd,
		Clock: nodetest.NewClock(),
		Register: func(reg *node.Registry) error {
			return ratelimit.Register(reg, cfg)
		},
	})
}

// settle waits until everything the fake clock's time made due has run
// (Limiter's alarm handler never waits on the clock).
func settle(h *nodetest.Harness) {
	h.WaitQuiet()
	h.WaitFor("alarm handlers done", func() bool { return h.Node().RunningAlarms() == 0 })
}

func take(t *testing.T, h *nodetest.Harness, key string, n int) ratelimit.TakeReply {
	t.Helper()
	reply, err := takeErr(h, key, n)
	require.NoError(t, err)
	return reply
}

func takeErr(h *nodetest.Harness, key string, n int) (ratelimit.TakeReply, error) {
	req, err := ratelimit.Take.EncodeRequest(ratelimit.TakeRequest{N: n})
	if err != nil {
		return ratelimit.TakeReply{}, err
	}
	out, err := h.Invoke(ratelimit.ClassName, key, ratelimit.Take.Name(), req)
	if err != nil {
		return ratelimit.TakeReply{}, err
	}
	return ratelimit.Take.DecodeReply(out)
}

func peek(t *testing.T, h *nodetest.Harness, key string) ratelimit.PeekReply {
	t.Helper()
	reply, err := ratelimit.Peek.DecodeReply(h.MustInvoke(ratelimit.ClassName, key, ratelimit.Peek.Name(), nil))
	require.NoError(t, err)
	return reply
}

func alarm(t *testing.T, cl *client.Client, key string) (time.Time, bool) {
	t.Helper()
	resp, err := cl.Admin().GetAlarm(context.Background(), &durablev1.GetAlarmRequest{Class: ratelimit.ClassName, Object: client.ByName(key)})
	require.NoError(t, err)
	if resp.GetAlarm() == nil {
		return time.Time{}, false
	}
	return time.UnixMilli(resp.GetAlarm().GetScheduledUnixMs()), true
}

func TestBurstThenRefusalWithRetryAfter(t *testing.T) {
	h := start(t)
	require.Equal(t, ratelimit.PeekReply{Remaining: 5}, peek(t, h, "k"), "a new key has a full bucket and no state")
	for want := 4; want >= 0; want-- {
		require.Equal(t, ratelimit.TakeReply{Allowed: true, Remaining: want}, take(t, h, "k", 0))
	}
	require.Equal(t, ratelimit.TakeReply{RetryAfterMS: 500}, take(t, h, "k", 1))
	require.Equal(t, ratelimit.TakeReply{RetryAfterMS: 1500}, take(t, h, "k", 3))
	require.Equal(t, ratelimit.TakeReply{Allowed: true, Remaining: 4}, take(t, h, "other", 1), "keys are separate")
}

func TestTakeRefusesImpossibleCounts(t *testing.T) {
	h := start(t)
	for _, n := range []int{-1, cfg.Burst + 1} {
		_, err := takeErr(h, "k", n)
		var oe *durable.ObjectError
		require.True(t, errors.As(err, &oe), "n = %d: want the object's error, got %v", n, err)
	}
	require.Equal(t, ratelimit.TakeReply{Allowed: true}, take(t, h, "k", cfg.Burst), "the whole bucket at once")
}

func TestRefillFollowsTheClock(t *testing.T) {
	h := start(t)
	take(t, h, "k", 5)
	h.Advance(499 * time.Millisecond)
	require.Equal(t, ratelimit.TakeReply{RetryAfterMS: 1}, take(t, h, "k", 1), "no token before 500 ms")
	h.Advance(time.Millisecond)
	require.Equal(t, ratelimit.TakeReply{Allowed: true}, take(t, h, "k", 1))

	h.Advance(1250 * time.Millisecond) // 2.5 tokens
	require.Equal(t, ratelimit.TakeReply{Allowed: true, Remaining: 0}, take(t, h, "k", 2), "half a token is left")
	require.Equal(t, ratelimit.TakeReply{RetryAfterMS: 250}, take(t, h, "k", 1))

	h.Advance(time.Hour)
	require.Equal(t, 5, peek(t, h, "k").Remaining, "the bucket holds at most Burst")
}

// TestAlarmClearsTheBucketOnceFull: the alarm re-arms while the bucket is
// refilling and deletes its state when full, not before.
func TestAlarmClearsTheBucketOnceFull(t *testing.T) {
	h := start(t)
	cl := h.Dial()
	t0 := h.Clock.Now()
	take(t, h, "k", 2) // 3 left: full at t0+1s
	due, ok := alarm(t, cl, "k")
	require.True(t, ok && due.Equal(t0.Add(time.Second)), "alarm %s", due)

	h.Advance(500 * time.Millisecond)
	take(t, h, "k", 2) // 4 - 2 = 2 left: full at t0+2s
	due, _ = alarm(t, cl, "k")
	require.True(t, due.Equal(t0.Add(time.Second)), "a take leaves an armed alarm alone")

	h.Advance(500 * time.Millisecond) // the alarm finds 3 tokens
	h.WaitFor("re-armed for the full time", func() bool {
		due, ok := alarm(t, cl, "k")
		return ok && due.Equal(t0.Add(2*time.Second))
	})
	require.True(t, peek(t, h, "k").Stored)

	h.Advance(999 * time.Millisecond)
	settle(h)
	require.True(t, peek(t, h, "k").Stored, "cleared before the bucket was full")

	h.Advance(time.Millisecond)
	h.WaitFor("the bucket cleared", func() bool { return !peek(t, h, "k").Stored })
	require.Equal(t, 5, peek(t, h, "k").Remaining)
	settle(h)
	_, ok = alarm(t, cl, "k")
	require.False(t, ok, "a cleared bucket keeps no alarm")
}

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	err := ratelimit.Register(node.NewRegistry(), ratelimit.Config{Burst: -1, PerSecond: -2})
	require.ErrorContains(t, err, "Burst")
	require.ErrorContains(t, err, "PerSecond")
}
