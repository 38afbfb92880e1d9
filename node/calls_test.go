package node_test

// Tests of calls between objects (State.Objects): the callee applies a call
// once across retries of the calling event, calls that would deadlock are
// refused, the caller's deadline reaches the callee, and calls cross nodes.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

const (
	callerClass = "Caller"
	calleeClass = "Callee" // the same class under another name
)

// callLab holds what a test scripts and observes of its callers.
type callLab struct {
	failAfterCall  atomic.Bool // the next "call" fails after its call
	failAlarmAfter atomic.Bool // the next alarm run fails after its call
	deadlines      chan time.Time
	callErrs       chan error
	alarmErrs      chan error
}

func newCallLab() *callLab {
	return &callLab{deadlines: make(chan time.Time, 4), callErrs: make(chan error, 4), alarmErrs: make(chan error, 4)}
}

// callerObject is the test class. Its methods:
//
//	incr               increments "n" and returns it
//	read k             the value of k ("<none>" when missing)
//	call C/name/m      calls m of C name, stores its reply in "called", returns it
//	callself           puts "x", then calls its own incr
//	bounce C/name      calls "call" of C name, which calls our incr back
//	block              reports its deadline, waits for ctx's end
//	callblock C/name   calls "block" of C name and reports the error
//	arm C/name         sets the alarm to now; the alarm calls incr of C name
type callerObject struct {
	st  durable.State
	lab *callLab
}

func splitTarget(s string) (class, name, rest string) {
	parts := strings.SplitN(s, "/", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	return parts[0], parts[1], parts[2]
}

func (o *callerObject) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	s := o.st.Storage()
	objs := o.st.Objects()
	switch method {
	case "incr":
		v, _, err := s.Get(ctx, "n")
		if err != nil {
			return nil, err
		}
		n, _ := strconv.Atoi(string(v))
		out := []byte(strconv.Itoa(n + 1))
		return out, s.Put(ctx, "n", out)
	case "read":
		v, ok, err := s.Get(ctx, string(payload))
		if !ok {
			v = []byte("<none>")
		}
		return v, err
	case "call":
		class, name, m := splitTarget(string(payload))
		out, err := objs.Call(ctx, class, name, m, nil)
		if err != nil {
			return nil, err
		}
		if err := s.Put(ctx, "called", out); err != nil {
			return nil, err
		}
		if o.lab.failAfterCall.CompareAndSwap(true, false) {
			return nil, errors.New("failing after the call")
		}
		return out, nil
	case "callself":
		if err := s.Put(ctx, "x", []byte("1")); err != nil {
			return nil, err
		}
		_, err := objs.Call(ctx, callerClass, o.st.Name(), "incr", nil)
		return nil, err
	case "bounce":
		class, name, _ := splitTarget(string(payload))
		back := fmt.Sprintf("%s/%s/incr", callerClass, o.st.Name())
		_, err := objs.Call(ctx, class, name, "call", []byte(back))
		return nil, err
	case "block":
		d, _ := ctx.Deadline()
		o.lab.deadlines <- d
		<-ctx.Done()
		return nil, ctx.Err()
	case "callblock":
		class, name, _ := splitTarget(string(payload))
		_, err := objs.Call(ctx, class, name, "block", nil)
		o.lab.callErrs <- err
		return nil, err
	case "arm":
		if err := s.Put(ctx, "target", payload); err != nil {
			return nil, err
		}
		return nil, s.SetAlarm(ctx, o.st.Clock().Now())
	}
	return nil, fmt.Errorf("unknown method %q", method)
}

func (o *callerObject) Alarm(ctx context.Context, _ durable.AlarmInfo) error {
	v, _, err := o.st.Storage().Get(ctx, "target")
	if err != nil {
		return err
	}
	class, name, _ := splitTarget(string(v))
	_, err = o.st.Objects().Call(ctx, class, name, "incr", nil)
	if err == nil && o.lab.failAlarmAfter.CompareAndSwap(true, false) {
		err = errors.New("failing after the call")
	}
	o.lab.alarmErrs <- err
	return err
}

func registerCallers(reg *node.Registry, lab *callLab) error {
	for _, c := range []string{callerClass, calleeClass} {
		if err := node.RegisterClass(reg, c, func(_ context.Context, st durable.State) (*callerObject, error) {
			return &callerObject{st: st, lab: lab}, nil
		}); err != nil {
			return err
		}
	}
	return nil
}

func newCallHarness(t *testing.T) (*harness, *callLab) {
	lab := newCallLab()
	h := newHarness(t, func(_ *node.Config, reg *node.Registry) { require.NoError(t, registerCallers(reg, lab)) })
	return h, lab
}

func TestObjectCallAppliesTheCalleeAndItsWriteIsVisible(t *testing.T) {
	h, _ := newCallHarness(t)
	for _, target := range []string{calleeClass + "/b", callerClass + "/b"} {
		t.Run(target, func(t *testing.T) {
			class, name, _ := splitTarget(target)
			require.Equal(t, "1", h.mustInvoke(callerClass, "a", "call", target+"/incr"))
			require.Equal(t, "1", h.mustInvoke(class, name, "read", "n"), "the callee's write")
			require.Equal(t, "1", h.mustInvoke(callerClass, "a", "read", "called"), "the caller's write")
		})
	}
}

func TestObjectCallOfARetriedEventAppliesTheCalleeOnce(t *testing.T) {
	h, lab := newCallHarness(t)
	invoke := func(rid string) (string, error) {
		ctx, cancel := context.WithTimeout(node.WithRequestID(context.Background(), rid), 10*time.Second)
		defer cancel()
		res, err := h.n().Invoke(ctx, callerClass, node.Ref{Name: "a"}, "call", []byte(calleeClass+"/b/incr"))
		return string(res.Payload), err
	}
	lab.failAfterCall.Store(true)
	_, err := invoke("req-1")
	var oe *durable.ObjectError
	require.ErrorAs(t, err, &oe, "the caller failed after its call")
	require.Equal(t, "<none>", h.mustInvoke(callerClass, "a", "read", "called"), "the failed event wrote nothing")
	require.Equal(t, "1", h.mustInvoke(calleeClass, "b", "read", "n"), "the callee's effect stands")

	out, err := invoke("req-1")
	require.NoError(t, err)
	require.Equal(t, "1", out, "the retry got the callee's recorded reply")
	require.Equal(t, "1", h.mustInvoke(calleeClass, "b", "read", "n"), "the retry did not apply the callee again")

	out, err = invoke("req-2")
	require.NoError(t, err)
	require.Equal(t, "2", out, "another event's call is another call")
}

func TestObjectCallWhoseCallerCommitFailsIsAppliedOnceOnRetry(t *testing.T) {
	h, _ := newCallHarness(t)
	caller := durable.IDFromName(callerClass, "a").String()
	var failed atomic.Bool
	h.setCommitHook(func(ops []clientv3.Op) error {
		for _, op := range ops {
			if strings.Contains(string(op.KeyBytes()), caller) && failed.CompareAndSwap(false, true) {
				return errors.New("injected commit failure")
			}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(node.WithRequestID(context.Background(), "req-1"), 10*time.Second)
	defer cancel()
	_, err := h.n().Invoke(ctx, callerClass, node.Ref{Name: "a"}, "call", []byte(calleeClass+"/b/incr"))
	require.ErrorIs(t, err, durable.ErrCommitUnknown, "the caller's commit failed")
	require.True(t, failed.Load())
	require.Equal(t, "1", h.mustInvoke(calleeClass, "b", "read", "n"), "the callee's effect stands")

	res, err := h.n().Invoke(ctx, callerClass, node.Ref{Name: "a"}, "call", []byte(calleeClass+"/b/incr"))
	require.NoError(t, err)
	require.Equal(t, "1", string(res.Payload))
	require.Equal(t, "1", h.mustInvoke(calleeClass, "b", "read", "n"), "the retry did not apply the callee again")
	require.Equal(t, "1", h.mustInvoke(callerClass, "a", "read", "called"), "the retry committed the caller's write")
}

func TestObjectCallToItselfIsRefusedAndWritesNothing(t *testing.T) {
	h, _ := newCallHarness(t)
	_, err := h.invoke(callerClass, "a", "callself", "")
	require.ErrorIs(t, err, durable.ErrCallCycle)
	require.ErrorIs(t, err, durable.ErrInvalidArgument)
	require.Contains(t, err.Error(), "called itself")
	require.Equal(t, "<none>", h.mustInvoke(callerClass, "a", "read", "x"))
	require.Equal(t, "<none>", h.mustInvoke(callerClass, "a", "read", "n"))
}

func TestObjectCallCycleThroughAnotherObjectIsRefused(t *testing.T) {
	h, _ := newCallHarness(t)
	// a calls b, which calls a back: a's event is waiting on b.
	_, err := h.invoke(callerClass, "a", "bounce", calleeClass+"/b")
	require.ErrorIs(t, err, durable.ErrCallCycle)
	require.Contains(t, err.Error(), "which waits on it")
	require.Equal(t, "<none>", h.mustInvoke(callerClass, "a", "read", "n"), "a's incr did not run")
	require.Equal(t, "<none>", h.mustInvoke(calleeClass, "b", "read", "called"), "b's event failed")
}

func TestObjectCallCarriesTheCallersDeadline(t *testing.T) {
	h, lab := newCallHarness(t)
	// A real-time deadline: the node's fake clock does not end contexts.
	deadline := time.Now().Add(300 * time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	_, err := h.n().Invoke(ctx, callerClass, node.Ref{Name: "a"}, "callblock", []byte(calleeClass+"/slow"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, deadline, recv(t, lab.deadlines), "the callee's deadline is the caller's")
	require.ErrorIs(t, recv(t, lab.callErrs), context.DeadlineExceeded, "the caller's call ended with the deadline")
}

// recv waits for one value from ch (a bounded wait: a missing value fails).
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no value arrived")
		panic("unreachable")
	}
}

func TestObjectCallFromAnAlarmAppliesTheCalleeOnceAcrossRetries(t *testing.T) {
	h, lab := newCallHarness(t)
	lab.failAlarmAfter.Store(true)
	h.mustInvoke(callerClass, "a", "arm", calleeClass+"/b")
	require.EqualError(t, recv(t, lab.alarmErrs), "failing after the call")
	require.Equal(t, "1", h.mustInvoke(calleeClass, "b", "read", "n"))

	// The failed run is retried 2 s later (no jitter): wait for the retry
	// to be recorded, then move the clock to it.
	id := durable.IDFromName(callerClass, "a")
	p := id.Partition(h.n().PartitionCount())
	store := alarmstore.New(h.Client, h.n().Keys())
	h.eventually(func() bool {
		rec, err := store.Get(context.Background(), p, callerClass, id)
		return err == nil && rec != nil && rec.RetryCount == 1
	}, "the alarm's retry is recorded")
	h.advance(2 * time.Second)
	require.NoError(t, recv(t, lab.alarmErrs))
	require.Equal(t, "1", h.mustInvoke(calleeClass, "b", "read", "n"), "the retry did not apply the callee again")
}

// nameOwnedBy returns a name of class whose partition node i owns.
func nameOwnedBy(c *nodetest.Cluster, i int, class string) string {
	owned := map[int]bool{}
	for _, p := range c.Agent(i).Member.Owned() {
		owned[p] = true
	}
	for k := 0; ; k++ {
		name := fmt.Sprintf("o-%d", k)
		if owned[durable.IDFromName(class, name).Partition(c.Node(i).PartitionCount())] {
			return name
		}
	}
}

func TestObjectCallReachesAnObjectOwnedByAnotherNode(t *testing.T) {
	lab := newCallLab()
	c := nodetest.Start(t, nodetest.Options{Nodes: 2, Register: func(reg *node.Registry) error { return registerCallers(reg, lab) }})
	a, b := nameOwnedBy(c, 0, callerClass), nameOwnedBy(c, 1, calleeClass)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res, err := c.Node(0).Invoke(ctx, callerClass, node.Ref{Name: a}, "call", []byte(calleeClass+"/"+b+"/incr"))
	require.NoError(t, err)
	require.Equal(t, c.Addr(0), res.Owner, "a ran on node 0")
	require.Equal(t, "1", string(res.Payload))
	out, err := c.Invoke(1, calleeClass, b, "read", []byte("n"))
	require.NoError(t, err)
	require.Equal(t, "1", string(out), "b's write, on node 1")

	// The call path crosses nodes with the call: b's call back to a is
	// refused, here and through the gRPC edge.
	_, err = c.Node(0).Invoke(ctx, callerClass, node.Ref{Name: a}, "bounce", []byte(calleeClass+"/"+b))
	require.ErrorIs(t, err, durable.ErrCallCycle)
	_, err = c.Invoke(1, callerClass, a, "bounce", []byte(calleeClass+"/"+b))
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)

	// The deadline crosses too.
	dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer dcancel()
	_, err = c.Node(0).Invoke(dctx, callerClass, node.Ref{Name: a}, "callblock", []byte(calleeClass+"/"+b))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	d := recv(t, lab.deadlines)
	require.False(t, d.IsZero(), "the callee on node 1 had a deadline")
	require.ErrorIs(t, recv(t, lab.callErrs), context.DeadlineExceeded, "the caller's call ended with the deadline")
}
