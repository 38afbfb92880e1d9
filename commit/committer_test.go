package commit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/keyspace"
)

// One etcd serves every test of the package; each test works under its own
// key prefix.
var testEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &testEtcd) }

func newClient(t *testing.T) *clientv3.Client { return embedetcd.TestClient(t, testEtcd) }

// committerT is a committer on the shared etcd with owner keys it wrote
// itself, so tests can hand out valid and stale fencing tokens.
type committerT struct {
	t      *testing.T
	client *clientv3.Client
	keys   keyspace.Space
	c      *Committer

	mu   sync.Mutex
	lost []fence
}

func newCommitterT(t *testing.T, client *clientv3.Client, parallelism, maxOps, maxBytes int) *committerT {
	ct := &committerT{t: t, client: client, keys: keyspace.New(embedetcd.UniquePrefix(t))}
	ct.c = NewCommitter(client, ct.keys, Config{
		Parallelism: parallelism, MaxOps: maxOps, MaxBytes: maxBytes, Timeout: 10 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
		OnLost: func(p int, token int64, _ error) {
			ct.mu.Lock()
			defer ct.mu.Unlock()
			ct.lost = append(ct.lost, fence{p, token})
		},
	})
	t.Cleanup(ct.c.Stop)
	return ct
}

// own writes partition p's owner key and returns its token.
func (ct *committerT) own(p int) int64 {
	ct.t.Helper()
	resp, err := ct.client.Put(context.Background(), ct.keys.Owner(p), "test")
	require.NoError(ct.t, err)
	return resp.Header.Revision
}

// req builds a request of n puts under partition p, reporting to out.
func (ct *committerT) req(p int, token int64, name string, n int, out chan<- error) *Request {
	r := &Request{Partition: p, Token: token, Done: func(err error) { out <- err }}
	for i := range n {
		op := clientv3.OpPut(ct.keys.DataPrefix(p, "C", name)+fmt.Sprint(i), name)
		r.Ops = append(r.Ops, op)
		r.Bytes += OpBytes(op)
	}
	return r
}

// holdSlot commits one request and holds its outcome, which holds the
// batch slot that sent it; closing the returned channel lets it go. With a
// parallelism of 1, everything submitted meanwhile queues.
func (ct *committerT) holdSlot(p int, token int64) chan struct{} {
	ct.t.Helper()
	hold, held := make(chan struct{}), make(chan error, 1)
	first := ct.req(p, token, "first", 1, nil)
	first.Done = func(err error) { held <- err; <-hold }
	ct.c.Submit(first)
	require.NoError(ct.t, <-held)
	return hold
}

// count returns how many keys of object name partition p holds.
func (ct *committerT) count(p int, name string) int {
	ct.t.Helper()
	resp, err := ct.client.Get(context.Background(), ct.keys.DataPrefix(p, "C", name), clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(ct.t, err)
	return int(resp.Count)
}

func TestCommitterBatchesWhatQueuesBehindATxn(t *testing.T) {
	ct := newCommitterT(t, newClient(t), 1, 1000, 1<<20)
	tok := ct.own(0)
	// Everything submitted while the only batch slot is held must go in one
	// Txn.
	hold := ct.holdSlot(0, tok)

	const n = 50
	out := make(chan error, n)
	for i := range n {
		ct.c.Submit(ct.req(0, tok, fmt.Sprint("o", i), 2, out))
	}
	close(hold)
	for range n {
		require.NoError(t, <-out)
	}
	st := ct.c.Stats()
	require.EqualValues(t, 2, st.Txns, "the queued requests were not sent as one batch")
	require.EqualValues(t, n+1, st.Requests)
	require.EqualValues(t, 2*n+1, st.Ops)
	for i := range n {
		require.Equal(t, 2, ct.count(0, fmt.Sprint("o", i)))
	}
}

func TestCommitterBatchLimits(t *testing.T) {
	for _, tc := range []struct {
		name             string
		maxOps, maxBytes int
		perBatch         func(reqBytes int) int
	}{
		// 12 requests of 3 ops behind the first.
		{"ops", 10, 1 << 20, func(int) int { return 3 }},
		{"bytes", 1000, 1000, func(b int) int { return 1000 / b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := newCommitterT(t, newClient(t), 1, tc.maxOps, tc.maxBytes)
			tok := ct.own(0)
			hold := ct.holdSlot(0, tok)
			out := make(chan error, 12)
			per := 0
			for i := range 12 {
				r := ct.req(0, tok, fmt.Sprintf("o%02d", i), 3, out)
				per = tc.perBatch(r.Bytes)
				ct.c.Submit(r)
			}
			require.Less(t, per, 12, "the limit does not bind")
			close(hold)
			for range 12 {
				require.NoError(t, <-out)
			}
			require.EqualValues(t, 1+(12+per-1)/per, ct.c.Stats().Txns)
		})
	}
}

func TestCommitterSplitsABatchWhoseFenceFailed(t *testing.T) {
	ct := newCommitterT(t, newClient(t), 1, 1000, 1<<20)
	good, gone := ct.own(1), ct.own(2)
	stale := gone - 1 // partition 2 changed hands: this token is outdated

	hold := ct.holdSlot(1, good)

	okOut, lostOut := make(chan error, 10), make(chan error, 10)
	for i := range 10 {
		ct.c.Submit(ct.req(1, good, fmt.Sprint("ok", i), 1, okOut))
		ct.c.Submit(ct.req(2, stale, fmt.Sprint("lost", i), 1, lostOut))
	}
	close(hold)
	for range 10 {
		require.NoError(t, <-okOut, "a request of a healthy partition failed with its batch")
		require.ErrorIs(t, <-lostOut, durable.ErrOwnershipLost)
	}
	for i := range 10 {
		require.Equal(t, 1, ct.count(1, fmt.Sprint("ok", i)))
		require.Zero(t, ct.count(2, fmt.Sprint("lost", i)), "a write under a stale token applied")
	}
	require.Equal(t, []fence{{2, stale}}, ct.lost, "the lost partition was reported once")
	require.EqualValues(t, 10, ct.c.Stats().Retried)
}

func TestCommitterLearnsEtcdsLimits(t *testing.T) {
	// An etcd that accepts at most 16 operations per transaction, and a
	// committer told it may send 1000.
	cfg := embedetcd.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.UnsafeNoFsync = true
	cfg.ElectionTimeout = embedetcd.TestElectionTimeout
	cfg.MaxTxnOps = 16
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := embedetcd.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })
	client := embedetcd.TestClient(t, srv)

	ct := newCommitterT(t, client, 1, 1000, 1<<20)
	tok := ct.own(0)
	hold := ct.holdSlot(0, tok)

	out := make(chan error, 10)
	for i := range 10 {
		ct.c.Submit(ct.req(0, tok, fmt.Sprint("o", i), 5, out))
	}
	// A request that could never fit fails on its own, with a clear error.
	tooBig := make(chan error, 1)
	ct.c.Submit(ct.req(0, tok, "big", 20, tooBig))
	close(hold)
	for range 10 {
		require.NoError(t, <-out)
	}
	err = <-tooBig
	require.ErrorIs(t, err, durable.ErrInvalidArgument)
	require.ErrorContains(t, err, "20 operations")
	for i := range 10 {
		require.Equal(t, 5, ct.count(0, fmt.Sprint("o", i)))
	}
	require.Zero(t, ct.count(0, "big"))
	ops, _ := ct.c.Limits()
	require.Less(t, ops, 50, "the committer did not learn to batch less")
	require.Positive(t, ct.c.Stats().Refused)
}

func TestCommitterAfterStop(t *testing.T) {
	ct := newCommitterT(t, newClient(t), 2, 1000, 1<<20)
	tok := ct.own(0)
	ct.c.Stop()
	out := make(chan error, 1)
	ct.c.Submit(ct.req(0, tok, "late", 1, out))
	require.ErrorIs(t, <-out, durable.ErrUnavailable)
	require.Zero(t, ct.count(0, "late"))
}

func TestReaderBatchesPointReads(t *testing.T) {
	client := newClient(t)
	prefix := embedetcd.UniquePrefix(t)
	ctx := context.Background()
	r := NewReader(client, Config{Parallelism: 1, MaxOps: 1000, MaxBytes: 1 << 20})
	t.Cleanup(r.Stop)
	for i := range 20 {
		_, err := client.Put(ctx, fmt.Sprint(prefix, i), fmt.Sprint("v", i))
		require.NoError(t, err)
	}
	// Hold the only batch slot, as in TestCommitterBatchesWhatQueuesBehindATxn.
	hold, held := make(chan struct{}), make(chan struct{})
	r.submit(&readReq{keys: []string{prefix + "0"}, done: func([]*mvccpb.KeyValue, error) { close(held); <-hold }})
	<-held
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			kvs, err := r.Get(ctx, fmt.Sprint(prefix, i), prefix+"absent")
			if assert.NoError(t, err) && assert.Len(t, kvs, 2) && assert.NotNil(t, kvs[0]) {
				assert.Equal(t, fmt.Sprint("v", i), string(kvs[0].Value))
				assert.Nil(t, kvs[1], "a key that does not exist")
			}
		})
	}
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.queue) == 20
	}, 10*time.Second, time.Millisecond)
	close(hold)
	wg.Wait()
	require.EqualValues(t, 2, r.Txns(), "the queued reads were not sent as one Txn")
}
