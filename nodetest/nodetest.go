// Package nodetest starts durable clusters in-process for tests: an embedded
// etcd (or a shared one), nodes serving gRPC on random loopback ports, faults
// (Kill, Stop, Pause/Resume, Restart) and deadline-bounded wait helpers. It is
// importable by any package's tests, including those of users who embed the
// runtime with their own classes.
//
// Every resource is released by t.Cleanup.
package nodetest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/leader"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/placement"
)

// Options configures a cluster.
type Options struct {
	// Nodes is the number of nodes (default 1).
	Nodes int
	// DCs are the data centers; node i is in DCs[i % len(DCs)] (default
	// "dc1").
	DCs []string
	// Etcd is a server to share between tests; nil starts one for the test
	// unless Endpoints is set.
	Etcd *embedetcd.Server
	// Endpoints, when set, are the client endpoints of an etcd cluster the
	// test runs itself (e.g. embedetcd.TestCluster); Etcd is then nil.
	Endpoints []string
	// Register adds the classes under test to the registry shared by all
	// nodes.
	Register func(reg *node.Registry) error
	// RegisterNode, when set, gives each node a registry of its own: the
	// classes of Register, then those RegisterNode adds for node i (mixed
	// class sets).
	RegisterNode func(i int, reg *node.Registry) error
	// Config adjusts each node's configuration after the test defaults (8
	// partitions, 2 s lease TTL, 2 s data-center grace and stabilisation,
	// partitions homed over DCs, a unique prefix) are set.
	Config func(cfg *node.Config)
	// Clock, when set, is every node's clock (and Cluster.Clock).
	Clock *clockwork.FakeClock
	// Agent adjusts each node's agent configuration (e.g. its metrics
	// listener) before every start.
	Agent func(cfg *agent.Config)
}

// Cluster is a set of in-process nodes on one etcd.
type Cluster struct {
	t      testing.TB
	Etcd   *embedetcd.Server
	Client *clientv3.Client
	// Clock is the nodes' fake clock when Options.Clock was set.
	Clock  *clockwork.FakeClock
	Prefix string
	reg    *node.Registry
	agent  func(cfg *agent.Config)
	// endpoints are Options.Endpoints, if given.
	endpoints []string
	Nodes     []*Member
}

// Member is one node slot of the cluster; it keeps its configuration across
// restarts.
type Member struct {
	Config node.Config
	// Registry is the node's own registry (Options.RegisterNode), nil for
	// the cluster's.
	Registry *node.Registry
	// Listen is the member's address; the first start picks a free port
	// and restarts reuse it, as a restarted process would.
	Listen string
	mu     sync.Mutex
	agent  *agent.Agent
	cancel context.CancelCauseFunc
}

// Agent returns the running agent, or nil when the member is down.
func (m *Member) Agent() *agent.Agent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.agent
}

// Adopt makes a, an agent the test started itself with the member's
// configuration, the member's running agent; cancel stops it.
func (m *Member) Adopt(a *agent.Agent, cancel context.CancelCauseFunc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.agent, m.cancel, m.Listen = a, cancel, a.Addr()
}

// Forget marks the member down without stopping its agent: for a test
// whose agent stopped on its own, with an error the test expects.
func (m *Member) Forget() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.agent, m.cancel = nil, nil
}

// Start starts a cluster and waits until every partition is owned.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes <= 0 {
		opts.Nodes = 1
	}
	if len(opts.DCs) == 0 {
		opts.DCs = []string{"dc1"}
	}
	c := &Cluster{t: t, Etcd: opts.Etcd, Clock: opts.Clock, Prefix: embedetcd.UniquePrefix(t), reg: node.NewRegistry(), agent: opts.Agent}
	if len(opts.Endpoints) > 0 {
		c.endpoints = opts.Endpoints
		cli, err := clientv3.New(clientv3.Config{Endpoints: opts.Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatalf("nodetest: dial etcd: %v", err)
		}
		t.Cleanup(func() { _ = cli.Close() })
		c.Client = cli
	} else {
		if c.Etcd == nil {
			c.Etcd = embedetcd.Test(t)
		}
		c.Client = embedetcd.TestClient(t, c.Etcd)
	}
	if opts.Register != nil {
		if err := opts.Register(c.reg); err != nil {
			t.Fatalf("nodetest: register classes: %v", err)
		}
	}
	var homes []string
	for _, dc := range opts.DCs {
		if !slices.Contains(homes, dc) {
			homes = append(homes, dc)
		}
	}
	for i := 0; i < opts.Nodes; i++ {
		cfg := node.DefaultConfig()
		cfg.HomeDCs = homes
		cfg.DCGrace, cfg.Stabilise = 2*time.Second, 2*time.Second
		cfg.ID = fmt.Sprintf("node-%d", i)
		cfg.DC = opts.DCs[i%len(opts.DCs)]
		cfg.Prefix = c.Prefix
		cfg.Partitions = 8
		cfg.LeaseTTL = 2 * time.Second
		if opts.Clock != nil {
			cfg.Clock = opts.Clock
		}
		if os.Getenv("DURABLE_TEST_LOG") != "" {
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else {
			cfg.Logger = slog.New(slog.DiscardHandler)
		}
		if opts.Config != nil {
			opts.Config(&cfg)
		}
		m := &Member{Config: cfg, Listen: "127.0.0.1:0"}
		if opts.RegisterNode != nil {
			m.Registry = node.NewRegistry()
			if opts.Register != nil {
				if err := opts.Register(m.Registry); err != nil {
					t.Fatalf("nodetest: register classes: %v", err)
				}
			}
			if err := opts.RegisterNode(i, m.Registry); err != nil {
				t.Fatalf("nodetest: register node %d's classes: %v", i, err)
			}
		}
		c.Nodes = append(c.Nodes, m)
	}
	t.Cleanup(c.StopAll)
	for i := range c.Nodes {
		c.Restart(i)
	}
	c.WaitSettled()
	return c
}

// EtcdEndpoints returns the etcd endpoints the nodes use.
func (c *Cluster) EtcdEndpoints() []string {
	if c.endpoints != nil {
		return c.endpoints
	}
	return c.Etcd.Endpoints()
}

// Registry returns the registry every node uses.
func (c *Cluster) Registry() *node.Registry { return c.reg }

// Agent returns node i's agent, which must be running.
func (c *Cluster) Agent(i int) *agent.Agent {
	a := c.Nodes[i].Agent()
	if a == nil {
		c.t.Fatalf("nodetest: node %d is not running", i)
	}
	return a
}

// Node returns node i's object runtime; the node must be running.
func (c *Cluster) Node(i int) *node.Node { return c.Agent(i).Node }

// Addr returns node i's gRPC address.
func (c *Cluster) Addr(i int) string {
	a := c.Nodes[i].Agent()
	if a == nil {
		c.t.Fatalf("nodetest: node %d is not running", i)
	}
	return a.Addr()
}

// Running reports whether node i is up.
func (c *Cluster) Running(i int) bool { return c.Nodes[i].Agent() != nil }

// Restart starts node i (after Kill or Stop; it must be down). The node
// keeps its id, so after a Kill it waits out its old registration.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.Nodes[i]
	if m.Agent() != nil {
		c.t.Fatalf("nodetest: node %d is already running", i)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cfg := agent.Config{Node: m.Config, Etcd: c.EtcdEndpoints(), Listen: m.Listen}
	if c.agent != nil {
		c.agent(&cfg)
	}
	reg := c.reg
	if m.Registry != nil {
		reg = m.Registry
	}
	a, err := agent.Start(ctx, cfg, reg)
	if err != nil {
		cancel(nil)
		c.t.Fatalf("nodetest: start node %d: %v", i, err)
	}
	m.mu.Lock()
	m.agent, m.cancel, m.Listen = a, cancel, a.Addr()
	m.mu.Unlock()
	c.WaitFor(fmt.Sprintf("node %d registered", i), a.Member.LeaseValid)
}

func (c *Cluster) down(i int, cause error) {
	m := c.Nodes[i]
	m.mu.Lock()
	a, cancel := m.agent, m.cancel
	m.agent, m.cancel = nil, nil
	m.mu.Unlock()
	if a == nil {
		return
	}
	a.Member.Thaw()
	cancel(cause)
	if err := a.Wait(); err != nil {
		c.t.Errorf("nodetest: node %d stopped with error: %v", i, err)
	}
}

// Stop stops node i gracefully (as SIGTERM): it drains its partitions to the
// other nodes first.
func (c *Cluster) Stop(i int) { c.down(i, context.Canceled) }

// Kill stops node i abruptly (as SIGKILL): it keeps its partitions and lease,
// which expire after the lease TTL.
func (c *Cluster) Kill(i int) { c.down(i, agent.ErrCrash) }

// Pause freezes node i (as SIGSTOP): no keep-alives, no new events.
func (c *Cluster) Pause(i int) { c.Agent(i).Member.Freeze() }

// Resume thaws node i (as SIGCONT).
func (c *Cluster) Resume(i int) { c.Agent(i).Member.Thaw() }

// StopAll stops every running node gracefully.
func (c *Cluster) StopAll() {
	for i := range c.Nodes {
		c.Stop(i)
	}
}

// Owners reads partition ownership from etcd.
func (c *Cluster) Owners() map[int]placement.Owner {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	owners, err := placement.Owners(ctx, c.Client, c.keys())
	if err != nil {
		c.t.Fatalf("nodetest: read owners: %v", err)
	}
	return owners
}

// Assignments reads the leaders' partition assignments from etcd.
func (c *Cluster) Assignments() map[int]placement.Assignment {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := placement.Read(ctx, c.Client, c.keys(), placement.Meta{})
	if err != nil {
		c.t.Fatalf("nodetest: read assignments: %v", err)
	}
	return v.Assign
}

// Leaders reads the current leader of every data center from etcd.
func (c *Cluster) Leaders() map[string]leader.Info {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ls, err := leader.Leaders(ctx, c.Client, c.keys())
	if err != nil {
		c.t.Fatalf("nodetest: read leaders: %v", err)
	}
	out := map[string]leader.Info{}
	for _, l := range ls {
		out[l.DC] = l
	}
	return out
}

// snapshot reads the cluster's placement from etcd in one revision.
func (c *Cluster) snapshot() placement.Snapshot {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, err := placement.Read(ctx, c.Client, c.keys(), placement.Meta{})
	if err != nil {
		c.t.Fatalf("nodetest: read placement: %v", err)
	}
	return snap
}

// balanced reports whether, in every data center with running nodes, the
// partitions its leader manages are spread over its running nodes that may
// own partitions (not draining, serving every required class), with loads
// differing by at most one.
func (c *Cluster) balanced(snap placement.Snapshot) bool {
	load := map[string]int{}
	dcNodes := map[string][]string{}
	for _, m := range c.Nodes {
		if m.Agent() != nil && snap.Eligible(m.Config.ID) {
			load[m.Config.ID] = 0
			dcNodes[m.Config.DC] = append(dcNodes[m.Config.DC], m.Config.ID)
		}
	}
	for _, a := range snap.Assign {
		load[a.Node]++
	}
	for _, ids := range dcNodes {
		lo, hi := load[ids[0]], load[ids[0]]
		for _, id := range ids {
			lo, hi = min(lo, load[id]), max(hi, load[id])
		}
		if hi-lo > 1 {
			return false
		}
	}
	return true
}

// WaitSettled waits until placement has converged, as read from etcd in
// one revision: every partition is owned, by the running node that reports
// owning it; each data center's leader has balanced its partitions over its
// running nodes; and every running node's view of the cluster is that
// revision's (a view lags etcd by its watches' delivery, and a node acting
// on a stale view routes to owners that are gone), with no handoff under
// way.
func (c *Cluster) WaitSettled() {
	c.t.Helper()
	c.WaitFor("placement settled on the running nodes", func() bool {
		snap := c.snapshot()
		if !c.balanced(snap) {
			return false
		}
		total := 0
		for i, m := range c.Nodes {
			a := m.Agent()
			if a == nil {
				continue
			}
			if len(snap.Owners) != a.Node.PartitionCount() || !a.Member.Sees(snap) || !a.Member.Settled() || !a.Serving() {
				return false
			}
			mine := a.Member.Owned()
			for _, p := range mine {
				if snap.Owners[p].Node != c.Nodes[i].Config.ID {
					return false
				}
			}
			total += len(mine)
		}
		return total == len(snap.Owners)
	})
}

// WaitViews waits until every partition is owned by a running node not in
// skip, and those nodes see the cluster as etcd holds it.
func (c *Cluster) WaitViews(skip ...int) {
	c.t.Helper()
	c.WaitFor("the nodes' views caught up with etcd", func() bool {
		snap := c.snapshot()
		partitions := 0
		for i, m := range c.Nodes {
			if a := m.Agent(); a != nil && !slices.Contains(skip, i) {
				partitions = a.Node.PartitionCount()
			}
			if slices.Contains(skip, i) {
				for _, o := range snap.Owners {
					if o.Node == m.Config.ID {
						return false
					}
				}
				continue
			}
			if a := m.Agent(); a != nil && !a.Member.Sees(snap) {
				return false
			}
		}
		return partitions > 0 && len(snap.Owners) == partitions
	})
}

// Dial returns a client of node i, closed at cleanup.
func (c *Cluster) Dial(i int) *client.Client {
	c.t.Helper()
	return c.dial(c.Addr(i), client.Options{NoDirect: true})
}

// DialAll returns a client with every member's address as a seed, closed at
// cleanup: it calls owners directly and survives any single node going down.
func (c *Cluster) DialAll() *client.Client {
	c.t.Helper()
	var addrs []string
	for i, m := range c.Nodes {
		if m.Listen == "" || strings.HasSuffix(m.Listen, ":0") {
			c.t.Fatalf("nodetest: node %d has not started yet", i)
		}
		addrs = append(addrs, m.Listen)
	}
	return c.dial(strings.Join(addrs, ","), client.Options{})
}

func (c *Cluster) dial(target string, opts client.Options) *client.Client {
	c.t.Helper()
	cl, err := client.Dial(target, opts)
	if err != nil {
		c.t.Fatalf("nodetest: dial: %v", err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// Invoke calls an object by name in-process through node i.
func (c *Cluster) Invoke(i int, class, name, method string, payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Node(i).Invoke(ctx, class, node.Ref{Name: name}, method, payload)
	return res.Payload, err
}

// WaitFor polls cond every few milliseconds until it holds, failing the test
// after 20 s of real time.
func (c *Cluster) WaitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("nodetest: timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// WaitQuiet waits until every running node has nothing to do at its
// clock's current time (node.Node.Quiet): nothing due is left undelivered,
// no event runs, no commit is in flight. After moving a fake clock, wait
// for it before checking that something did not happen: anything the
// advance made due has happened by then.
func (c *Cluster) WaitQuiet() {
	c.t.Helper()
	c.WaitFor("the nodes are quiet", func() bool {
		for _, m := range c.Nodes {
			if a := m.Agent(); a != nil && !a.Node.Quiet() {
				return false
			}
		}
		return true
	})
}

// NewClock returns a fake clock at a fixed, well-known instant.
func NewClock() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
}

// Advance moves the fake clock forward.
func (c *Cluster) Advance(d time.Duration) {
	if c.Clock == nil {
		panic(fmt.Sprintf("nodetest: Advance(%s) without Options.Clock", d))
	}
	c.Clock.Advance(d)
}
