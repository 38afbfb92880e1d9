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

// blockUntilCancelled writes key, then waits for ctx to end and reports its
// cause to causes (or that it never ended).
func blockUntilCancelled(ctx context.Context, o *tObj, key string, started chan<- struct{}, causes chan<- error) error {
	if err := o.S().Put(ctx, key, []byte("cancelled run")); err != nil {
		return err
	}
	close(started)
	select {
	case <-ctx.Done():
		causes <- context.Cause(ctx)
		return ctx.Err()
	case <-time.After(20 * time.Second):
		causes <- errors.New("the handler's context was never cancelled")
		return nil
	}
}

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

	started, causes := make(chan struct{}), make(chan error, 1)
	first := make(chan error, 1)
	go func() {
		_, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			return nil, blockUntilCancelled(ctx, o, "first", started, causes)
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
	err, cause := <-first, <-causes
	queuedErr := <-queued
	member.Thaw()
	require.ErrorIs(t, err, durable.ErrUnavailable, "the cancelled call's error is not retryable")
	require.ErrorIs(t, cause, durable.ErrUnavailable)
	require.ErrorContains(t, cause, "cannot confirm its lease")
	require.ErrorIs(t, queuedErr, durable.ErrUnavailable, "the queued call was not refused")
	require.False(t, queuedRan.Load(), "a handler started past the local lease deadline")
	// At least: a loaded machine may have let the lease lapse before.
	require.GreaterOrEqual(t, metrics.Value(m.LeaseLapses), lapses+1)
	require.GreaterOrEqual(t, metrics.Value(m.LapseAborts), aborts+1)
	require.Equal(t, map[string]string{"mem": "1"}, s.etcdData(obj), "a cancelled event wrote")

	s.h.eventually(func() bool { return member.LeaseValid() }, "the lease was never confirmed again")
	require.Equal(t, "2", string(s.mustRun(obj, inc)))
}

// TestALeaseLapseCancelsTheRunningAlarmHandler: the case the chaos suite
// found. An alarm handler running when the local lease deadline passes is
// cancelled; its run is the system's failure (no retry is counted, nothing
// it wrote commits), and the alarm runs again once the node may serve.
func TestALeaseLapseCancelsTheRunningAlarmHandler(t *testing.T) {
	s := newStoreT(t, nil)
	const obj = "lapse-alarm"
	m := s.h.n().Config().Metrics
	systemFailures := func() float64 { return metrics.Value(m.AlarmRuns.WithLabelValues(tClass, "system_failure")) }
	retries := func() float64 { return metrics.Value(m.AlarmRetries.WithLabelValues(tClass)) }
	failuresBefore, retriesBefore := systemFailures(), retries()

	var runs atomic.Int32
	started, causes := make(chan struct{}), make(chan error, 1)
	s.mu.Lock()
	s.onAlarm = func(ctx context.Context, o *tObj) error {
		if runs.Add(1) == 1 {
			return blockUntilCancelled(ctx, o, "first", started, causes)
		}
		return o.S().Put(ctx, "second", []byte("ran"))
	}
	s.mu.Unlock()
	due := s.h.Clock.Now().Add(time.Second)
	s.mustDo(obj, func(ctx context.Context, st durable.Storage) error { return st.SetAlarm(ctx, due) })
	s.h.advance(time.Second)
	<-started

	member := s.h.Agent(0).Member
	member.Freeze()
	cause := <-causes
	s.h.eventually(func() bool { return systemFailures() > failuresBefore }, "the cancelled run was not a system failure")
	member.Thaw()
	require.ErrorIs(t, cause, durable.ErrUnavailable)
	require.Equal(t, retriesBefore, retries(), "the cancelled run counted as a retry")

	// It runs again after the system retry delay, once the lease is
	// confirmed (or, had it expired, once the partition is claimed again).
	s.h.eventually(func() bool {
		if runs.Load() < 2 {
			s.h.advance(100 * time.Millisecond)
		}
		return len(s.etcdData(obj)) == 1
	}, "the alarm never ran again")
	require.Equal(t, map[string]string{"second": "ran"}, s.etcdData(obj), "the cancelled run's write committed")
	require.EqualValues(t, 2, runs.Load())
}
