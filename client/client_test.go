package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// One etcd serves every test and benchmark of the package; each cluster works
// under its own key prefix.
var sharedEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &sharedEtcd) }

// rpc is one Objects.Invoke RPC the client sent.
type rpc struct {
	conn   *grpc.ClientConn
	target string
	err    error
}

// wire records, through a unary client interceptor, which connection each
// Invoke RPC of a client went out on.
type wire struct {
	mu   sync.Mutex
	rpcs []rpc
}

func (w *wire) dialOption() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method == durablev1.Objects_Invoke_FullMethodName {
			w.mu.Lock()
			w.rpcs = append(w.rpcs, rpc{conn: cc, target: cc.Target(), err: err})
			w.mu.Unlock()
		}
		return err
	})
}

// take returns the RPCs recorded since the last take.
func (w *wire) take() []rpc {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.rpcs
	w.rpcs = nil
	return out
}

func dial(t testing.TB, target string, opts client.Options) *client.Client {
	t.Helper()
	cl, err := client.Dial(target, opts)
	require.NoError(t, err)
	t.Cleanup(func() { cl.Close() })
	return cl
}

// runs counts the handler runs of each Probe object, across instances.
type runs struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *runs) inc(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[name]++
	return r.n[name]
}

func (r *runs) get(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[name]
}

// probe is a test class. Methods:
//   - "ok": succeeds;
//   - "fail": the handler's own error;
//   - "unavailable": durable.ErrUnavailable (a runtime error the server
//     marks retryable) while the object has run fewer times than the
//     payload says (always, without a payload), then succeeds;
//   - "block": waits until the call's context ends.
type probe struct {
	st   durable.State
	runs *runs
}

func (p *probe) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	n := p.runs.inc(p.st.Name())
	switch method {
	case "ok":
		return []byte("ok"), nil
	case "fail":
		return nil, errors.New("the object says no")
	case "unavailable":
		var okAfter int
		if _, err := fmt.Sscan(string(payload), &okAfter); err == nil && n > okAfter {
			return []byte("ok"), nil
		}
		return nil, fmt.Errorf("%w: not yet (run %d)", durable.ErrUnavailable, n)
	case "block":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("unknown method %q", method)
}

// startCluster starts a 3-node cluster with Counter and Probe.
func startCluster(t testing.TB, r *runs) *nodetest.Cluster {
	t.Helper()
	return nodetest.Start(t, nodetest.Options{
		Nodes: 3,
		Etcd:  sharedEtcd,
		Register: func(reg *node.Registry) error {
			if err := examples.Register(reg, examples.Config{}); err != nil {
				return err
			}
			return node.RegisterClass(reg, "Probe", func(_ context.Context, st durable.State) (*probe, error) {
				return &probe{st: st, runs: r}, nil
			})
		},
	})
}

// ownerOf returns the partition of class/name and the index of the running
// node that owns it.
func ownerOf(t testing.TB, c *nodetest.Cluster, class, name string) (partition, owner int) {
	t.Helper()
	for i := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		a := c.Agent(i)
		p := durable.IDFromName(class, name).Partition(a.Node.PartitionCount())
		for _, q := range a.Member.Owned() {
			if q == p {
				return p, i
			}
		}
	}
	t.Fatalf("no running node owns the partition of %s/%s", class, name)
	return -1, -1
}

// nameOwnedBy returns an object name of class, starting with prefix, whose
// partition is owned by a node for which want(owner) holds and is not one of
// skip.
func nameOwnedBy(t testing.TB, c *nodetest.Cluster, class, prefix string, want func(owner int) bool, skip ...int) string {
	t.Helper()
	for k := 0; k < 10000; k++ {
		name := fmt.Sprintf("%s-%d", prefix, k)
		p, owner := ownerOf(t, c, class, name)
		if want(owner) && !contains(skip, p) {
			return name
		}
	}
	t.Fatalf("no %s name %s-* with a suitable owner", class, prefix)
	return ""
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func is(i int) func(int) bool    { return func(o int) bool { return o == i } }
func isNot(i int) func(int) bool { return func(o int) bool { return o != i } }

// increment calls Counter.increment and returns the new value.
func increment(t testing.TB, cl *client.Client, name string) (int64, *durablev1.InvokeResponse) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := cl.Invoke(ctx, "Counter", client.ByName(name), "increment", nil)
	require.NoError(t, err)
	return counterValue(t, resp), resp
}

func counterValue(t testing.TB, resp *durablev1.InvokeResponse) int64 {
	t.Helper()
	var v struct {
		Value int64 `json:"value"`
	}
	require.NoError(t, json.Unmarshal(resp.GetPayload(), &v))
	return v.Value
}

// TestFirstCallGoesToTheSeedThenToTheOwner: a client seeded with a node that
// does not own the object's partition sends its first call to the seed, which
// forwards it; the reply names the owner, and every later call of that
// partition goes straight to the owner. Learning is per partition: an object
// of another partition starts at the seed again.
func TestFirstCallGoesToTheSeedThenToTheOwner(t *testing.T) {
	c := startCluster(t, &runs{})
	const seed = 0
	name := nameOwnedBy(t, c, "Counter", "learn", isNot(seed))
	p, owner := ownerOf(t, c, "Counter", name)
	w := &wire{}
	cl := dial(t, c.Addr(seed), client.Options{DialOptions: []grpc.DialOption{w.dialOption()}})

	v, resp := increment(t, cl, name)
	require.EqualValues(t, 1, v)
	first := w.take()
	require.Len(t, first, 1, "one RPC for the first call")
	require.Same(t, cl.Conn(), first[0].conn, "the first call goes to the seed")
	require.Equal(t, c.Addr(seed), first[0].target)
	require.Equal(t, c.Addr(owner), resp.GetOwner(), "the reply names the owner")
	require.EqualValues(t, p, resp.GetPartition())
	require.EqualValues(t, c.Node(seed).PartitionCount(), resp.GetPartitionCount())

	for want := int64(2); want <= 6; want++ {
		v, resp := increment(t, cl, name)
		require.Equal(t, want, v, "each call applied exactly once")
		require.Equal(t, c.Addr(owner), resp.GetOwner())
		got := w.take()
		require.Len(t, got, 1, "call %d took one RPC", want)
		require.NotSame(t, cl.Conn(), got[0].conn, "call %d went through the seed after the owner was learned", want)
		require.Equal(t, c.Addr(owner), got[0].target, "call %d went straight to the owner", want)
	}

	// Another partition, owned by the third node: unknown until a reply
	// names its owner.
	other := -1
	for i := range c.Nodes {
		if i != seed && i != owner {
			other = i
		}
	}
	name2 := nameOwnedBy(t, c, "Counter", "learn", is(other), p)
	_, resp = increment(t, cl, name2)
	got := w.take()
	require.Len(t, got, 1)
	require.Same(t, cl.Conn(), got[0].conn, "an unlearned partition goes to the seed")
	require.Equal(t, c.Addr(other), resp.GetOwner())
	increment(t, cl, name2)
	got = w.take()
	require.Len(t, got, 1)
	require.Equal(t, c.Addr(other), got[0].target, "then straight to its owner")
	increment(t, cl, name)
	got = w.take()
	require.Len(t, got, 1)
	require.Equal(t, c.Addr(owner), got[0].target, "the first partition's owner is still remembered")
}

// TestDeadFirstSeedIsSkipped: a seed list whose first address refuses
// connections still works, both through the seeds only and with owners
// learned.
func TestDeadFirstSeedIsSkipped(t *testing.T) {
	c := startCluster(t, &runs{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := lis.Addr().String()
	require.NoError(t, lis.Close())

	t.Run("NoDirect", func(t *testing.T) {
		w := &wire{}
		cl := dial(t, " "+dead+" , "+c.Addr(1)+" ", client.Options{NoDirect: true, DialOptions: []grpc.DialOption{w.dialOption()}})
		for want := int64(1); want <= 3; want++ {
			v, _ := increment(t, cl, "dead-seed-nodirect")
			require.Equal(t, want, v)
		}
		for _, r := range w.take() {
			require.Same(t, cl.Conn(), r.conn)
		}
	})
	t.Run("learning", func(t *testing.T) {
		w := &wire{}
		cl := dial(t, dead+","+c.Addr(1), client.Options{DialOptions: []grpc.DialOption{w.dialOption()}})
		name := nameOwnedBy(t, c, "Counter", "dead-seed", isNot(1))
		_, owner := ownerOf(t, c, "Counter", name)
		for want := int64(1); want <= 3; want++ {
			v, _ := increment(t, cl, name)
			require.Equal(t, want, v)
		}
		got := w.take()
		require.NotEmpty(t, got)
		last := got[len(got)-1]
		require.NoError(t, last.err)
		require.Equal(t, c.Addr(owner), last.target, "owners are learned through a live seed")
	})
}

// TestCallsSurviveTheLearnedOwnerStopping: the client has learned that node 0
// (also the seed it is connected to) owns the object's partition; node 0 is
// stopped gracefully while calls keep coming. Every call succeeds, none is
// applied twice, and the client learns the partition's new owner and calls
// it directly.
func TestCallsSurviveTheLearnedOwnerStopping(t *testing.T) {
	c := startCluster(t, &runs{})
	const victim = 0
	name := nameOwnedBy(t, c, "Counter", "stop", is(victim))
	victimAddr := c.Addr(victim)
	w := &wire{}
	cl := dial(t, strings.Join([]string{c.Addr(0), c.Addr(1), c.Addr(2)}, ","), client.Options{DialOptions: []grpc.DialOption{w.dialOption()}})
	increment(t, cl, name)
	increment(t, cl, name)
	got := w.take()
	require.Equal(t, victimAddr, got[len(got)-1].target, "the owner was learned")

	// Calls during the stop.
	stop := make(chan struct{})
	var during atomic.Int64
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		for k := 0; ; k++ {
			select {
			case <-stop:
				if k > 0 {
					return
				}
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_, err := cl.Invoke(ctx, "Counter", client.ByName(name), "increment", nil)
			cancel()
			if err != nil {
				errs <- err
				return
			}
			during.Add(1)
		}
	}()
	c.Stop(victim)
	close(stop)
	require.NoError(t, <-errs, "a call failed while its owner stopped")
	c.WaitSettled()

	// And after it.
	for k := 0; k < 3; k++ {
		increment(t, cl, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := cl.Invoke(ctx, "Counter", client.ByName(name), "get", nil)
	require.NoError(t, err)
	require.Equal(t, 2+during.Load()+3, counterValue(t, resp), "every increment applied exactly once (%d during the stop)", during.Load())

	t.Logf("%d calls while node %d stopped", during.Load(), victim)
	_, owner := ownerOf(t, c, "Counter", name)
	require.NotEqual(t, victim, owner)
	require.Equal(t, c.Addr(owner), resp.GetOwner())
	w.take()
	increment(t, cl, name)
	got = w.take()
	require.Len(t, got, 1)
	require.NotSame(t, cl.Conn(), got[0].conn)
	require.Equal(t, c.Addr(owner), got[0].target, "the new owner was learned and is called directly")
}

// TestObjectErrorIsReturnedAtOnce: an error of the object's own handler is
// returned after one run and one RPC, both through a forwarding seed and
// straight from the owner.
func TestObjectErrorIsReturnedAtOnce(t *testing.T) {
	r := &runs{}
	c := startCluster(t, r)
	name := nameOwnedBy(t, c, "Probe", "fail", isNot(0))
	_, owner := ownerOf(t, c, "Probe", name)
	w := &wire{}
	cl := dial(t, c.Addr(0), client.Options{BaseBackoff: time.Millisecond, DialOptions: []grpc.DialOption{w.dialOption()}})
	ctx := context.Background()

	check := func(via string, wantRuns int) {
		t.Helper()
		_, err := cl.Invoke(ctx, "Probe", client.ByName(name), "fail", nil)
		require.Error(t, err)
		require.True(t, client.IsObjectError(err), "marked as the object's error: %v", err)
		require.False(t, client.Retryable(err))
		require.Equal(t, codes.Unknown, status.Code(err))
		require.Contains(t, status.Convert(err).Message(), "the object says no")
		require.Equal(t, wantRuns, r.get(name), "the handler ran once more (%s)", via)
		got := w.take()
		require.Len(t, got, 1, "one RPC (%s)", via)
		require.Equal(t, via, got[0].target)
	}
	check(c.Addr(0), 1) // through the seed, which forwards it
	_, err := cl.Invoke(ctx, "Probe", client.ByName(name), "ok", nil)
	require.NoError(t, err)
	w.take()
	check(c.Addr(owner), 3) // straight to the owner
}

// TestRetryableErrorIsRetried is the control of the tests that count runs: an
// error the server marks retryable is retried until the call succeeds. The
// client is seeded with the owner so that only it retries (a forwarding
// node would retry too).
func TestRetryableErrorIsRetried(t *testing.T) {
	r := &runs{}
	c := startCluster(t, r)
	name := nameOwnedBy(t, c, "Probe", "retry", is(2))
	w := &wire{}
	cl := dial(t, c.Addr(2), client.Options{NoDirect: true, BaseBackoff: time.Millisecond, DialOptions: []grpc.DialOption{w.dialOption()}})
	resp, err := cl.Invoke(context.Background(), "Probe", client.ByName(name), "unavailable", []byte("2"))
	require.NoError(t, err)
	require.Equal(t, "ok", string(resp.GetPayload()))
	require.Equal(t, 3, r.get(name), "two refusals, then success")
	got := w.take()
	require.Len(t, got, 3)
	for _, x := range got[:2] {
		require.Equal(t, codes.Unavailable, status.Code(x.err))
		require.True(t, client.Retryable(x.err))
	}

	// Attempts are bounded.
	cl = dial(t, c.Addr(2), client.Options{NoDirect: true, MaxAttempts: 3, BaseBackoff: time.Millisecond, DialOptions: []grpc.DialOption{w.dialOption()}})
	never := nameOwnedBy(t, c, "Probe", "never", is(2))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = cl.Invoke(ctx, "Probe", client.ByName(never), "unavailable", nil)
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.NoError(t, ctx.Err(), "gave up after MaxAttempts, not at the deadline")
	require.Len(t, w.take(), 3, "MaxAttempts RPCs")
	require.Equal(t, 3, r.get(never))
}

// TestMalformedIDIsNotRetried: IDs that are not 64 hex digits, or belong to
// another class, are InvalidArgument after one RPC, whether or not the client
// already knows the partition count.
func TestMalformedIDIsNotRetried(t *testing.T) {
	c := startCluster(t, &runs{})
	w := &wire{}
	cl := dial(t, c.Addr(1), client.Options{BaseBackoff: time.Millisecond, DialOptions: []grpc.DialOption{w.dialOption()}})
	foreign := durable.IDFromName("Probe", "x").String()
	bad := []client.Ref{client.ByID("xyz"), client.ByID(strings.ToUpper(foreign)), client.ByID(foreign), nil}
	check := func() {
		t.Helper()
		for _, ref := range bad {
			_, err := cl.Invoke(context.Background(), "Counter", ref, "increment", nil)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "ref %v: %v", ref, err)
			require.False(t, client.Retryable(err))
			require.False(t, client.IsObjectError(err))
			require.Equal(t, "INVALID_ARGUMENT", client.Detail(err).GetReason())
			require.Len(t, w.take(), 1, "ref %v: one RPC", ref)
		}
	}
	check()
	increment(t, cl, "learn-the-partition-count")
	w.take()
	check()
}

// TestDeadlineBoundsTheCall: a call gives up when its context ends, whether
// the handler outlasts it or the server keeps refusing it as retryable.
func TestDeadlineBoundsTheCall(t *testing.T) {
	r := &runs{}
	c := startCluster(t, r)
	// Seeded with the objects' owner, so that no forwarding node retries
	// on the client's behalf.
	slow := nameOwnedBy(t, c, "Probe", "slow", is(0))
	refusing := nameOwnedBy(t, c, "Probe", "refusing", is(0))
	w := &wire{}
	cl := dial(t, c.Addr(0), client.Options{
		MaxAttempts: 1 << 30, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		DialOptions: []grpc.DialOption{w.dialOption()},
	})

	// invoke returns how long the call took. The server may answer
	// DeadlineExceeded a hair before the client's own context ends (the
	// deadline travels as a timeout), so "after the deadline" is checked
	// with a margin.
	const deadline = 300 * time.Millisecond
	invoke := func(name, method string) (time.Duration, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		t.Cleanup(cancel)
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := cl.Invoke(ctx, "Probe", client.ByName(name), method, nil)
			done <- err
		}()
		select {
		case err := <-done:
			return time.Since(start), err
		case <-time.After(30 * time.Second): // a hang guard, far past the deadline
			t.Fatalf("%s: the call did not give up when its deadline passed", method)
			return 0, nil
		}
	}
	isDeadline := func(err error) bool {
		return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
	}

	t.Run("handler outlasts it", func(t *testing.T) {
		took, err := invoke(slow, "block")
		require.True(t, isDeadline(err), "%v", err)
		require.Greater(t, took, deadline-50*time.Millisecond, "returned only once the deadline had passed")
		require.Len(t, w.take(), 1, "a deadline is not retried")
	})
	t.Run("always refused", func(t *testing.T) {
		took, err := invoke(refusing, "unavailable")
		require.True(t, isDeadline(err), "%v", err)
		require.Greater(t, took, deadline-50*time.Millisecond, "retried until the deadline")
		got := w.take()
		require.Greater(t, len(got), 1, "retried while the deadline allowed")
		for _, x := range got[:len(got)-1] {
			require.Equal(t, codes.Unavailable, status.Code(x.err), "every RPC but the last was refused")
		}
		// The deadline may cut the last RPC before its handler starts.
		require.GreaterOrEqual(t, r.get(refusing), len(got)-1, "one handler run per refused RPC")
		require.LessOrEqual(t, r.get(refusing), len(got), "no handler run without an RPC")
	})
}

// TestNoDirectOnlyCallsTheSeed: a NoDirect client sends every call to its
// seed, even for objects it has seen owned elsewhere.
func TestNoDirectOnlyCallsTheSeed(t *testing.T) {
	c := startCluster(t, &runs{})
	w := &wire{}
	cl := dial(t, c.Addr(1), client.Options{NoDirect: true, DialOptions: []grpc.DialOption{w.dialOption()}})
	owners := map[string]bool{}
	for round := int64(1); round <= 3; round++ {
		for k := 0; k < 12; k++ {
			v, resp := increment(t, cl, fmt.Sprintf("nodirect-%d", k))
			require.Equal(t, round, v)
			owners[resp.GetOwner()] = true
		}
	}
	require.Len(t, owners, 3, "the objects are owned by all three nodes")
	got := w.take()
	require.Len(t, got, 36)
	for _, r := range got {
		require.Same(t, cl.Conn(), r.conn, "a call went around the seed")
		require.Equal(t, c.Addr(1), r.target)
	}
}
