package agent_test

// Regression tests of issue #13 at the agent: honest health, a node whose
// id was taken, bounded Admin, Locate, and a full etcd.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	"github.com/durable-run/durable/placement"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

func healthOf(t *testing.T, c *client.Client, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	hr, err := healthpb.NewHealthClient(c.Conn()).Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
	require.NoError(t, err)
	return hr.GetStatus()
}

func examplesCluster(t *testing.T, nodes int) *nodetest.Cluster {
	return nodetest.Start(t, nodetest.Options{Nodes: nodes, Register: func(reg *node.Registry) error {
		return examples.Register(reg, examples.Config{Upstream: "http://127.0.0.1:1"})
	}})
}

// TestHealthFollowsTheLeaseAndDrain: a node frozen past its lease deadline
// reports NOT_SERVING (before: SERVING forever once set), and SERVING again
// once it confirms a lease; a drained node keeps "" SERVING (it still
// routes) but reports durable.v1.Objects NOT_SERVING.
func TestHealthFollowsTheLeaseAndDrain(t *testing.T) {
	c := examplesCluster(t, 2)
	cl := c.Dial(1)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, healthOf(t, cl, ""))
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, healthOf(t, cl, agent.ObjectsService))
	c.Pause(1)
	c.WaitFor("the frozen node reports NOT_SERVING", func() bool {
		return healthOf(t, cl, "") == healthpb.HealthCheckResponse_NOT_SERVING
	})
	c.Resume(1)
	c.WaitSettled()
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, healthOf(t, cl, ""))

	_, err := cl.Admin().Drain(context.Background(), &durablev1.DrainRequest{})
	require.NoError(t, err)
	c.WaitFor("the drained node says its Objects service is not serving", func() bool {
		return healthOf(t, cl, agent.ObjectsService) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, healthOf(t, cl, ""), "a drained node still routes")
}

// TestDrainedNodeStaysDrainingAfterLosingItsLease: a drained node frozen
// past its lease registers again as draining, so the leader gives it no
// partitions. (Before: it came back as a live, non-draining node, was
// assigned partitions it never claimed, and they stayed unowned.)
func TestDrainedNodeStaysDrainingAfterLosingItsLease(t *testing.T) {
	c := examplesCluster(t, 2)
	id := c.Agent(1).Config().Node.ID
	_, err := c.Dial(1).Admin().Drain(context.Background(), &durablev1.DrainRequest{})
	require.NoError(t, err)
	c.WaitSettled()
	node := func() (placement.NodeInfo, bool) {
		resp, err := c.Client.Get(context.Background(), c.Prefix+"nodes/"+id)
		require.NoError(t, err)
		if len(resp.Kvs) == 0 {
			return placement.NodeInfo{}, false
		}
		n, err := placement.ParseNode(id, resp.Kvs[0].Value)
		require.NoError(t, err)
		return n, true
	}
	c.Pause(1)
	c.WaitFor("the frozen node's registration expired", func() bool { _, ok := node(); return !ok })
	c.Resume(1)
	c.WaitFor("the node registered again", func() bool { _, ok := node(); return ok })
	n, _ := node()
	require.True(t, n.Draining, "the drained node came back as not draining")
	c.WaitSettled()
	require.Empty(t, c.Agent(1).Member.Owned(), "the draining node owns partitions")
}

// TestNodeWhoseIDWasTakenStops: a node frozen past its lease whose id a
// second process registered meanwhile stops with a clear error when it
// wakes, instead of retrying forever while reporting SERVING.
func TestNodeWhoseIDWasTakenStops(t *testing.T) {
	c := examplesCluster(t, 1)
	first := c.Agent(0)
	cfg := first.Config()
	c.Pause(0)
	keys := c.Prefix
	c.WaitFor("the frozen node's registration expired", func() bool {
		resp, err := c.Client.Get(context.Background(), keys+"nodes/"+cfg.Node.ID)
		require.NoError(t, err)
		return len(resp.Kvs) == 0
	})
	cfg.Listen = "127.0.0.1:0"
	cfg.Node.Advertise = ""
	ctx, stop := context.WithCancel(context.Background())
	second, err := agent.Start(ctx, cfg, c.Registry())
	require.NoError(t, err)
	t.Cleanup(func() { stop(); _ = second.Wait() })
	require.Eventually(t, second.Member.LeaseValid, 10*time.Second, 10*time.Millisecond, "the second process never registered")
	first.Member.Thaw()
	select {
	case <-first.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the node whose id was taken kept running")
	}
	require.ErrorIs(t, first.Wait(), placement.ErrNodeIDInUse)
	c.Nodes[0].Forget()
}

// TestStatusAndLocate: Status answers with this node's lease and admission
// figures; Locate names an object's partition, owner and token.
func TestStatusAndLocate(t *testing.T) {
	c := examplesCluster(t, 2)
	cl := c.Dial(0)
	ctx := context.Background()
	st, err := cl.Admin().Status(ctx, &durablev1.StatusRequest{})
	require.NoError(t, err)
	var me *durablev1.NodeStatus
	for _, n := range st.GetNodes() {
		if n.GetId() == st.GetAnsweredBy() {
			me = n
		}
	}
	require.NotNil(t, me)
	require.True(t, me.GetLeaseValid())
	require.Positive(t, me.GetLeaseMarginMs())
	require.Positive(t, me.GetCallLimit())
	require.Len(t, st.GetPartitions(), int(st.GetPartitionCount()))

	_, err = cl.Invoke(ctx, "Counter", client.ByName("where"), "increment", nil)
	require.NoError(t, err)
	loc, err := cl.Admin().Locate(ctx, &durablev1.LocateRequest{Class: "Counter", Object: client.ByName("where")})
	require.NoError(t, err)
	id := durable.IDFromName("Counter", "where")
	require.Equal(t, id.String(), loc.GetId())
	p := id.Partition(int(st.GetPartitionCount()))
	require.EqualValues(t, p, loc.GetPartition())
	owner := c.Owners()[p]
	require.Equal(t, owner.Node, loc.GetOwner())
	require.Equal(t, owner.Token, loc.GetToken())
	require.NotEmpty(t, loc.GetOwnerAddress())
	_, err = cl.Admin().Locate(ctx, &durablev1.LocateRequest{Class: "Nope", Object: client.ByName("x")})
	require.Equal(t, codes.NotFound, status.Code(err))
}

// TestFullEtcd: with etcd out of space, writes fail definitely as
// ResourceExhausted/STORAGE_FULL with a retry-after (before: Unknown
// COMMIT_UNKNOWN), reads still work, a restarted node does not exit; once
// an operator frees space (delete, compact, defragment, disarm) writes and
// the restarted node work again.
func TestFullEtcd(t *testing.T) {
	cfg := embedetcd.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.UnsafeNoFsync = true
	cfg.ElectionTimeout = embedetcd.TestElectionTimeout
	cfg.QuotaBackendBytes = 4 << 20
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := embedetcd.Start(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	c := nodetest.Start(t, nodetest.Options{Etcd: srv, Register: func(reg *node.Registry) error {
		return examples.Register(reg, examples.Config{Upstream: "http://127.0.0.1:1"})
	}})
	cl := c.Dial(0)
	ctx := context.Background()
	_, err = cl.Invoke(ctx, "Counter", client.ByName("c"), "increment", nil)
	require.NoError(t, err)

	// Fill etcd until it raises its NOSPACE alarm.
	filler := strings.Repeat("x", 512<<10)
	for i := 0; ; i++ {
		require.Less(t, i, 200, "etcd never filled up")
		if _, err := c.Client.Put(ctx, fmt.Sprintf("/filler/%d", i), filler); err != nil {
			require.ErrorContains(t, err, "space exceeded")
			break
		}
	}
	_, err = cl.Invoke(ctx, "Counter", client.ByName("c"), "increment", nil)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.Equal(t, "STORAGE_FULL", client.Detail(err).GetReason())
	require.Positive(t, client.Detail(err).GetRetryAfterMs())
	got, err := cl.Invoke(ctx, "Counter", client.ByName("c"), "get", nil)
	require.NoError(t, err, "reads stop working on a full etcd")
	require.JSONEq(t, `{"value":1}`, string(got.GetPayload()))

	// A restarted node cannot register (a lease grant is a write) but does
	// not exit: it keeps trying.
	c.Stop(0)
	m := c.Nodes[0]
	rctx, stop := context.WithCancelCause(context.Background())
	restarted, err := agent.Start(rctx, agent.Config{Node: m.Config, Etcd: c.EtcdEndpoints(), Listen: m.Listen}, c.Registry())
	require.NoError(t, err, "a node could not start against a full etcd")
	m.Adopt(restarted, stop)
	select {
	case <-restarted.Done():
		t.Fatalf("the node exited: %v", restarted.Wait())
	case <-time.After(2 * time.Second):
	}

	// The operator's recovery (docs/operations.md).
	resp, err := c.Client.Delete(ctx, "/filler/", clientv3.WithPrefix())
	require.NoError(t, err)
	_, err = c.Client.Compact(ctx, resp.Header.Revision)
	require.NoError(t, err)
	_, err = c.Client.Defragment(ctx, c.EtcdEndpoints()[0])
	require.NoError(t, err)
	alarms, err := c.Client.AlarmList(ctx)
	require.NoError(t, err)
	for _, a := range alarms.Alarms {
		_, err := c.Client.AlarmDisarm(ctx, (*clientv3.AlarmMember)(a))
		require.NoError(t, err)
	}
	require.Eventually(t, restarted.Member.LeaseValid, 20*time.Second, 20*time.Millisecond, "the node never registered after the recovery")
	c.WaitSettled()
	_, err = c.Dial(0).Invoke(ctx, "Counter", client.ByName("c"), "increment", nil)
	require.NoError(t, err, "writes after the recovery")
}

// TestPurgeDeadLettersSaysWhichOrAll: an empty purge request, one with
// both all and a filter, and an object without its class are refused and
// delete nothing; a class filter purges (none here).
func TestPurgeDeadLettersSaysWhichOrAll(t *testing.T) {
	c := examplesCluster(t, 1)
	admin := c.Dial(0).Admin()
	for _, req := range []*durablev1.PurgeDeadLettersRequest{
		{},
		{All: true, Class: "Batcher"},
		{Object: &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: "x"}}},
	} {
		_, err := admin.PurgeDeadLetters(context.Background(), req)
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%v: %v", req, err)
	}
	resp, err := admin.PurgeDeadLetters(context.Background(), &durablev1.PurgeDeadLettersRequest{Class: "Batcher"})
	require.NoError(t, err)
	require.Zero(t, resp.GetPurged())
}

// buryDeadLetter writes a dead letter of the object class/name, its alarm
// scheduled at sched, straight into etcd, as an alarm abandoned after its
// last retry leaves one.
func buryDeadLetter(t *testing.T, c *nodetest.Cluster, class, name string, sched time.Time) {
	t.Helper()
	id := durable.IDFromName(class, name)
	store := alarmstore.New(c.Client, keyspace.New(c.Prefix))
	r := alarmstore.Record{Class: class, ID: id, Name: name, Partition: id.Partition(c.Agent(0).Node.PartitionCount()),
		Due: sched, Scheduled: sched, RetryCount: 6, LastError: "boom"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Client.Txn(ctx).Then(store.DeadLetterOp(r, time.Now())).Commit()
	require.NoError(t, err)
}

// TestRequeueDeadLetterThroughAnyNode: a dead letter of an object owned by
// another node is requeued through this one (forwarded to the owner): the
// dead letter is gone and the alarm set again; an object with an alarm
// pending is refused and keeps its dead letter.
func TestRequeueDeadLetterThroughAnyNode(t *testing.T) {
	c := examplesCluster(t, 2)
	ctx := context.Background()
	admin := c.Dial(0).Admin()
	ownedBy1 := func(prefix string) string {
		for i := 0; ; i++ {
			n := fmt.Sprint(prefix, i)
			loc, err := admin.Locate(ctx, &durablev1.LocateRequest{Class: "Reminder", Object: &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: n}}})
			require.NoError(t, err)
			if loc.GetOwner() == c.Nodes[1].Config.ID {
				return n
			}
		}
	}
	bury := func(name string) { buryDeadLetter(t, c, "Reminder", name, time.UnixMilli(1_700_000_000_000)) }
	deadOf := func(name string) int {
		resp, err := admin.ListDeadLetters(ctx, &durablev1.ListDeadLettersRequest{Class: "Reminder"})
		require.NoError(t, err)
		n := 0
		for _, d := range resp.GetDeadLetters() {
			if d.GetAlarm().GetName() == name {
				n++
			}
		}
		return n
	}
	ref := func(name string) *durablev1.ObjectRef {
		return &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: name}}
	}

	name := ownedBy1("requeue-")
	bury(name)
	require.Equal(t, 1, deadOf(name))
	_, err := admin.RequeueDeadLetter(ctx, &durablev1.RequeueDeadLetterRequest{Class: "Reminder", Object: ref(name)})
	require.NoError(t, err)
	require.Zero(t, deadOf(name), "the dead letter stays")
	_, err = admin.RequeueDeadLetter(ctx, &durablev1.RequeueDeadLetterRequest{Class: "Reminder", Object: ref(name)})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "requeued twice: %v", err)

	busy := ownedBy1("busy-")
	_, err = c.Dial(0).Invoke(ctx, "Reminder", client.ByName(busy), "set", []byte(`{"message":"later","in":"1h"}`))
	require.NoError(t, err)
	bury(busy)
	_, err = admin.RequeueDeadLetter(ctx, &durablev1.RequeueDeadLetterRequest{Class: "Reminder", Object: ref(busy)})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Equal(t, "ALARM_PENDING", client.Detail(err).GetReason())
	require.Equal(t, 1, deadOf(busy), "a refused requeue deleted the dead letter")
}
