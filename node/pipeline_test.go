package node_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/node"
)

// commitGate holds the commits of one object in the committer until it is
// opened, then lets them through or fails them.
type commitGate struct {
	prefix string
	open   chan struct{}
	fail   error // set before open is closed
	held   chan struct{}
	once   sync.Once
}

func (s *storeT) gateCommits(obj string) *commitGate {
	g := &commitGate{prefix: s.dataPrefix(obj), open: make(chan struct{}), held: make(chan struct{})}
	s.t.Cleanup(func() { g.release(errors.New("test over")) }) // a failed test must not hold the node
	s.setCommitHook(func(ops []clientv3.Op) error {
		for _, op := range ops {
			if strings.HasPrefix(string(op.KeyBytes()), g.prefix) {
				g.once.Do(func() { close(g.held) })
				<-g.open
				return g.fail
			}
		}
		return nil
	})
	return g
}

// release lets the held commits go on, failing them with err if not nil.
func (g *commitGate) release(err error) {
	select {
	case <-g.open:
	default:
		g.fail = err
		close(g.open)
	}
}

type reply struct {
	res node.Result
	err error
}

// invokeAsync starts fn as an invocation and returns its reply channel.
func (s *storeT) invokeAsync(obj string, fn eventFn) <-chan reply {
	ch := make(chan reply, 1)
	go func() {
		res, err := s.invoke(obj, fn)
		ch <- reply{res, err}
	}()
	return ch
}

// notYet fails the test if ch delivers now. (A reply that shows up later
// than this glance is caught by the assertions that follow the release.)
func notYet(t *testing.T, ch <-chan reply, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s was released before its commit: %+v", what, r)
	case <-time.After(20 * time.Millisecond):
	}
}

func putK(v string) eventFn {
	return func(ctx context.Context, o *tObj) ([]byte, error) {
		return []byte(v), o.S().Put(ctx, "k", []byte(v))
	}
}

func getK(ctx context.Context, o *tObj) ([]byte, error) {
	v, ok, err := o.S().Get(ctx, "k")
	if !ok {
		return []byte("<none>"), err
	}
	return v, err
}

func TestPipelining(t *testing.T) {
	t.Run("NextEventsRunWhileACommitIsInFlight", func(t *testing.T) {
		s := newStoreT(t, nil)
		const obj = "pipe"
		s.mustRun(obj, putK("0")) // active, cached
		before := s.h.commitStats()
		g := s.gateCommits(obj)
		first := s.invokeAsync(obj, putK("1"))
		<-g.held
		// The object is not blocked by its commit: later events run, read
		// the pending write, and write on top of it.
		ran := make(chan string, 3)
		var later []<-chan reply
		for _, v := range []string{"2", "3", "4"} {
			later = append(later, s.invokeAsync(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
				prev, err := getK(ctx, o)
				ran <- string(prev)
				if err != nil {
					return nil, err
				}
				return prev, o.S().Put(ctx, "k", []byte(v))
			}))
			<-ran // in order: each reads its predecessor's pending write
		}
		read := s.invokeAsync(obj, getK)
		notYet(t, first, "the first write's reply")
		notYet(t, read, "a read of a pending write")
		require.Equal(t, map[string]string{"k": "0"}, s.etcdData(obj), "something committed past the gate")

		g.release(nil)
		require.NoError(t, (<-first).err)
		for i, ch := range later {
			r := <-ch
			require.NoError(t, r.err)
			require.Equal(t, strconv.Itoa(i+1), string(r.res.Payload), "event %d read a stale value", i+2)
		}
		r := <-read
		require.NoError(t, r.err)
		require.Equal(t, "4", string(r.res.Payload))
		require.Equal(t, map[string]string{"k": "4"}, s.etcdData(obj))
		// The three writes behind the held one were merged into one commit.
		after := s.h.commitStats()
		require.EqualValues(t, 2, after.Requests-before.Requests)
	})

	t.Run("AFailedCommitFailsEveryLaterReply", func(t *testing.T) {
		s := newStoreT(t, nil)
		const obj = "pipe-fail"
		s.mustRun(obj, putK("0"))
		runs := s.factoryRuns.Load()
		before := s.written()
		g := s.gateCommits(obj)
		first := s.invokeAsync(obj, putK("1"))
		<-g.held
		wrote := make(chan struct{})
		second := s.invokeAsync(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			defer close(wrote)
			return putK("2")(ctx, o)
		})
		<-wrote
		sawPending := make(chan string, 1)
		read := s.invokeAsync(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			v, err := getK(ctx, o)
			sawPending <- string(v)
			return v, err
		})
		require.Equal(t, "2", <-sawPending)
		g.release(errors.New("injected"))

		r := <-first
		require.ErrorIs(t, r.err, durable.ErrCommitUnknown, "the failed commit's own caller")
		for name, ch := range map[string]<-chan reply{"a later write": second, "a read of the failed writes": read} {
			r := <-ch
			require.ErrorIs(t, r.err, durable.ErrObjectReset, name)
			require.True(t, client.Retryable(node.ToStatus(r.err, "")), "%s is safe to retry", name)
			require.Nil(t, r.res.Payload, name)
		}
		s.setCommitHook(nil)
		require.Equal(t, before, s.written())
		// The object forgot what it held: a fresh instance reads storage.
		require.Equal(t, "0", string(s.mustRun(obj, getK)))
		require.Equal(t, runs+1, s.factoryRuns.Load())
	})

	t.Run("AnAlarmRunsOnlyOnDurableState", func(t *testing.T) {
		s := newStoreT(t, nil)
		const obj = "pipe-alarm"
		due := s.h.Clock.Now().Add(time.Second)
		s.mustRun(obj, func(ctx context.Context, o *tObj) ([]byte, error) {
			return nil, o.S().SetAlarm(ctx, due)
		})
		saw := make(chan string, 1)
		s.mu.Lock()
		s.onAlarm = func(ctx context.Context, o *tObj) error {
			v, err := getK(ctx, o)
			saw <- string(v)
			return err
		}
		s.mu.Unlock()
		g := s.gateCommits(obj)
		first := s.invokeAsync(obj, putK("1"))
		<-g.held
		s.h.advance(2 * time.Second)
		select {
		case v := <-saw:
			t.Fatalf("the alarm ran on a pending write (saw %q)", v)
		case <-time.After(50 * time.Millisecond):
		}
		g.release(nil)
		require.NoError(t, (<-first).err)
		require.Equal(t, "1", <-saw)
		s.h.eventually(func() bool {
			resp, err := s.h.Client.Get(context.Background(), s.alarmKey(obj))
			return err == nil && len(resp.Kvs) == 0
		}, "the alarm's success never committed")
	})

	t.Run("RetryOfAPendingRequestWaitsForItsCommit", func(t *testing.T) {
		s := newStoreT(t, nil)
		const obj = "pipe-retry"
		s.mustRun(obj, putK("0"))
		g := s.gateCommits(obj)
		method := s.register(putK("1"))
		call := func() <-chan reply {
			ch := make(chan reply, 1)
			go func() {
				ctx, cancel := context.WithTimeout(node.WithRequestID(context.Background(), "rid-1"), 20*time.Second)
				defer cancel()
				res, err := s.h.n().Invoke(ctx, tClass, node.Ref{Name: obj}, method, nil)
				ch <- reply{res, err}
			}()
			return ch
		}
		first := call()
		<-g.held
		retry := call()
		notYet(t, retry, "the retry of a pending request")
		g.release(nil)
		for _, ch := range []<-chan reply{first, retry} {
			r := <-ch
			require.NoError(t, r.err)
			require.Equal(t, "1", string(r.res.Payload))
		}
		s.setCommitHook(nil)
		require.Equal(t, map[string]string{"k": "1"}, s.etcdData(obj))
	})

	t.Run("ConcurrentIncrementsOfOneObject", func(t *testing.T) {
		s := newStoreT(t, nil)
		const obj = "pipe-hot"
		const n = 100 // within the object's queue (128)
		before := s.h.commitStats()
		var wg sync.WaitGroup
		seen := make([]bool, n+1)
		var mu sync.Mutex
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := s.run(obj, inc)
				if !assert.NoError(t, err) {
					return
				}
				v, err := strconv.Atoi(string(out))
				if assert.NoError(t, err) && assert.True(t, v >= 1 && v <= n, "reply %d", v) {
					mu.Lock()
					assert.False(t, seen[v], "two increments replied %d", v)
					seen[v] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		require.Equal(t, map[string]string{"mem": strconv.Itoa(n)}, s.etcdData(obj))
		st := s.h.commitStats()
		t.Logf("%d increments committed in %d requests, %d Txns", n, st.Requests-before.Requests, st.Txns-before.Txns)
	})
}

// TestGroupCommitAcrossObjects: the writes of objects committing at the
// same time share a Txn, and each caller's reply waits for its own commit.
func TestGroupCommitAcrossObjects(t *testing.T) {
	s := newStoreT(t, func(cfg *node.Config) { cfg.CommitParallelism = 1 })
	const n = 32
	objs := make([]string, n)
	for i := range objs {
		objs[i] = fmt.Sprint("many-", i)
		s.mustRun(objs[i], putK("0"))
	}
	before := s.h.commitStats()
	// The first object's commit is held in the only batch slot; the others
	// queue behind it and must go together once it is through.
	g := s.gateCommits(objs[0])
	replies := []<-chan reply{s.invokeAsync(objs[0], putK("1"))}
	<-g.held
	for _, obj := range objs[1:] {
		replies = append(replies, s.invokeAsync(obj, putK("1")))
	}
	c := s.h.Agent(0).Committer()
	s.h.eventually(func() bool { return c.Queued() == n-1 }, "the commits never queued")
	for i, ch := range replies[1:] {
		notYet(t, ch, fmt.Sprint("the reply of ", objs[i+1]))
	}
	g.release(nil)
	for _, ch := range replies {
		require.NoError(t, (<-ch).err)
	}
	s.setCommitHook(nil)
	for _, obj := range objs {
		require.Equal(t, map[string]string{"k": "1"}, s.etcdData(obj))
	}
	st := s.h.commitStats()
	require.EqualValues(t, n, st.Requests-before.Requests)
	require.EqualValues(t, 2, st.Txns-before.Txns, "the queued commits were not sent as one Txn")
}
