package leader

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/placement"
)

// electionKey returns the current leader key of dc and its term.
func electionKey(t *testing.T, cli *clientv3.Client, keys keyspace.Space, dc string) (string, int64) {
	t.Helper()
	resp, err := cli.Get(context.Background(), keys.Election(dc), clientv3.WithFirstCreate()...)
	require.NoError(t, err)
	require.NotEmpty(t, resp.Kvs)
	return string(resp.Kvs[0].Key), resp.Kvs[0].CreateRevision
}

// TestDeposedLeaderCannotWrite: a leader frozen past its session TTL loses
// its election to the other campaigner; once thawed it stops leading, and a
// write under its old term fails and changes nothing.
func TestDeposedLeaderCannotWrite(t *testing.T) {
	etcd := embedetcd.Test(t)
	cli := embedetcd.TestClient(t, etcd)
	keys := keyspace.New(embedetcd.UniquePrefix(t))
	meta := placement.Meta{Partitions: 4, HomeDCs: []string{"a"}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	start := func(id string, f *placement.Freezer) *Leader {
		l := New(Config{
			Node: id, DC: "a", Meta: meta, TTL: time.Second, Grace: time.Second, Stabilise: time.Second,
			Gate: f.Gate, Logger: slog.New(slog.DiscardHandler),
		}, cli, keys)
		done := make(chan struct{})
		go func() { defer close(done); l.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return l
	}
	f1, f2 := &placement.Freezer{}, &placement.Freezer{}
	l1 := start("n1", f1)
	require.Eventually(t, func() bool { return l1.Term() > 0 }, 10*time.Second, 5*time.Millisecond)
	l2 := start("n2", f2)
	key1, term1 := electionKey(t, cli, keys, "a")
	require.Equal(t, l1.Term(), term1)
	// Once n2 campaigns (its key is there, behind n1's), it waits.
	require.Eventually(t, func() bool {
		resp, err := cli.Get(context.Background(), keys.Election("a"), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	}, 10*time.Second, 5*time.Millisecond, "the second campaigner never campaigned")
	require.Zero(t, l2.Term(), "one leader at a time")

	f1.Freeze()
	require.Eventually(t, func() bool { return l2.Term() > 0 }, 10*time.Second, 5*time.Millisecond,
		"the other campaigner is elected once the frozen leader's session expires")
	_, term2 := electionKey(t, cli, keys, "a")
	require.Greater(t, term2, term1)
	f1.Thaw()
	require.Eventually(t, func() bool { return l1.Term() == 0 }, 10*time.Second, 5*time.Millisecond,
		"the thawed leader notices it lost")

	before, err := cli.Get(ctx, keys.Assign(0))
	require.NoError(t, err)
	written, err := l1.write(ctx, key1, term1, []Change{{P: 0, Prev: modRev(before), Next: Assignment{Home: "a", DC: "a", Node: "n1"}}})
	require.ErrorIs(t, err, errDeposed)
	require.Empty(t, written)
	require.ErrorIs(t, l1.publish(ctx, key1, term1, Record{DC: "a", Node: "n1", Term: term1}), errDeposed, "a deposed leader published its record")
	after, err := cli.Get(ctx, keys.Assign(0))
	require.NoError(t, err)
	require.Equal(t, modRev(before), modRev(after), "the deposed leader's write changed nothing")
}

func modRev(r *clientv3.GetResponse) int64 {
	if len(r.Kvs) == 0 {
		return 0
	}
	return r.Kvs[0].ModRevision
}
