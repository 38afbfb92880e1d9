package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/durable-run/durable/embedetcd"
)

// One etcd serves every test of the package; each test works under its own
// key prefix.
var testEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &testEtcd) }

func newClient(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: testEtcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// harness runs one node against the shared etcd with a fake clock.
type harness struct {
	t      *testing.T
	client *clientv3.Client
	clock  *clockwork.FakeClock
	cfg    Config
	reg    *Registry
	n      *Node
	cancel context.CancelFunc
	done   chan error
}

// newHarness builds (but does not start) a node with a fake clock, 4
// partitions and a unique prefix. setup may change the config and register
// classes.
func newHarness(t *testing.T, setup func(cfg *Config, reg *Registry)) *harness {
	t.Helper()
	h := &harness{t: t, client: newClient(t), clock: clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)), reg: NewRegistry()}
	h.cfg = DefaultConfig()
	h.cfg.ID = "n1"
	h.cfg.Prefix = embedetcd.UniquePrefix(t)
	h.cfg.Partitions = 4
	h.cfg.LeaseTTL = 2 * time.Second
	h.cfg.Clock = h.clock
	h.cfg.Jitter = func() float64 { return 0 }
	if setup != nil {
		setup(&h.cfg, h.reg)
	}
	return h
}

// start runs the node and waits until it owns every partition.
func (h *harness) start() *harness {
	h.t.Helper()
	n, err := New(h.cfg, h.client, h.reg)
	require.NoError(h.t, err)
	h.n = n
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- n.Run(ctx) }()
	h.t.Cleanup(h.stop)
	require.Eventually(h.t, func() bool {
		return n.PartitionCount() > 0 && len(n.OwnedPartitions()) == n.PartitionCount()
	}, 10*time.Second, 5*time.Millisecond, "node never owned its partitions")
	return h
}

// stop shuts the node down (idempotent).
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		require.NoError(h.t, err)
	case <-time.After(20 * time.Second):
		h.t.Fatal("node did not stop")
	}
}

// restart stops the node and starts a new one with the same config.
func (h *harness) restart() *harness {
	h.stop()
	return h.start()
}

func (h *harness) invoke(class, name, method string, payload string) (string, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.n.Invoke(ctx, class, Ref{Name: name}, method, []byte(payload))
	return string(res.Payload), err
}

func (h *harness) mustInvoke(class, name, method string, payload string) string {
	h.t.Helper()
	out, err := h.invoke(class, name, method, payload)
	require.NoError(h.t, err)
	return out
}

// advance moves the fake clock forward.
func (h *harness) advance(d time.Duration) { h.clock.Advance(d) }

// eventually polls cond with a deadline (real time; the fake clock drives
// only the node's timers).
func (h *harness) eventually(cond func() bool, msg string, args ...any) {
	h.t.Helper()
	require.Eventually(h.t, cond, 10*time.Second, 2*time.Millisecond, fmt.Sprintf(msg, args...))
}
