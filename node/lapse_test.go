package node_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/metrics"
)

// TestALeaseLapseCancelsTheRunningHandlers: when the node's local lease
// deadline passes before a renewal (here the process is frozen, so no
// renewal is sent; the lease itself may still live in etcd), the handler
// running is cancelled at once — not when the node later learns that its
// lease expired, by which time another node may run the same object — and
// the call queued behind it does not start. Neither writes anything; once
// a renewal confirms the lease again, the object serves as before.
func TestALeaseLapseCancelsTheRunningHandlers(t *testing.T) {
	s := newStoreT(t, nil)
	const obj = "lapse"
	s.mustRun(obj, inc) // mem = 1, the object active
	m := s.h.n().Config().Metrics
	lapses, aborts := metrics.Value(m.LeaseLapses), metrics.Value(m.LapseAborts)

	started := make(chan struct{})
	var cause error
	first := make(chan error, 1)
	go func() {
		_, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			close(started)
			select {
			case <-ctx.Done():
				cause = context.Cause(ctx)
				return nil, ctx.Err()
			case <-time.After(20 * time.Second):
				return nil, errors.New("the handler's context was never cancelled")
			}
		})
		first <- err
	}()
	<-started
	var queuedRan atomic.Bool
	queued := make(chan error, 1)
	go func() {
		_, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			queuedRan.Store(true)
			return inc(ctx, o)
		})
		queued <- err
	}()
	s.h.eventually(func() bool { return s.queued(obj) == 1 }, "the second call never queued")

	member := s.h.Agent(0).Member
	member.Freeze()
	err := <-first
	queuedErr := <-queued
	member.Thaw()
	require.ErrorIs(t, err, durable.ErrUnavailable, "the cancelled call's error is not retryable")
	require.ErrorIs(t, cause, durable.ErrUnavailable)
	require.ErrorContains(t, cause, "cannot confirm its lease")
	require.ErrorIs(t, queuedErr, durable.ErrUnavailable, "the queued call was not refused")
	require.False(t, queuedRan.Load(), "a handler started past the local lease deadline")
	require.Equal(t, lapses+1, metrics.Value(m.LeaseLapses))
	require.Equal(t, aborts+1, metrics.Value(m.LapseAborts))
	require.Equal(t, map[string]string{"mem": "1"}, s.etcdData(obj), "a cancelled event wrote")

	s.h.eventually(func() bool { return member.LeaseValid() }, "the lease was never confirmed again")
	require.Equal(t, "2", string(s.mustRun(obj, inc)))
}
