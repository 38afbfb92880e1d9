package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

func startProbeCluster(t *testing.T, nodes int, rec *nodetest.Recorder) *nodetest.Cluster {
	return nodetest.Start(t, nodetest.Options{
		Nodes: nodes,
		Register: func(reg *node.Registry) error {
			return nodetest.RegisterProbe(reg, rec)
		},
	})
}

func TestAnyNodeRoutesToTheSingleOwner(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := startProbeCluster(t, 3, rec)
	owners := c.Owners()
	for obj := 0; obj < 12; obj++ {
		name := fmt.Sprintf("obj-%d", obj)
		p := durable.IDFromName("Probe", name).Partition(c.Node(0).PartitionCount())
		for i := 0; i < 3; i++ {
			cl := c.Dial(i)
			resp, err := cl.Invoke(context.Background(), "Probe", client.ByName(name), "visit", nil)
			require.NoError(t, err)
			var v nodetest.Visit
			require.NoError(t, json.Unmarshal(resp.GetPayload(), &v))
			require.Equal(t, owners[p].Node, v.Node, "object %s ran off its owner when called through node %d", name, i)
			require.Equal(t, owners[p].Token, v.Token)
			require.Equal(t, i+1, v.N, "visits of %s", name)
			require.Equal(t, c.Addr(nodeIndex(t, c, v.Node)), resp.GetOwner(), "the reply names the owner")
		}
	}
	rec.CheckNoOverlap(t)
}

func nodeIndex(t *testing.T, c *nodetest.Cluster, id string) int {
	for i, m := range c.Nodes {
		if m.Config.ID == id {
			return i
		}
	}
	t.Fatalf("no node %q", id)
	return -1
}

// namesOwnedBy returns object names whose partitions node i owns.
func namesOwnedBy(c *nodetest.Cluster, i, want int) []string {
	owned := map[int]bool{}
	for _, p := range c.Agent(i).Member.Owned() {
		owned[p] = true
	}
	var out []string
	for k := 0; len(out) < want; k++ {
		name := fmt.Sprintf("o-%d", k)
		if owned[durable.IDFromName("Probe", name).Partition(c.Node(i).PartitionCount())] {
			out = append(out, name)
		}
	}
	return out
}

func TestKilledNodesPartitionsMoveAndAlarmsFireElsewhere(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := startProbeCluster(t, 3, rec)
	victim := c.Nodes[1].Config.ID
	names := namesOwnedBy(c, 1, 6)
	due := time.Now().Add(time.Second)
	for _, name := range names {
		_, err := c.Invoke(0, "Probe", name, "visit", nil)
		require.NoError(t, err)
		_, err = c.Invoke(0, "Probe", name, "arm", []byte(strconv.FormatInt(due.UnixMilli(), 10)))
		require.NoError(t, err)
	}
	killed := time.Now()
	c.Kill(1)
	c.WaitSettled()
	for p, o := range c.Owners() {
		require.NotEqual(t, victim, o.Node, "partition %d still owned by the killed node", p)
	}
	c.WaitFor("every alarm fired", func() bool { return len(rec.Alarms()) == len(names) })
	for obj, runs := range rec.Alarms() {
		r := runs[0]
		require.NotEqual(t, victim, r.Node, "alarm of %s ran on the killed node", obj)
		require.False(t, r.Start.Before(r.Scheduled), "alarm of %s fired early", obj)
	}
	t.Logf("kill → last alarm fired: %s", time.Since(killed))
	// Acknowledged writes survive.
	for _, name := range names {
		out, err := c.Invoke(2, "Probe", name, "visit", nil)
		require.NoError(t, err)
		var v nodetest.Visit
		require.NoError(t, json.Unmarshal(out, &v))
		require.Equal(t, 2, v.N, "visits of %s after failover", name)
	}
	rec.CheckNoOverlap(t)
}

func TestPausedNodeServesNoStaleReadAndCommitsNothing(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := startProbeCluster(t, 3, rec)
	names := namesOwnedBy(c, 1, 3)
	for _, name := range names {
		_, err := c.Invoke(1, "Probe", name, "visit", nil) // active on node 1, n=1
		require.NoError(t, err)
	}
	paused := c.Nodes[1].Config.ID
	c.Pause(1)
	// The others take the partitions once node 1's lease expires. (A call
	// forwarded to the frozen node before the others notice would hang like
	// one sent to a SIGSTOPped process, until its deadline: wait until their
	// views show the new owners.)
	c.WaitViews(1)
	for _, name := range names {
		out, err := c.Invoke(0, "Probe", name, "visit", nil)
		require.NoError(t, err)
		var v nodetest.Visit
		require.NoError(t, json.Unmarshal(out, &v))
		require.Equal(t, 2, v.N)
		require.NotEqual(t, paused, v.Node)
	}
	c.Resume(1)
	// Through the resumed node: either refused as retryable or routed to the
	// new owner; never node 1's stale in-memory state.
	want := map[string]int{}
	for _, name := range names {
		want[name] = 2
		out, err := c.Invoke(1, "Probe", name, "visit", nil)
		if err != nil {
			require.ErrorIs(t, err, durable.ErrUnavailable, "the resumed node's refusal of %s", name)
			continue
		}
		var v nodetest.Visit
		require.NoError(t, json.Unmarshal(out, &v))
		require.NotEqual(t, paused, v.Node, "the resumed zombie served %s", name)
		require.Equal(t, 3, v.N, "stale read of %s", name)
		want[name] = 3
	}
	c.WaitSettled()
	// Nothing the zombie did after the pause reached storage: each count is
	// exactly the visits acknowledged.
	for _, name := range names {
		out, err := c.Invoke(0, "Probe", name, "visit", nil)
		require.NoError(t, err)
		var v nodetest.Visit
		require.NoError(t, json.Unmarshal(out, &v))
		require.Equal(t, want[name]+1, v.N, "visits of %s", name)
	}
	rec.CheckNoOverlap(t)
	onPaused := 0
	for _, x := range rec.Snapshot() {
		if x.Node == paused && x.Kind == "invoke" && slices.Contains(names, x.Object) {
			onPaused++
		}
	}
	require.LessOrEqual(t, onPaused, len(names)+len(names), "runs on the paused node: the visits before the pause, and at most one per object after it rejoined")
}

// TestRollingRestartLosesNothing restarts every node in turn under a steady
// stream of invocations and alarms: no call that was safe to retry fails, no
// alarm is lost or early, no object runs on two nodes at once.
func TestRollingRestartLosesNothing(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := startProbeCluster(t, 3, rec)
	cl := c.DialAll()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var calls, failures atomic.Int64
	var armed sync.Map // object → due
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ctx.Err() == nil; k++ {
				name := fmt.Sprintf("w%d-%d", w, k%20)
				cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
				_, err := cl.Invoke(cctx, "Probe", client.ByName(name), "visit", nil)
				if err == nil && k%5 == 0 {
					aname := fmt.Sprintf("alarm-w%d-%d", w, k)
					due := time.Now().Add(500 * time.Millisecond)
					_, err = cl.Invoke(cctx, "Probe", client.ByName(aname), "arm", []byte(strconv.FormatInt(due.UnixMilli(), 10)))
					if err == nil {
						armed.Store(aname, due)
					}
				}
				ccancel()
				if ctx.Err() != nil {
					return
				}
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("call failed during rolling restart: %v", err)
				}
			}
		}()
	}
	// Each step of the restart happens under calls that keep completing.
	flowing := func() {
		before := calls.Load()
		c.WaitFor("calls complete", func() bool { return calls.Load() >= before+20 })
	}
	for i := range c.Nodes {
		flowing()
		c.Stop(i)
		c.Restart(i)
		c.WaitSettled()
	}
	flowing()
	cancel()
	wg.Wait()
	require.Zero(t, failures.Load(), "failed calls out of %d", calls.Load())
	require.Positive(t, calls.Load())

	c.WaitFor("every armed alarm fired", func() bool {
		fired := rec.Alarms()
		ok := true
		armed.Range(func(k, _ any) bool {
			if len(fired[k.(string)]) == 0 {
				ok = false
			}
			return ok
		})
		return ok
	})
	fired := rec.Alarms()
	armed.Range(func(k, v any) bool {
		for _, r := range fired[k.(string)] {
			require.False(t, r.Start.Before(v.(time.Time).Truncate(time.Millisecond)), "alarm of %s fired early", k)
		}
		return true
	})
	rec.CheckNoOverlap(t)
	t.Logf("%d calls, %d alarms, through 3 graceful restarts", calls.Load(), len(fired))
}

func TestJoiningNodeGetsAFairShare(t *testing.T) {
	c := startProbeCluster(t, 3, &nodetest.Recorder{})
	c.Stop(2)
	c.WaitSettled()
	require.Empty(t, c.Nodes[2].Agent())
	c.Restart(2)
	c.WaitSettled()
	counts := map[string]int{}
	for _, o := range c.Owners() {
		counts[o.Node]++
	}
	require.Len(t, counts, 3, "every node owns partitions: %v", counts)
	require.GreaterOrEqual(t, counts[c.Nodes[2].Config.ID], 1)
}

func TestDuplicateNodeIDIsRefused(t *testing.T) {
	c := startProbeCluster(t, 1, &nodetest.Recorder{})
	cfg := c.Nodes[0].Config
	a, err := startAgent(c, cfg)
	if err == nil {
		err = a.Wait()
	}
	require.ErrorContains(t, err, "already in use")
}

// TestAdminDrainMovesEveryPartitionWithoutFailingCalls drains a node through
// the Admin API while calls run: every partition moves to the others, no
// call fails, and the drained node stays up and still routes calls.
func TestAdminDrainMovesEveryPartitionWithoutFailingCalls(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := startProbeCluster(t, 3, rec)
	cl := c.DialAll()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var calls atomic.Int64
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ctx.Err() == nil; k++ {
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := cl.Invoke(cctx, "Probe", client.ByName(fmt.Sprintf("d%d-%d", w, k%16)), "visit", nil)
				ccancel()
				if err != nil {
					t.Errorf("call failed during drain: %v", err)
					return
				}
				calls.Add(1)
			}
		}()
	}
	flowing := func() {
		before := calls.Load()
		c.WaitFor("calls complete", func() bool { return calls.Load() >= before+20 })
	}
	flowing()
	drained := c.Nodes[1].Config.ID
	resp, err := c.Dial(1).Admin().Drain(context.Background(), &durablev1.DrainRequest{})
	require.NoError(t, err)
	require.Equal(t, drained, resp.GetNode())
	require.Empty(t, resp.GetRemaining())
	owners := c.Owners()
	require.Len(t, owners, c.Node(0).PartitionCount(), "every partition has an owner when Drain returns")
	for p, o := range owners {
		require.NotEqual(t, drained, o.Node, "partition %d still on the drained node", p)
	}
	flowing()
	cancel()
	wg.Wait()
	require.Positive(t, calls.Load())
	// The drained node is still up and routes to the owners.
	_, err = c.Invoke(1, "Probe", "after-drain", "visit", nil)
	require.NoError(t, err)
	require.Empty(t, c.Agent(1).Member.Owned())
	rec.CheckNoOverlap(t)
}
