package leader

import (
	"slices"
	"sort"
	"time"

	"github.com/durable-run/durable/placement"
)

// Assignment is the desired placement of one partition (placement owns
// its record).
type Assignment = placement.Assignment

// View is what a leader knows when it plans: the cluster as read from etcd
// in one revision, plus its own memory of how long each data center has been
// up or down.
type View struct {
	placement.Snapshot
	DC        string // the leader's data center
	Now       time.Time
	DownSince map[string]time.Time // data centers without a live, non-draining node, since when
	UpSince   map[string]time.Time // data centers with one, since when
	Grace     time.Duration        // a data center down this long is adopted
	Stabilise time.Duration        // an adopted partition goes home after its home is up this long
	MaxMoves  int                  // balancing moves in flight at once per data center
}

// Change is one assignment the leader writes.
type Change struct {
	P    int
	Prev int64  // mod revision compared, 0 = absent
	From string // the node the partition was assigned to, "" for none
	Next Assignment
	Why  Reason
}

// Reason says why a change is made; it labels the leader's logs and
// metrics.
type Reason string

// The reasons of a change.
const (
	ReasonNew          Reason = "new"           // a partition without assignment, homed here
	ReasonNewHomeDown  Reason = "new_home_down" // one homed in a data center down for the grace period
	ReasonHome         Reason = "home"          // an adopted partition goes home
	ReasonNodeGone     Reason = "node_gone"     // its node's lease expired, or it drains
	ReasonAdopted      Reason = "adopted"       // its data center is down for the grace period
	ReasonRebalance    Reason = "rebalance"     // moved from the most to the least loaded node
	ReasonLacksClasses Reason = "lacks_classes" // its node does not serve every class the cluster requires
)

// RequiredClasses returns the classes a node must serve to be assigned
// partitions, given the snapshot and this leader's own registration
// (self). It never shrinks: once a class is required, a node without it
// gets no partition. It grows to what every live, non-draining node
// serves, once that covers what is required: in a rolling deploy that adds
// a class, old and new nodes share the partitions, and the class becomes
// required when the last old node has left; a node that joins without a
// required class (another program's) is kept out. Unset, it starts from
// the leader's own classes. Nodes that do not say what they serve (older
// versions) are left out of the reckoning. nil: nothing to require yet.
func RequiredClasses(v placement.Snapshot, self string) []string {
	cur := v.Classes
	if cur == nil {
		cur = v.Nodes[self].ClassList()
		if cur == nil {
			return nil
		}
	}
	var common []string
	first := true
	for _, ni := range v.Nodes {
		if ni.Draining || ni.Classes == "" {
			continue
		}
		if first {
			common, first = ni.ClassList(), false
			continue
		}
		have := ni.ClassList()
		common = slices.DeleteFunc(common, func(c string) bool { return !slices.Contains(have, c) })
	}
	covers := !first && !slices.ContainsFunc(cur, func(c string) bool { return !slices.Contains(common, c) })
	if covers {
		slices.Sort(common)
		return common
	}
	return cur
}

// Plan returns the assignments the leader of v.DC writes, in this order of
// duty:
//   - partitions without an assignment whose home is v.DC (or whose home has
//     been down for Grace) are assigned to the least-loaded local node;
//   - a managed partition whose node is gone or draining is reassigned to the
//     least-loaded local node at once;
//   - a managed partition away from home goes back (DC set to its home; the
//     home's leader then picks the node) once its home has been up for
//     Stabilise;
//   - partitions managed by a data center down for Grace are adopted;
//   - finally, with at most MaxMoves moves in flight, one partition at a time
//     moves from the most to the least loaded local node until loads differ
//     by at most one (sticky: nothing moves when balanced).
//
// With no live, non-draining local node it writes nothing: there is nowhere
// to put a partition, and another data center adopts after Grace.
func Plan(v View) []Change {
	var local []string
	for id, ni := range v.Nodes {
		if ni.DC == v.DC && v.Eligible(id) {
			local = append(local, id)
		}
	}
	if len(local) == 0 {
		return nil
	}
	sort.Strings(local)
	isLocal := make(map[string]bool, len(local))
	load := make(map[string]int, len(local))
	for _, id := range local {
		isLocal[id] = true
		load[id] = 0
	}
	cur := make(map[int]Assignment, len(v.Assign))
	for p, a := range v.Assign {
		cur[p] = a
		if a.DC == v.DC && isLocal[a.Node] {
			load[a.Node]++
		}
	}
	// pick returns the least-loaded local node (ties by id) and counts p
	// on it.
	pick := func() string {
		best := local[0]
		for _, id := range local[1:] {
			if load[id] < load[best] {
				best = id
			}
		}
		load[best]++
		return best
	}
	since := func(m map[string]time.Time, dc string, d time.Duration) bool {
		t, ok := m[dc]
		return ok && v.Now.Sub(t) >= d
	}
	at := v.Now.UnixMilli()
	var out []Change
	set := func(p int, next Assignment, why Reason) {
		next.At = at
		prev := cur[p]
		out = append(out, Change{P: p, Prev: prev.Rev, From: prev.Node, Next: next, Why: why})
		next.Rev = -1 // written in this plan: not moved again by balancing
		cur[p] = next
	}

	for p := 0; p < v.Meta.Partitions; p++ {
		a, ok := cur[p]
		switch {
		case !ok:
			home := v.Meta.Home(p)
			if home == v.DC {
				set(p, Assignment{Home: home, DC: v.DC, Node: pick()}, ReasonNew)
			} else if since(v.DownSince, home, v.Grace) {
				set(p, Assignment{Home: home, DC: v.DC, Node: pick()}, ReasonNewHomeDown)
			}
		case a.DC == v.DC && a.Home != v.DC && since(v.UpSince, a.Home, v.Stabilise):
			if isLocal[a.Node] {
				load[a.Node]--
			}
			set(p, Assignment{Home: a.Home, DC: a.Home, Node: a.Node}, ReasonHome)
		case a.DC == v.DC && !isLocal[a.Node]:
			why := ReasonNodeGone
			if ni, ok := v.Nodes[a.Node]; ok && !ni.Draining {
				why = ReasonLacksClasses
			}
			set(p, Assignment{Home: a.Home, DC: v.DC, Node: pick()}, why)
		case a.DC != v.DC && since(v.DownSince, a.DC, v.Grace):
			set(p, Assignment{Home: a.Home, DC: v.DC, Node: pick()}, ReasonAdopted)
		}
	}
	return append(out, balance(v, cur, local, isLocal, load)...)
}

// balance moves one partition at a time from the most to the least loaded
// local node, keeping at most v.MaxMoves moves in flight. Only settled
// partitions move (owned by their assigned node), so a move never chases
// another.
func balance(v View, cur map[int]Assignment, local []string, isLocal map[string]bool, load map[string]int) []Change {
	inFlight := 0
	byNode := map[string][]int{}
	for p := 0; p < v.Meta.Partitions; p++ {
		a, ok := cur[p]
		if !ok || a.DC != v.DC || !isLocal[a.Node] {
			continue
		}
		if o, owned := v.Owners[p]; !owned || o.Node != a.Node || a.Rev < 0 {
			inFlight++
			continue
		}
		byNode[a.Node] = append(byNode[a.Node], p)
	}
	var out []Change
	for budget := v.MaxMoves - inFlight; budget > 0; budget-- {
		hi, lo := local[0], local[0]
		for _, id := range local {
			if load[id] > load[hi] || (load[id] == load[hi] && id > hi) {
				hi = id
			}
			if load[id] < load[lo] {
				lo = id
			}
		}
		if load[hi]-load[lo] <= 1 || len(byNode[hi]) == 0 {
			break
		}
		ps := byNode[hi]
		p := ps[len(ps)-1]
		byNode[hi] = ps[:len(ps)-1]
		a := cur[p]
		load[hi]--
		load[lo]++
		out = append(out, Change{P: p, Prev: a.Rev, From: a.Node, Next: Assignment{Home: a.Home, DC: a.DC, Node: lo, At: v.Now.UnixMilli()}, Why: ReasonRebalance})
	}
	return out
}
