package leader_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/leader"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	"github.com/durable-run/durable/placement"
)

var sharedEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &sharedEtcd, embedetcd.PeerHTTPLeaks...) }

// start runs n nodes over dcs (node i in dcs[i % len]) with Probe objects.
func start(t *testing.T, n int, dcs []string, rec *nodetest.Recorder) *nodetest.Cluster {
	t.Helper()
	return nodetest.Start(t, nodetest.Options{
		Nodes: n, DCs: dcs, Etcd: sharedEtcd,
		Register: func(reg *node.Registry) error { return nodetest.RegisterProbe(reg, rec) },
	})
}

// dcOf maps node ids to data centers.
func dcOf(c *nodetest.Cluster) map[string]string {
	out := map[string]string{}
	for _, m := range c.Nodes {
		out[m.Config.ID] = m.Config.DC
	}
	return out
}

// leaderIndex returns the index of the running node that leads dc, waiting
// for one that the node itself and etcd agree on.
func leaderIndex(t *testing.T, c *nodetest.Cluster, dc string) (int, int64) {
	t.Helper()
	idx, term := -1, int64(0)
	c.WaitFor("a leader in "+dc, func() bool {
		l, ok := c.Leaders()[dc]
		if !ok {
			return false
		}
		for i, m := range c.Nodes {
			if m.Config.ID == l.Node && c.Running(i) && c.Agent(i).Leader.Term() == l.Term {
				idx, term = i, l.Term
				return true
			}
		}
		return false
	})
	return idx, term
}

// checkOneLeaderPerDC asserts that in each data center with running nodes
// exactly one node believes it leads, and it is the node etcd names.
func checkOneLeaderPerDC(t *testing.T, c *nodetest.Cluster) {
	t.Helper()
	leaders := c.Leaders()
	believers := map[string][]string{}
	for i, m := range c.Nodes {
		if c.Running(i) && c.Agent(i).Leader.Term() > 0 {
			believers[m.Config.DC] = append(believers[m.Config.DC], m.Config.ID)
		}
	}
	for dc, ids := range believers {
		require.Len(t, ids, 1, "nodes leading %s at once", dc)
		require.Equal(t, leaders[dc].Node, ids[0], "the leader of %s is the node etcd elected", dc)
	}
}

// armed is an alarm a test set and expects to fire.
type armed struct {
	name string
	p    int
	due  time.Time
}

// arm sets the alarm of Probe objects name-0..name-(n-1) at due(k), through
// node via, and returns them.
func arm(t *testing.T, c *nodetest.Cluster, via int, name string, n int, due func(k int) time.Time) []armed {
	t.Helper()
	var out []armed
	pc := c.Node(via).PartitionCount()
	for k := 0; k < n; k++ {
		a := armed{name: fmt.Sprintf("%s-%d", name, k), due: due(k).Truncate(time.Millisecond)}
		a.p = durable.IDFromName("Probe", a.name).Partition(pc)
		_, err := c.Invoke(via, "Probe", a.name, "arm", []byte(strconv.FormatInt(a.due.UnixMilli(), 10)))
		require.NoError(t, err)
		out = append(out, a)
	}
	return out
}

// waitFired waits until every alarm fired and checks that none fired early
// and each ran for the time it was set for; it returns the first run of
// each.
func waitFired(t *testing.T, c *nodetest.Cluster, rec *nodetest.Recorder, alarms []armed) map[string]nodetest.Run {
	t.Helper()
	c.WaitFor(fmt.Sprintf("%d alarms fired", len(alarms)), func() bool {
		fired := rec.Alarms()
		for _, a := range alarms {
			if len(fired[a.name]) == 0 {
				return false
			}
		}
		return true
	})
	out := map[string]nodetest.Run{}
	fired := rec.Alarms()
	for _, a := range alarms {
		for _, r := range fired[a.name] {
			require.False(t, r.Start.Before(a.due), "alarm of %s fired early: at %s, due %s", a.name, r.Start, a.due)
			require.True(t, r.Scheduled.Equal(a.due), "alarm of %s ran for %s, set for %s", a.name, r.Scheduled, a.due)
		}
		out[a.name] = fired[a.name][0]
	}
	return out
}

func TestOneLeaderPerDataCenter(t *testing.T) {
	c := start(t, 5, []string{"a", "b"}, &nodetest.Recorder{})
	la, _ := leaderIndex(t, c, "a")
	lb, _ := leaderIndex(t, c, "b")
	require.Equal(t, "a", c.Nodes[la].Config.DC)
	require.Equal(t, "b", c.Nodes[lb].Config.DC)
	for k := 0; k < 20; k++ {
		checkOneLeaderPerDC(t, c)
		time.Sleep(20 * time.Millisecond)
	}
	// Each leader placed its own partitions on its own nodes.
	dc := dcOf(c)
	for p, a := range c.Assignments() {
		require.Equal(t, a.Home, a.DC, "partition %d", p)
		require.Equal(t, a.DC, dc[a.Node], "partition %d assigned across data centers", p)
	}
}

// TestKilledNodeIsReplacedWithinItsDataCenter: the partitions of a killed
// node go to the other node of its data center, and the alarms that come due
// while it is dead fire there, none early, none lost.
func TestKilledNodeIsReplacedWithinItsDataCenter(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := start(t, 4, []string{"a", "b"}, rec) // a: 0, 2; b: 1, 3
	const victim, heir = 2, 0
	victimID := c.Nodes[victim].Config.ID
	before := c.Assignments()
	now := time.Now()
	alarms := arm(t, c, 1, "kill", 24, func(k int) time.Time { return now.Add(time.Second) })
	gained := func() float64 {
		return metrics.Value(c.Agent(heir).Metrics().OwnershipChanges.WithLabelValues("gained", "claimed"))
	}
	gainedBefore := gained()
	c.Kill(victim)
	killed := time.Now()
	c.WaitSettled()

	after := c.Assignments()
	moved := 0
	for p, a := range before {
		if a.Node != victimID {
			require.Equal(t, a.Node, after[p].Node, "partition %d of a live node moved", p)
			continue
		}
		moved++
		require.Equal(t, c.Nodes[heir].Config.ID, after[p].Node, "partition %d left its data center", p)
		require.Equal(t, "a", after[p].DC)
	}
	require.NotZero(t, moved, "the victim owned partitions")
	// The record follows the assignments' Txn.
	c.WaitFor("the lost node is recorded", func() bool { return len(history(t, c).Lost) > 0 })
	h := history(t, c)
	require.Len(t, h.Lost, 1, "one lost node recorded")
	loss := h.Lost[0]
	require.Equal(t, victimID, loss.Node)
	require.Equal(t, "a", loss.DC)
	require.Equal(t, "a", loss.ByDC)
	require.Equal(t, map[string]int{c.Nodes[heir].Config.ID: moved}, loss.Moved, "where the lost node's partitions went")
	require.WithinRange(t, time.UnixMilli(loss.At), killed.Add(-time.Second), time.Now(), "lost when its lease expired")
	require.Equal(t, float64(moved), gained()-gainedBefore, "the heir's ownership changes count its claims")
	var reassigned float64
	for i := range c.Nodes {
		if a := c.Nodes[i].Agent(); a != nil {
			reassigned += metrics.Value(a.Metrics().Reassignments.WithLabelValues(string(leader.ReasonNodeGone)))
		}
	}
	require.Equal(t, float64(moved), reassigned, "a's leader counts the reassignments")

	runs := waitFired(t, c, rec, alarms)
	onHeir := 0
	var first, last time.Duration
	for _, a := range alarms {
		if before[a.p].Node == victimID {
			r := runs[a.name]
			if ranBeforeDeath(t, r, victimID, c.Nodes[heir].Config.ID, killed) {
				continue
			}
			if d := r.Start.Sub(killed); onHeir == 0 || d < first {
				first = d
			}
			last = max(last, r.Start.Sub(killed))
			onHeir++
		}
	}
	t.Logf("%d partitions and %d overdue alarms moved to %s; first fired %s, last %s after the kill (lease TTL %s)",
		moved, onHeir, c.Nodes[heir].Config.ID, first, last, c.Nodes[0].Config.LeaseTTL)
	rec.CheckNoOverlap(t)
}

// TestNewLeaderCarriesOn: the leader is killed; another node of its data
// center is elected with a higher term, and a node killed afterwards is
// handled by it.
func TestNewLeaderCarriesOn(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := start(t, 3, []string{"dc1"}, rec)
	old, oldTerm := leaderIndex(t, c, "dc1")
	c.WaitFor("the leader published its record", func() bool { return history(t, c).Records["dc1"].Term == oldTerm })
	number := history(t, c).Records["dc1"].Number
	c.Kill(old)
	next, newTerm := leaderIndex(t, c, "dc1")
	require.NotEqual(t, old, next)
	require.Greater(t, newTerm, oldTerm)
	c.WaitSettled()
	c.WaitFor("the new leader published its record", func() bool { return history(t, c).Records["dc1"].Term == newTerm })
	r := history(t, c).Records["dc1"]
	require.Equal(t, number+1, r.Number, "the term number counts elections")
	require.Equal(t, c.Nodes[next].Config.ID, r.Node)

	last := 3 - old - next // the remaining node
	now := time.Now()
	alarms := arm(t, c, next, "carry", 16, func(k int) time.Time { return now.Add(time.Second) })
	before := c.Assignments()
	c.Kill(last)
	killed := time.Now()
	c.WaitSettled()
	for p, a := range c.Assignments() {
		require.Equal(t, c.Nodes[next].Config.ID, a.Node, "partition %d", p)
		if before[p].Node == c.Nodes[last].Config.ID {
			require.Equal(t, newTerm, a.Term, "partition %d reassigned by the new leader", p)
		}
	}
	runs := waitFired(t, c, rec, alarms)
	for _, a := range alarms {
		ranBeforeDeath(t, runs[a.name], c.Nodes[last].Config.ID, c.Nodes[next].Config.ID, killed)
	}
	checkOneLeaderPerDC(t, c)
}

// ranBeforeDeath checks where an alarm of the victim's partitions ran: on
// the victim only if it started before the kill completed (a slow machine
// can take longer to kill a node than the alarm took to come due), otherwise
// on the heir. It reports whether it ran on the victim.
// history reads what the leaders published.
func history(t *testing.T, c *nodetest.Cluster) leader.History {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := leader.ReadHistory(ctx, c.Client, keyspace.New(c.Prefix))
	require.NoError(t, err)
	return h
}

func ranBeforeDeath(t *testing.T, r nodetest.Run, victim, heir string, killed time.Time) bool {
	t.Helper()
	if r.Node == victim {
		require.True(t, r.Start.Before(killed), "alarm of %s ran on the killed node after the kill", r.Object)
		return true
	}
	require.Equal(t, heir, r.Node, "alarm of %s", r.Object)
	require.True(t, r.Start.After(killed))
	return false
}

// TestDataCenterFailureAdoptionAndFailback: every node of b dies; after the
// grace period a adopts b's partitions and runs their alarms; b comes back
// and, after the stabilisation period, its partitions go home, where the
// later alarms fire. No alarm is lost or early across both moves.
func TestDataCenterFailureAdoptionAndFailback(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := start(t, 4, []string{"a", "b"}, rec) // a: 0, 2; b: 1, 3
	dc := dcOf(c)
	cfg := c.Nodes[0].Config
	now := time.Now()
	// Due during the outage (after the grace period) and long after it.
	during := arm(t, c, 0, "during", 24, func(k int) time.Time {
		return now.Add(cfg.LeaseTTL + cfg.DCGrace + time.Duration(k)*20*time.Millisecond)
	})

	c.Kill(1)
	c.Kill(3)
	down := time.Now()
	c.WaitSettled()
	adopted := 0
	for p, a := range c.Assignments() {
		require.Equal(t, "a", a.DC, "partition %d not adopted", p)
		require.Equal(t, "a", dc[a.Node], "partition %d", p)
		if a.Home == "b" {
			adopted++
		}
	}
	require.NotZero(t, adopted)
	t.Logf("b's %d partitions adopted %s after the kill", adopted, time.Since(down))
	c.WaitFor("the lost nodes are recorded", func() bool { return len(history(t, c).Lost) == 2 })
	h := history(t, c)
	downSince, ok := h.Records["a"].DownSince["b"]
	require.True(t, ok, "a's leader does not publish that b is down: %+v", h.Records["a"])
	require.WithinRange(t, time.UnixMilli(downSince), down.Add(-time.Second), down.Add(cfg.LeaseTTL+time.Second))
	lostNodes := map[string]int{}
	for _, l := range h.Lost {
		require.Equal(t, "b", l.DC)
		require.Equal(t, "a", l.ByDC)
		require.Equal(t, downSince, l.At, "an adopted data center's nodes were lost when it went down")
		lostNodes[l.Node] = l.Partitions()
	}
	require.Len(t, lostNodes, 2, "both of b's nodes are recorded lost: %v", h.Lost)
	require.Equal(t, adopted, lostNodes[c.Nodes[1].Config.ID]+lostNodes[c.Nodes[3].Config.ID])
	runs := waitFired(t, c, rec, during)
	for _, a := range during {
		require.Equal(t, "a", dc[runs[a.name].Node], "alarm of %s ran on %s", a.name, runs[a.name].Node)
	}

	// b returns. The stabilisation period runs from when the leader sees
	// b's first node again, which is inside Restart: measure from before it.
	back := time.Now()
	c.Restart(1)
	c.Restart(3)
	later := arm(t, c, 0, "later", 24, func(k int) time.Time {
		return back.Add(cfg.Stabilise + 2*time.Second + time.Duration(k)*20*time.Millisecond)
	})
	c.WaitFor("b's partitions went home", func() bool {
		for _, a := range c.Assignments() {
			if a.DC != a.Home || dc[a.Node] != a.Home {
				return false
			}
		}
		return true
	})
	require.GreaterOrEqual(t, time.Since(back), cfg.Stabilise, "went home before the stabilisation period")
	_, up := history(t, c).Records["a"].UpSince["b"]
	require.True(t, up, "a's leader does not publish that b is up")
	c.WaitSettled()
	runs = waitFired(t, c, rec, later)
	home := c.Assignments()
	for _, a := range later {
		require.Equal(t, home[a.p].Home, dc[runs[a.name].Node], "alarm of %s ran away from home", a.name)
	}
	rec.CheckNoOverlap(t)
	checkOneLeaderPerDC(t, c)
}

// TestPausedLeaderDoesNotLeadAgain: the leader is frozen past its session
// TTL; another node is elected and takes over. Resumed, the old leader stops
// leading, and every assignment written from then on carries the new term.
func TestPausedLeaderDoesNotLeadAgain(t *testing.T) {
	c := start(t, 3, []string{"dc1"}, &nodetest.Recorder{})
	old, oldTerm := leaderIndex(t, c, "dc1")
	c.Pause(old)
	var next int
	var newTerm int64
	c.WaitFor("a new leader", func() bool {
		l := c.Leaders()["dc1"]
		if l.Term == 0 || l.Term == oldTerm {
			return false
		}
		for i, m := range c.Nodes {
			if m.Config.ID == l.Node && i != old && c.Agent(i).Leader.Term() == l.Term {
				next, newTerm = i, l.Term
				return true
			}
		}
		return false
	})
	// Its node lease (renewed on its own timer) expires too, so the node
	// must register again once resumed and be given partitions anew.
	keys := keyspace.New(c.Prefix)
	c.WaitFor("the paused node's registration expired and the new leader moved its partitions", func() bool {
		resp, err := c.Client.Get(context.Background(), keys.Node(c.Nodes[old].Config.ID))
		require.NoError(t, err)
		if len(resp.Kvs) > 0 {
			return false
		}
		for _, a := range c.Assignments() {
			if a.Node == c.Nodes[old].Config.ID {
				return false
			}
		}
		return true
	})
	resp, err := c.Client.Get(context.Background(), "rev-probe")
	require.NoError(t, err)
	resumedAt := resp.Header.Revision
	c.Resume(old)
	c.WaitFor("the old leader steps down", func() bool { return c.Agent(old).Leader.Term() == 0 })
	c.WaitSettled() // the paused node registers again and gets partitions back

	// Every assignment write since the resume came from the new leader.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now, err := c.Client.Get(ctx, "rev-probe")
	require.NoError(t, err)
	// Every revision since the resume, read back: the assignments written
	// exactly at that revision.
	writes := 0
	for rev := resumedAt + 1; rev <= now.Header.Revision; rev++ {
		got, err := c.Client.Get(ctx, keys.AssignPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev),
			clientv3.WithMinModRev(rev), clientv3.WithMaxModRev(rev))
		require.NoError(t, err)
		for _, kv := range got.Kvs {
			a, err := placement.ParseAssignment(kv.Value, kv.ModRevision)
			require.NoError(t, err)
			require.Equal(t, newTerm, a.Term, "assignment of %s written under term %d by %s", kv.Key, a.Term, a.By)
			require.Equal(t, c.Nodes[next].Config.ID, a.By)
			writes++
		}
	}
	require.Positive(t, writes, "the resumed node got partitions back, so assignments were written")
	t.Logf("%d assignment writes after the resume, all by %s (term %d)", writes, c.Nodes[next].Config.ID, newTerm)
	require.NotEmpty(t, c.Agent(old).Member.Owned(), "the resumed node was given partitions again")
	checkOneLeaderPerDC(t, c)
}

// TestEtcdMemberLoss runs the cluster on a 3-member etcd and stops the raft
// leader member: leadership, calls and alarms carry on; the member restarts
// from its data and rejoins.
func TestEtcdMemberLoss(t *testing.T) {
	members, endpoints := embedetcd.TestCluster(t, 3)
	rec := &nodetest.Recorder{}
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 3, DCs: []string{"a", "b"}, Endpoints: endpoints,
		Register: func(reg *node.Registry) error { return nodetest.RegisterProbe(reg, rec) },
	})
	now := time.Now()
	alarms := arm(t, c, 0, "member", 24, func(k int) time.Time { return now.Add(time.Second + time.Duration(k)*100*time.Millisecond) })

	// Stop the member raft currently follows.
	victim := -1
	for i, ep := range endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := c.Client.Status(ctx, ep)
		cancel()
		require.NoError(t, err)
		if st.Leader == st.Header.MemberId {
			victim = i
		}
	}
	require.NotEqual(t, -1, victim, "no raft leader")
	require.NoError(t, members[victim].Server.Close())
	lost := time.Now()

	// While etcd elects a new raft leader, nodes may briefly be unable to
	// confirm their leases and refuse calls as unavailable (safe to retry);
	// any other error fails the test.
	for k := 0; k < 10; k++ {
		c.WaitFor("a call with one etcd member down", func() bool {
			_, err := c.Invoke(k%3, "Probe", fmt.Sprintf("visit-%d", k), "visit", nil)
			if errors.Is(err, durable.ErrUnavailable) {
				return false
			}
			require.NoError(t, err, "a call with one etcd member down")
			return true
		})
	}
	waitFired(t, c, rec, alarms)
	c.WaitSettled()
	checkOneLeaderPerDC(t, c)
	leaderIndex(t, c, "a")
	leaderIndex(t, c, "b")
	t.Logf("member %s stopped; calls, alarms and leadership carried on (%s)", members[victim].Config.Name, time.Since(lost))

	srv, err := embedetcd.Start(context.Background(), members[victim].Config)
	require.NoError(t, err, "restart the member from its data")
	members[victim].Server = srv
	c.WaitFor("the restarted member serves", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Client.Status(ctx, endpoints[victim])
		return err == nil
	})
	_, err = c.Invoke(1, "Probe", "after-rejoin", "visit", nil)
	require.NoError(t, err)
	rec.CheckNoOverlap(t)
}

// plain is a class with no state, served by every node of
// TestNodeWithoutARequiredClassIsKeptOut.
type plain struct{}

func (plain) Invoke(context.Context, string, []byte) ([]byte, error) { return []byte("ok"), nil }

// TestNodeWithoutARequiredClassIsKeptOut: the cluster requires Plain and
// Probe; a node that serves only Plain (another program's, like a stock
// agent joining a user's cluster) owns no partition, so every Probe call
// through it succeeds (forwarded) and Probe alarms fire on the others;
// status says why it is kept out.
func TestNodeWithoutARequiredClassIsKeptOut(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 3, Etcd: sharedEtcd,
		RegisterNode: func(i int, reg *node.Registry) error {
			if err := node.RegisterClass(reg, "Plain", func(context.Context, durable.State) (plain, error) { return plain{}, nil }); err != nil {
				return err
			}
			if i == 2 {
				return nil
			}
			return nodetest.RegisterProbe(reg, rec)
		},
	})
	// What an established cluster requires (the leader started from its
	// own classes; a leader on node 2 would have started from Plain).
	_, err := c.Client.Put(context.Background(), c.Prefix+"classes", "Plain,Probe")
	require.NoError(t, err)
	c.WaitFor("node 2 owns nothing", func() bool { return len(c.Agent(2).Member.Owned()) == 0 })
	c.WaitSettled()
	for p, a := range c.Assignments() {
		require.NotEqual(t, c.Nodes[2].Config.ID, a.Node, "partition %d assigned to the node without Probe", p)
	}

	now := time.Now()
	alarms := arm(t, c, 2, "kept", 16, func(k int) time.Time { return now.Add(time.Second) })
	runs := waitFired(t, c, rec, alarms)
	for name, r := range runs {
		require.NotEqual(t, c.Nodes[2].Config.ID, r.Node, "alarm of %s ran on the node without Probe", name)
	}
	out, err := c.Invoke(2, "Plain", "p", "any", nil)
	require.NoError(t, err)
	require.Equal(t, "ok", string(out))

	st, err := c.Agent(0).Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"Plain", "Probe"}, st.GetRequiredClasses())
	for _, ns := range st.GetNodes() {
		if ns.GetId() == c.Nodes[2].Config.ID {
			require.Equal(t, []string{"Probe"}, ns.GetMissingClasses())
			require.Equal(t, []string{"Plain"}, ns.GetClasses())
		} else {
			require.Empty(t, ns.GetMissingClasses())
		}
	}
}
