package node_test

// Regression tests of issue #13: overload, partial faults and limits.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

// TestForwardToAFrozenOwnerFailsOver: a call through a healthy node to a
// partition whose owner was just frozen (SIGSTOP) is forwarded to it and
// hangs there — until the owner's lease expires and its partitions move:
// then the forward is cancelled and the call runs on the new owner, well
// inside its deadline. (Before: it waited for the caller's whole deadline.)
func TestForwardToAFrozenOwnerFailsOver(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := startProbeCluster(t, 3, rec)
	name := namesOwnedBy(c, 1, 1)[0]
	paused := c.Nodes[1].Config.ID
	c.Pause(1)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := c.Node(0).Invoke(ctx, "Probe", node.Ref{Name: name}, "visit", nil)
	took := time.Since(start)
	require.NoError(t, err, "the forward to the frozen owner did not fail over (after %s)", took)
	var v nodetest.Visit
	require.NoError(t, json.Unmarshal(res.Payload, &v))
	require.NotEqual(t, paused, v.Node)
	t.Logf("call to a frozen owner's partition completed on %s after %s (lease TTL %s)", v.Node, took, c.Nodes[0].Config.LeaseTTL)
	c.Resume(1)
	c.WaitSettled()
	rec.CheckNoOverlap(t)
}

// TestRequestIDReusedForAnotherCallIsRefused: a retry must be the same
// call; a request id sent again with another payload is refused and runs
// nothing. (Before: it silently got the first call's reply.)
func TestRequestIDReusedForAnotherCallIsRefused(t *testing.T) {
	s := newStoreT(t, nil)
	const obj = "rid-reuse"
	method := s.register(inc)
	invoke := func(payload string) (string, error) {
		ctx, cancel := context.WithTimeout(node.WithRequestID(context.Background(), "rid-1"), 10*time.Second)
		defer cancel()
		res, err := s.h.n().Invoke(ctx, tClass, node.Ref{Name: obj}, method, []byte(payload))
		return string(res.Payload), err
	}
	first, err := invoke("a")
	require.NoError(t, err)
	again, err := invoke("a")
	require.NoError(t, err)
	require.Equal(t, first, again, "the same call is replayed")
	_, err = invoke("b")
	require.ErrorIs(t, err, durable.ErrRequestIDReused)
	require.ErrorIs(t, err, durable.ErrInvalidArgument)
	st, _ := status.FromError(node.ToStatus(err, ""))
	require.Equal(t, codes.InvalidArgument, st.Code())
	require.Equal(t, "REQUEST_ID_REUSED", client.Detail(st.Err()).GetReason())
	require.Equal(t, map[string]string{"mem": "1"}, s.etcdData(obj), "the refused call ran")
}

// TestReplyOverTheLimitFailsBeforeItsWritesCommit: a reply the caller could
// not receive fails the invocation before its writes commit. (Before: a
// 5 MiB reply through a non-owner reached the caller as ResourceExhausted
// although the write was applied.)
func TestReplyOverTheLimitFailsBeforeItsWritesCommit(t *testing.T) {
	s := newStoreT(t, func(cfg *node.Config) { cfg.MaxReplyBytes = 4096 })
	const obj = "big-reply"
	_, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
		if err := o.S().Put(ctx, "k", []byte("v")); err != nil {
			return nil, err
		}
		return make([]byte, 5000), nil
	})
	require.ErrorIs(t, err, durable.ErrInvalidArgument)
	require.ErrorContains(t, err, "5000 bytes")
	require.Empty(t, s.etcdData(obj), "the write of a refused reply was applied")
	out, err := s.run(obj, func(ctx context.Context, o *tObj) ([]byte, error) { return make([]byte, 4096), nil })
	require.NoError(t, err)
	require.Len(t, out, 4096, "a reply at the limit goes through")
}

// TestNamesAndMethodsAreBounded: an object name over 2 KiB and a method
// name over 256 bytes are refused, and the error quotes little of them.
func TestNamesAndMethodsAreBounded(t *testing.T) {
	s := newStoreT(t, nil)
	ctx := context.Background()
	_, err := s.h.n().Invoke(ctx, tClass, node.Ref{Name: strings.Repeat("n", durable.MaxNameBytes+1)}, "m", nil)
	require.ErrorIs(t, err, durable.ErrInvalidArgument)
	_, err = s.h.n().Invoke(ctx, tClass, node.Ref{Name: "x"}, strings.Repeat("m", 257), nil)
	require.ErrorIs(t, err, durable.ErrInvalidArgument)
	_, err = s.h.n().Invoke(ctx, strings.Repeat("C", 10000), node.Ref{Name: "x"}, "m", nil)
	require.ErrorIs(t, err, durable.ErrUnknownClass)
	require.Less(t, len(err.Error()), 200, "the error echoes the whole class name")
}

// TestHandlerErrorWithInvalidUTF8KeepsItsDetail: a handler's error with
// invalid UTF-8 still reaches the caller as the object's error, detail
// included (a status with invalid UTF-8 cannot be marshalled).
func TestHandlerErrorWithInvalidUTF8KeepsItsDetail(t *testing.T) {
	s := newStoreT(t, nil)
	method := s.register(func(context.Context, *tObj) ([]byte, error) { return nil, errors.New("bad \x82 byte") })
	_, err := s.h.Dial().Invoke(context.Background(), tClass, client.ByName("utf8"), method, nil)
	require.Equal(t, codes.Unknown, status.Code(err))
	require.True(t, client.IsObjectError(err), "the detail was lost: %v", err)
	require.Contains(t, status.Convert(err).Message(), "bad \uFFFD byte")
}

// TestCallsPastTheCallLimitAreRefusedWithRetryAfter: with the call bound
// at 4, a fifth concurrent call is refused as overloaded, with a
// retry-after, and nothing of it runs; once the calls finish, calls go
// through again.
func TestCallsPastTheCallLimitAreRefusedWithRetryAfter(t *testing.T) {
	s := newStoreT(t, func(cfg *node.Config) { cfg.MaxCalls, cfg.MinCalls = 4, 4 })
	gate := make(chan struct{})
	var started sync.WaitGroup
	block := s.register(func(ctx context.Context, o *tObj) ([]byte, error) {
		started.Done()
		<-gate
		return nil, nil
	})
	var done sync.WaitGroup
	for i := range 4 {
		started.Add(1)
		done.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := s.h.n().Invoke(ctx, tClass, node.Ref{Name: "limit-" + string(rune('a'+i))}, block, nil)
			assert.NoError(t, err)
		})
	}
	started.Wait()
	_, err := s.h.Dial().Invoke(context.Background(), tClass, client.ByName("limit-e"), s.register(inc), nil)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	d := client.Detail(err)
	require.Equal(t, "OVERLOADED", d.GetReason())
	require.Positive(t, d.GetRetryAfterMs(), "no retry-after")
	require.Positive(t, s.h.n().Admission().Refused)
	require.Equal(t, 1.0, metrics.Value(s.h.n().Config().Metrics.Refusals.WithLabelValues("OVERLOADED")))
	close(gate)
	done.Wait()
	require.Empty(t, s.etcdData("limit-e"), "the refused call ran")
	s.mustRun("limit-e", inc)
}

// TestCallsPastTheObjectQueueAreRefusedAsBusy: with room for two queued
// events, a call to an object running one event with two more queued is
// refused as OBJECT_BUSY (the object's state, not the node's: the client's
// throttle does not count it), with a retry-after; other objects still
// serve and the queued calls complete.
func TestCallsPastTheObjectQueueAreRefusedAsBusy(t *testing.T) {
	s := newStoreT(t, func(cfg *node.Config) { cfg.QueueSize = 2 })
	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	block := s.register(func(ctx context.Context, o *tObj) ([]byte, error) {
		started <- struct{}{}
		<-gate
		return nil, nil
	})
	incr := s.register(inc)
	s.mustRun("busy", inc) // active, so the blocked calls queue behind one another
	var done sync.WaitGroup
	call := func(method string) {
		done.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := s.h.n().Invoke(ctx, tClass, node.Ref{Name: "busy"}, method, nil)
			assert.NoError(t, err)
		})
	}
	call(block)
	<-started
	call(incr)
	call(incr)
	s.h.eventually(func() bool { _, calls, _ := s.h.n().Mailbox(tClass, s.id("busy")); return calls == 2 }, "two calls queued")
	_, err := s.h.Dial().Invoke(context.Background(), tClass, client.ByName("busy"), incr, nil)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.Equal(t, "OBJECT_BUSY", client.Detail(err).GetReason())
	require.Equal(t, 1.0, metrics.Value(s.h.n().Config().Metrics.Refusals.WithLabelValues("OBJECT_BUSY")))
	after, ok := client.RetryAfter(err)
	require.True(t, ok)
	require.Positive(t, after, "no retry-after")
	s.mustRun("other", inc)
	close(gate)
	done.Wait()
	require.Equal(t, map[string]string{"mem": "3"}, s.etcdData("busy"), "the refused call ran, or a queued one did not")
}

// TestActivationsPastTheMemoryBoundAreRefusedAndAlarmsWait: with room for
// two objects, a third activation is refused; an alarm of a third object
// waits until there is room, and then fires.
func TestActivationsPastTheMemoryBoundAreRefusedAndAlarmsWait(t *testing.T) {
	s := newStoreT(t, func(cfg *node.Config) { cfg.MaxActiveObjects = 2; cfg.IdleTimeout = time.Hour })
	due := s.h.Clock.Now().Add(time.Second)
	s.mustDo("armed", func(ctx context.Context, st durable.Storage) error { return st.SetAlarm(ctx, due) })
	s.h.restart() // nothing active; the alarm waits in the window
	fired := make(chan string, 4)
	s.mu.Lock()
	s.onAlarm = func(ctx context.Context, o *tObj) error { fired <- o.st.Name(); return nil }
	s.mu.Unlock()
	s.mustRun("one", inc)
	s.mustRun("two", inc)
	_, err := s.run("three", inc)
	require.ErrorIs(t, err, durable.ErrOverloaded)
	s.h.advance(time.Second)
	s.h.WaitQuiet()
	require.Empty(t, fired, "the alarm's object was activated past the bound")
	// Room again once the objects leave memory (idle): the alarm, which
	// looks again every second, fires.
	s.h.advance(time.Hour)
	for i := 0; len(fired) == 0; i++ {
		require.Less(t, i, 100, "the waiting alarm never fired")
		s.h.advance(time.Second)
		s.h.WaitQuiet()
	}
	require.Equal(t, "armed", <-fired)
}
