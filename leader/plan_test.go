package leader

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/placement"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// cluster builds a View for the leader of dc over nodes given as "id@dc"
// (a trailing "!" marks a draining node), with partitions homed over homes.
func cluster(dc string, partitions int, homes []string, nodes ...string) View {
	v := View{
		DC: dc,
		Snapshot: placement.Snapshot{
			Meta:  placement.Meta{Partitions: partitions, HomeDCs: homes},
			Nodes: map[string]placement.NodeInfo{}, Assign: map[int]Assignment{}, Owners: map[int]placement.Owner{},
		},
		Now: t0, DownSince: map[string]time.Time{}, UpSince: map[string]time.Time{},
		Grace: 10 * time.Second, Stabilise: 10 * time.Second, MaxMoves: 2,
	}
	for _, n := range nodes {
		var id, ndc string
		draining := n[len(n)-1] == '!'
		if draining {
			n = n[:len(n)-1]
		}
		fmt.Sscanf(replaceAt(n), "%s %s", &id, &ndc)
		v.Nodes[id] = placement.NodeInfo{ID: id, DC: ndc, Draining: draining}
	}
	return v
}

func replaceAt(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == '@' {
			b[i] = ' '
		}
	}
	return string(b)
}

// apply writes changes into v as etcd would (new mod revisions) and makes
// every assigned node the owner, as the nodes would once they claimed.
func apply(v *View, changes []Change) {
	for i, c := range changes {
		next := c.Next
		next.Rev = int64(1000 + i)
		v.Assign[c.P] = next
		v.Owners[c.P] = placement.Owner{Node: next.Node, Token: next.Rev}
	}
}

func loads(v View, dc string) map[string]int {
	out := map[string]int{}
	for id, ni := range v.Nodes {
		if ni.DC == dc && !ni.Draining {
			out[id] = 0
		}
	}
	for _, a := range v.Assign {
		if a.DC == dc {
			out[a.Node]++
		}
	}
	return out
}

// settle plans and applies until the plan is empty, returning the rounds.
func settle(t *testing.T, v *View) int {
	t.Helper()
	for round := 1; round <= 1000; round++ {
		cs := Plan(*v)
		if len(cs) == 0 {
			return round
		}
		apply(v, cs)
	}
	t.Fatal("the plan never settled")
	return 0
}

func TestNewPartitionsGoToTheirHomeDCBalanced(t *testing.T) {
	homes := []string{"a", "b"}
	va := cluster("a", 16, homes, "a1@a", "a2@a", "a3@a", "b1@b")
	cs := Plan(va)
	require.Len(t, cs, 8, "dc a's leader assigns the 8 partitions homed in a, and only those")
	for _, c := range cs {
		require.Equal(t, "a", va.Meta.Home(c.P))
		require.Equal(t, Assignment{Home: "a", DC: "a", Node: c.Next.Node, At: t0.UnixMilli()}, c.Next)
		require.EqualValues(t, 0, c.Prev, "created only if absent")
	}
	apply(&va, cs)
	l := loads(va, "a")
	require.Equal(t, map[string]int{"a1": 3, "a2": 3, "a3": 2}, l)
	require.Empty(t, Plan(va), "a settled assignment is left alone")
}

func TestDeadOrDrainingNodeIsReplacedLocallyAtOnce(t *testing.T) {
	homes := []string{"a", "b"}
	v := cluster("a", 16, homes, "a1@a", "a2@a", "a3@a", "b1@b")
	settle(t, &v)
	var ofA2 []int
	for p, a := range v.Assign {
		if a.Node == "a2" {
			ofA2 = append(ofA2, p)
		}
	}
	require.NotEmpty(t, ofA2)

	for _, how := range []string{"dead", "draining"} {
		t.Run(how, func(t *testing.T) {
			w := v
			w.Nodes = map[string]placement.NodeInfo{}
			for id, ni := range v.Nodes {
				w.Nodes[id] = ni
			}
			if how == "dead" {
				delete(w.Nodes, "a2")
			} else {
				w.Nodes["a2"] = placement.NodeInfo{ID: "a2", DC: "a", Draining: true}
			}
			cs := Plan(w)
			require.Len(t, cs, len(ofA2), "exactly a2's partitions move, all in one round")
			for _, c := range cs {
				require.Contains(t, ofA2, c.P)
				require.Contains(t, []string{"a1", "a3"}, c.Next.Node, "within the data center")
				require.Equal(t, "a", c.Next.DC)
				require.Equal(t, v.Assign[c.P].Rev, c.Prev, "compares the assignment it replaces")
				require.Equal(t, "a2", c.From)
			}
			losses := Losses(w, cs, "a1")
			if how == "draining" {
				require.Empty(t, losses, "moving off a draining node is no loss")
				return
			}
			moved := map[string]int{}
			for _, c := range cs {
				moved[c.Next.Node]++
			}
			require.Equal(t, []Loss{{Node: "a2", DC: "a", At: t0.UnixMilli(), By: "a1", ByDC: "a", Moved: moved}}, losses)
		})
	}
}

// TestLossesOfAnAdoptedDataCenterDateFromItsFall: the nodes of a data
// center down for the grace period are lost since it went down, not since
// the adoption; rebalancing a live node's partitions is no loss.
func TestLossesOfAnAdoptedDataCenterDateFromItsFall(t *testing.T) {
	homes := []string{"a", "b"}
	v := cluster("a", 8, homes, "a1@a", "a2@a", "b1@b", "b2@b")
	vb := v
	vb.DC = "b"
	apply(&v, append(Plan(v), Plan(vb)...))
	w := v
	w.Nodes = map[string]placement.NodeInfo{"a1": v.Nodes["a1"], "a2": v.Nodes["a2"]}
	fell := t0.Add(-time.Minute)
	w.DownSince = map[string]time.Time{"b": fell}
	cs := Plan(w)
	losses := Losses(w, cs, "a2")
	require.Len(t, losses, 2)
	total := 0
	for i, l := range losses {
		require.Equal(t, []string{"b1", "b2"}[i], l.Node)
		require.Equal(t, Loss{Node: l.Node, DC: "b", At: fell.UnixMilli(), By: "a2", ByDC: "a", Moved: l.Moved}, l)
		total += l.Partitions()
	}
	require.Equal(t, 4, total, "b's four partitions")
	require.Empty(t, Losses(v, []Change{{P: 0, From: "a1", Next: Assignment{Node: "a2"}, Why: ReasonRebalance}}, "a1"))
}

func TestNoLocalNodeWritesNothing(t *testing.T) {
	v := cluster("a", 8, []string{"a"}, "a1@a!", "b1@b")
	require.Empty(t, Plan(v))
}

func TestAdoptionWaitsForGraceThenFailbackForStabilise(t *testing.T) {
	homes := []string{"a", "b"}
	v := cluster("a", 8, homes, "a1@a", "a2@a", "b1@b")
	vb := v
	vb.DC = "b"
	apply(&v, append(Plan(v), Plan(vb)...))
	require.Len(t, v.Assign, 8)

	// b goes dark.
	delete(v.Nodes, "b1")
	v.DownSince["b"] = t0
	v.Now = t0.Add(v.Grace - time.Millisecond)
	require.Empty(t, Plan(v), "nothing is adopted before the grace period")
	v.Now = t0.Add(v.Grace)
	cs := Plan(v)
	require.Len(t, cs, 4, "every partition of b is adopted")
	for _, c := range cs {
		require.Equal(t, Assignment{Home: "b", DC: "a", Node: c.Next.Node, At: v.Now.UnixMilli()}, c.Next)
		require.Contains(t, []string{"a1", "a2"}, c.Next.Node)
	}
	apply(&v, cs)
	require.Equal(t, map[string]int{"a1": 4, "a2": 4}, loads(v, "a"), "adopted partitions are spread too")

	// b is back; a hands back only after the stabilisation period.
	v.Nodes["b2"] = placement.NodeInfo{ID: "b2", DC: "b"}
	delete(v.DownSince, "b")
	v.UpSince["b"] = v.Now
	back := v.Now
	v.Now = back.Add(v.Stabilise - time.Millisecond)
	require.Empty(t, Plan(v), "nothing goes home before the stabilisation period")
	v.Now = back.Add(v.Stabilise)
	cs = Plan(v)
	require.Len(t, cs, 4)
	for _, c := range cs {
		require.Equal(t, "b", c.Next.DC, "managed by home again")
		require.Equal(t, v.Assign[c.P].Node, c.Next.Node, "the node stays until b's leader picks one")
	}
	apply(&v, cs)
	vb = v
	vb.DC = "b"
	cs = Plan(vb)
	require.Len(t, cs, 4, "b's leader places its partitions on its own node")
	for _, c := range cs {
		require.Equal(t, "b2", c.Next.Node)
	}
}

func TestDownHomeDCPartitionsAreCreatedByOthers(t *testing.T) {
	v := cluster("a", 8, []string{"a", "b"}, "a1@a")
	v.DownSince["b"] = t0
	cs := Plan(v)
	require.Len(t, cs, 4, "b never came up: only a's own, until the grace period")
	v.Now = t0.Add(v.Grace)
	cs = Plan(v)
	require.Len(t, cs, 8)
}

func TestRebalanceIsGradualAndSticky(t *testing.T) {
	v := cluster("a", 30, []string{"a"}, "a1@a", "a2@a")
	settle(t, &v)
	require.Equal(t, map[string]int{"a1": 15, "a2": 15}, loads(v, "a"))

	// A node joins: at most MaxMoves moves per round while earlier ones
	// are in flight, until balanced, and only partitions that must move.
	v.Nodes["a3"] = placement.NodeInfo{ID: "a3", DC: "a"}
	before := map[int]string{}
	for p, a := range v.Assign {
		before[p] = a.Node
	}
	cs := Plan(v)
	require.Len(t, cs, 2)
	for _, c := range cs {
		require.Equal(t, "a3", c.Next.Node)
	}
	// In flight (not yet owned by a3): nothing more moves.
	for _, c := range cs {
		next := c.Next
		next.Rev = 2000 + int64(c.P)
		v.Assign[c.P] = next
	}
	require.Empty(t, Plan(v), "moves wait while MaxMoves are in flight")
	for _, c := range cs {
		v.Owners[c.P] = placement.Owner{Node: "a3", Token: 3000}
	}
	rounds := settle(t, &v)
	require.Equal(t, map[string]int{"a1": 10, "a2": 10, "a3": 10}, loads(v, "a"))
	moved := 0
	for p, a := range v.Assign {
		if before[p] != a.Node {
			moved++
			require.Equal(t, "a3", a.Node, "partitions only move to the new node")
		}
	}
	require.Equal(t, 10, moved)
	require.Greater(t, rounds, 4, "gradual")
}

// TestRequiredClassesNeverShrinkAndGrowOnceEveryNodeServesThem: unset, the
// requirement starts from the leader's own classes; a node of another
// program (a class set that does not cover it) changes nothing; in a
// rolling deploy that adds a class, the class is required once every live,
// non-draining node serves it; nodes that did not say are left out; it
// never shrinks.
func TestRequiredClassesNeverShrinkAndGrowOnceEveryNodeServesThem(t *testing.T) {
	snap := func(required []string, nodes ...placement.NodeInfo) placement.Snapshot {
		s := placement.Snapshot{Nodes: map[string]placement.NodeInfo{}, Classes: required}
		for _, n := range nodes {
			s.Nodes[n.ID] = n
		}
		return s
	}
	n := func(id, classes string) placement.NodeInfo { return placement.NodeInfo{ID: id, Classes: classes} }
	for _, tc := range []struct {
		name string
		snap placement.Snapshot
		want []string
	}{
		{"unset: the leader's own", snap(nil, n("l", "A,B"), n("x", "A")), []string{"A", "B"}},
		{"unset, the leader did not say", snap(nil, n("l", ""), n("x", "A")), nil},
		{"another program joins", snap([]string{"A", "B"}, n("l", "A,B"), n("x", "C,D")), []string{"A", "B"}},
		{"rolling deploy, old nodes left", snap([]string{"A"}, n("l", "A,B"), n("x", "A")), []string{"A"}},
		{"rolling deploy done", snap([]string{"A"}, n("l", "A,B"), n("x", "A,B")), []string{"A", "B"}},
		{"draining old node ignored", snap([]string{"A"}, n("l", "A,B"), placement.NodeInfo{ID: "x", Classes: "A", Draining: true}), []string{"A", "B"}},
		{"older version ignored", snap([]string{"A"}, n("l", "A,B"), n("x", "")), []string{"A", "B"}},
		{"never shrinks", snap([]string{"A", "B"}, n("l", "A"), n("x", "A")), []string{"A", "B"}},
		{"disjoint nodes never empty it", snap([]string{"A"}, n("l", "A"), n("x", "B")), []string{"A"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, RequiredClasses(tc.snap, "l"))
		})
	}
}

// TestNodeLackingARequiredClassGetsNoPartition: such a node is left out
// like a draining one, its partitions move (lacks_classes), a node that
// did not say what it serves (an older version) still counts.
func TestNodeLackingARequiredClassGetsNoPartition(t *testing.T) {
	v := cluster("a", 12, []string{"a"}, "a1@a", "a2@a", "a3@a")
	settle(t, &v)
	require.Equal(t, map[string]int{"a1": 4, "a2": 4, "a3": 4}, loads(v, "a"))
	v.Classes = []string{"Chat"}
	v.Nodes["a1"] = placement.NodeInfo{ID: "a1", DC: "a", Classes: "Chat,Counter"}
	v.Nodes["a2"] = placement.NodeInfo{ID: "a2", DC: "a", Classes: "Counter"}
	cs := Plan(v)
	require.Len(t, cs, 4, "a2's partitions move, all in one round")
	for _, c := range cs {
		require.Equal(t, "a2", c.From)
		require.Equal(t, ReasonLacksClasses, c.Why)
		require.NotEqual(t, "a2", c.Next.Node)
	}
	require.Empty(t, Losses(v, cs, "a1"), "a registered node kept out is no loss")
	settle(t, &v)
	require.Equal(t, map[string]int{"a1": 6, "a2": 0, "a3": 6}, loads(v, "a"), "a3 did not say what it serves: it counts")
}
