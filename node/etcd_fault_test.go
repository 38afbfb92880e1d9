package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

// freeAddr returns a loopback address that was free a moment ago: nothing
// listens on it once it is returned.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestEtcdUnreachableAtStartFailsClearly starts an agent against an etcd
// endpoint where nothing listens: Start returns an error naming the endpoint
// within its dial timeout, releases its listener and leaves no goroutine
// behind.
func TestEtcdUnreachableAtStartFailsClearly(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	endpoint := "http://" + freeAddr(t)
	listen := freeAddr(t)
	cfg := node.DefaultConfig()
	cfg.ID = "unreachable-etcd"
	cfg.Prefix = embedetcd.UniquePrefix(t)
	cfg.Logger = slog.New(slog.DiscardHandler)

	type result struct {
		a   *agent.Agent
		err error
	}
	done := make(chan result, 1)
	go func() {
		a, err := agent.Start(context.Background(), agent.Config{
			Node: cfg, Etcd: []string{endpoint}, Listen: listen, DialTimeout: 300 * time.Millisecond,
		}, node.NewRegistry())
		done <- result{a, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("agent.Start hung on an unreachable etcd")
	}
	if r.a != nil {
		r.a.Member.Thaw()
		_ = r.a.Wait()
	}
	require.Nil(t, r.a, "an agent started without etcd")
	require.Error(t, r.err)
	require.ErrorContains(t, r.err, endpoint, "the error names the endpoint")
	require.ErrorContains(t, r.err, "unreachable")

	// The listen address was released.
	ln, err := net.Listen("tcp", listen)
	require.NoError(t, err, "the agent's listener was not closed")
	require.NoError(t, ln.Close())
	// The shared etcd of the package may still be starting its serving
	// goroutines; this test starts no etcd server of its own.
	goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/embed.(*serveCtx).startHandler.func1"))
}

// restartableEtcd is an embedded etcd with a fixed data directory and client
// address, so it can be stopped and started again as the same member on the
// same endpoint.
type restartableEtcd struct {
	t   *testing.T
	cfg embedetcd.Config
	mu  sync.Mutex
	srv *embedetcd.Server
}

func startRestartableEtcd(t *testing.T) *restartableEtcd {
	t.Helper()
	cfg := embedetcd.DefaultConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	cfg.ClientAddr = freeAddr(t)
	cfg.UnsafeNoFsync = true
	cfg.ElectionTimeout = embedetcd.TestElectionTimeout
	cfg.Logger = slog.New(slog.DiscardHandler)
	e := &restartableEtcd{t: t, cfg: cfg}
	e.start()
	// Registered before the cluster's cleanups, so it runs after them.
	t.Cleanup(e.stop)
	return e
}

func (e *restartableEtcd) server() *embedetcd.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv
}

func (e *restartableEtcd) start() {
	e.t.Helper()
	srv, err := embedetcd.Start(context.Background(), e.cfg)
	require.NoError(e.t, err, "start etcd")
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
}

func (e *restartableEtcd) stop() {
	e.mu.Lock()
	srv := e.srv
	e.mu.Unlock()
	if srv != nil {
		if err := srv.Close(); err != nil {
			e.t.Errorf("close etcd: %v", err)
		}
	}
}

// startProbeClusterOn is startProbeCluster on a given etcd.
func startProbeClusterOn(t *testing.T, etcd *embedetcd.Server, nodes int, rec *nodetest.Recorder) *nodetest.Cluster {
	return nodetest.Start(t, nodetest.Options{
		Nodes: nodes,
		Etcd:  etcd,
		Register: func(reg *node.Registry) error {
			return nodetest.RegisterProbe(reg, rec)
		},
	})
}

// visitRetrying visits name through node i, retrying while the node says it
// is unavailable (nothing was applied then), until the cluster's deadline.
func visitRetrying(t *testing.T, c *nodetest.Cluster, i int, name string) nodetest.Visit {
	t.Helper()
	var v nodetest.Visit
	c.WaitFor(fmt.Sprintf("a visit of %s through node %d", name, i), func() bool {
		out, err := c.Invoke(i, "Probe", name, "visit", nil)
		if errors.Is(err, durable.ErrUnavailable) {
			return false
		}
		require.NoError(t, err, "visit of %s through node %d", name, i)
		require.NoError(t, json.Unmarshal(out, &v))
		return true
	})
	return v
}

// TestEtcdOutageLosesNothing stops etcd for longer than the lease TTL under a
// 3-node cluster with armed alarms and acknowledged writes, then starts it
// again from the same data on the same endpoint. While etcd is down no call
// succeeds and, past the lease deadline, every call fails as unavailable and
// no event runs; afterwards the cluster settles, every alarm fires (never
// early, under a real tenure of its partition, once it is due) and is
// committed, acknowledged writes survive and no object ran on two nodes at
// once.
func TestEtcdOutageLosesNothing(t *testing.T) {
	const nodes = 3
	rec := &nodetest.Recorder{}
	etcd := startRestartableEtcd(t)
	c := startProbeClusterOn(t, etcd.server(), nodes, rec)
	ttl := c.Nodes[0].Config.LeaseTTL
	pc := c.Node(0).PartitionCount()
	keys := keyspace.New(c.Prefix)

	// Acknowledged writes: two visits of each object, through different nodes.
	const objects = 9
	names := make([]string, objects)
	acked := map[string]int{}
	for k := range names {
		names[k] = fmt.Sprintf("outage-%d", k)
		for j := 0; j < 2; j++ {
			out, err := c.Invoke((k+j)%nodes, "Probe", names[k], "visit", nil)
			require.NoError(t, err)
			var v nodetest.Visit
			require.NoError(t, json.Unmarshal(out, &v))
			require.Equal(t, j+1, v.N)
			acked[names[k]]++
		}
	}
	// Alarms due while every node still trusts its lease (etcd already
	// down: the handler runs, its commit waits), just past every node's
	// lease deadline (etcd still down; etcd may not have expired the leases
	// yet, so a node may still hold the partition) and after etcd is back.
	armedAt := time.Now()
	offsets := []time.Duration{ttl / 4, ttl + 150*time.Millisecond, 3 * ttl}
	due := map[string]time.Time{}
	for k, name := range names {
		d := armedAt.Add(offsets[k%len(offsets)]).Truncate(time.Millisecond)
		_, err := c.Invoke(k%nodes, "Probe", name, "arm", []byte(strconv.FormatInt(d.UnixMilli(), 10)))
		require.NoError(t, err)
		due[name] = d
	}

	// Close refuses new requests at once, then waits up to etcd's request
	// timeout (about 5 s) for open streams such as watches to end. The
	// outage has begun once a fresh request of the test's client fails:
	// every node's last keep-alive was sent before then.
	closed := make(chan struct{})
	go func() { defer close(closed); etcd.stop() }()
	var down time.Time
	c.WaitFor("etcd refuses requests", func() bool {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if _, err := c.Client.Get(ctx, "outage-probe"); err != nil {
			down = start
			return true
		}
		return false
	})
	t.Logf("etcd down %s after arming", down.Sub(armedAt))

	// Before its lease deadline a node may still start an event, but the
	// event cannot commit: no call succeeds. Unless refused up front, its
	// outcome is unknown to the caller: its commit may land once etcd is
	// back, so its nodetest.Visit may count later.
	early := map[string]bool{}
	ambiguous := map[string]int{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for k, name := range names {
		if k%len(offsets) != 2 {
			continue // leave the objects whose alarms come due in the outage idle
		}
		early[name] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), ttl/2)
			defer cancel()
			_, err := c.Node(k%nodes).Invoke(ctx, "Probe", node.Ref{Name: name}, "visit", nil)
			switch {
			case err == nil:
				t.Errorf("visit of %s succeeded with etcd down", name)
			case errors.Is(err, durable.ErrUnavailable):
			case errors.Is(err, durable.ErrCommitUnknown), errors.Is(err, context.DeadlineExceeded),
				status.Code(err) == codes.DeadlineExceeded: // the deadline of a call forwarded to the owner
				mu.Lock()
				ambiguous[name]++
				mu.Unlock()
			default:
				t.Errorf("visit of %s with etcd down: unexpected error %v", name, err)
			}
		}()
	}
	wg.Wait()

	// Past the lease TTL no node trusts its lease any more: every call,
	// through any node, is refused as unavailable (safe to retry).
	time.Sleep(time.Until(down.Add(ttl)))
	for i := 0; i < nodes; i++ {
		for _, name := range names {
			ctx, cancel := context.WithTimeout(context.Background(), ttl)
			_, err := c.Node(i).Invoke(ctx, "Probe", node.Ref{Name: name}, "visit", nil)
			cancel()
			require.ErrorIs(t, err, durable.ErrUnavailable, "visit of %s through node %d with etcd down for a lease TTL", name, i)
		}
	}
	time.Sleep(time.Until(down.Add(2 * ttl)))
	<-closed
	etcd.start()
	up := time.Now()
	c.Etcd = etcd.server()
	t.Logf("etcd down for %s", up.Sub(down))

	// The cluster's own client reconnects to the restarted member.
	c.WaitFor("the test client reconnects to etcd", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Client.Get(ctx, "reconnect-probe")
		return err == nil
	})
	c.WaitSettled()

	// Every alarm ran to success: its record is gone.
	c.WaitFor("every armed alarm fired and committed", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := c.Client.Get(ctx, keys.AlarmsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 0 && len(rec.Alarms()) == len(names)
	})
	fired := rec.Alarms()
	for _, name := range names {
		p := durable.IDFromName("Probe", name).Partition(pc)
		runs := fired[name]
		require.NotEmpty(t, runs, "alarm of %s lost", name)
		for _, r := range runs {
			t.Logf("alarm of %s (p%d): due +%s, ran at +%s on %s (token %d)",
				name, p, due[name].Sub(armedAt), r.Start.Sub(armedAt), r.Node, r.Token)
			require.False(t, r.Start.Before(due[name]), "alarm of %s fired early: at %s, due %s", name, r.Start, due[name])
			require.True(t, r.Scheduled.Equal(due[name]), "alarm of %s scheduled at %s, armed for %s", name, r.Scheduled, due[name])
			// It ran under a real tenure of its node: owner/p was created
			// for that node at the revision of the run's token.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := c.Client.Get(ctx, keys.Owner(p), clientv3.WithRev(r.Token))
			cancel()
			require.NoError(t, err)
			require.Len(t, resp.Kvs, 1, "no owner of p%d at revision %d", p, r.Token)
			require.Equal(t, r.Token, resp.Kvs[0].CreateRevision, "alarm of %s ran under token %d, not a tenure of p%d", name, r.Token, p)
			require.Equal(t, r.Node, string(resp.Kvs[0].Value), "alarm of %s ran on %s under %s's tenure", name, r.Node, resp.Kvs[0].Value)
		}
	}

	// No event started while no node could confirm its lease.
	for _, r := range rec.Snapshot() {
		if !r.Start.Before(down.Add(ttl)) && r.Start.Before(up) {
			t.Errorf("%s of %s ran on %s at +%s into the outage, past every lease deadline",
				r.Kind, r.Object, r.Node, r.Start.Sub(down))
		}
	}

	// Acknowledged writes survived: each count continues from the visits
	// acknowledged, plus at most the ones of unknown outcome.
	for k, name := range names {
		v := visitRetrying(t, c, (k+2)%nodes, name)
		lo, hi := acked[name]+1, acked[name]+ambiguous[name]+1
		require.GreaterOrEqual(t, v.N, lo, "visits of %s after the outage: an acknowledged write was lost", name)
		require.LessOrEqual(t, v.N, hi, "visits of %s after the outage: a refused visit was applied", name)
	}
	rec.CheckNoOverlap(t)
}
