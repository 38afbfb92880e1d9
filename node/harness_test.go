package node_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/commit"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

// One etcd serves every test of the package; each test works under its own
// key prefix.
var testEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &testEtcd) }

// harness is one node on the shared etcd, with a fake clock, 4 partitions,
// no retry jitter and a commit hook the test can set at any time.
type harness struct {
	*nodetest.Harness
	t    *testing.T
	cfg  node.Config
	hook atomic.Pointer[func(ops []clientv3.Op) error]
}

// newHarness starts a node; setup may change the config and register
// classes.
func newHarness(t *testing.T, setup func(cfg *node.Config, reg *node.Registry)) *harness {
	t.Helper()
	h := &harness{t: t}
	h.cfg = node.DefaultConfig()
	h.cfg.Partitions = 4
	h.cfg.LeaseTTL = 2 * time.Second
	h.cfg.Jitter = func() float64 { return 0 }
	h.cfg.CommitHook = h.runHook
	h.Harness = nodetest.StartOne(t, nodetest.Options{
		Etcd:  testEtcd,
		Clock: nodetest.NewClock(),
		Register: func(reg *node.Registry) error {
			if setup != nil {
				setup(&h.cfg, reg)
			}
			return nil
		},
		Config: func(cfg *node.Config) {
			// The harness's settings over nodetest's, but the node's
			// identity and cluster stay nodetest's.
			mine := h.cfg
			mine.ID, mine.DC, mine.Prefix, mine.HomeDCs = cfg.ID, cfg.DC, cfg.Prefix, cfg.HomeDCs
			mine.DCGrace, mine.Stabilise, mine.Clock, mine.Logger = cfg.DCGrace, cfg.Stabilise, cfg.Clock, cfg.Logger
			*cfg = mine
		},
	})
	h.cfg = h.Harness.Config
	return h
}

func (h *harness) runHook(ops []clientv3.Op) error {
	if f := h.hook.Load(); f != nil && *f != nil {
		return (*f)(ops)
	}
	return nil
}

// setCommitHook makes every commit of the node pass through fn (nil: none).
func (h *harness) setCommitHook(fn func(ops []clientv3.Op) error) { h.hook.Store(&fn) }

// commitStats returns the node's group commit counters.
func (h *harness) commitStats() commit.Stats { return h.Agent(0).Committer().Stats() }

// n is the running node.
func (h *harness) n() *node.Node { return h.Node() }

// restart stops the node gracefully and starts it again on the same etcd.
func (h *harness) restart() { h.Restart() }

// stop stops the node gracefully; start starts it again.
func (h *harness) stop() { h.Stop(0) }

func (h *harness) start() {
	h.t.Helper()
	h.Cluster.Restart(0)
	h.WaitSettled()
}

func (h *harness) invoke(class, name, method string, payload string) (string, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.n().Invoke(ctx, class, node.Ref{Name: name}, method, []byte(payload))
	return string(res.Payload), err
}

func (h *harness) mustInvoke(class, name, method string, payload string) string {
	h.t.Helper()
	out, err := h.invoke(class, name, method, payload)
	require.NoError(h.t, err)
	return out
}

// advance moves the fake clock forward.
func (h *harness) advance(d time.Duration) { h.Advance(d) }

// eventually polls cond with a deadline (real time; the fake clock drives
// only the node's timers).
func (h *harness) eventually(cond func() bool, msg string, args ...any) {
	h.t.Helper()
	require.Eventually(h.t, cond, 10*time.Second, 2*time.Millisecond, fmt.Sprintf(msg, args...))
}
