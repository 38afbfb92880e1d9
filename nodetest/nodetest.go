// Package nodetest starts durable nodes in-process for tests: an embedded
// etcd (or a shared one), agents serving gRPC on random loopback ports, and an
// optional fake clock. It is importable by any package's tests, including
// those of users who embed the runtime with their own classes.
//
// Every resource is released by t.Cleanup.
package nodetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/node"
)

// Options configures Start.
type Options struct {
	// Etcd is a server to share between tests; nil starts one for the test.
	Etcd *embedetcd.Server
	// Register adds the classes under test.
	Register func(reg *node.Registry) error
	// Config adjusts the node's configuration (prefix, partitions, clock…)
	// after the test defaults are set.
	Config func(cfg *node.Config)
	// Clock, when set, is the node's clock (and Harness.Clock); tests create
	// it first so their classes can share it.
	Clock *clockwork.FakeClock
}

// Harness is one running node.
type Harness struct {
	t      testing.TB
	Etcd   *embedetcd.Server
	Client *clientv3.Client
	// Clock is the node's fake clock when Options.Clock was set.
	Clock *clockwork.FakeClock
	// Config is the configuration nodes of this harness start with.
	Config node.Config
	reg    *node.Registry

	Agent  *agent.Agent
	cancel context.CancelFunc
}

// Start runs one node and waits until it owns its partitions.
func Start(t testing.TB, opts Options) *Harness {
	t.Helper()
	h := &Harness{t: t, Etcd: opts.Etcd, reg: node.NewRegistry()}
	if h.Etcd == nil {
		h.Etcd = embedetcd.Test(t)
	}
	h.Client = embedetcd.TestClient(t, h.Etcd)
	h.Config = node.DefaultConfig()
	h.Config.ID = "test-node"
	h.Config.Prefix = embedetcd.UniquePrefix(t)
	h.Config.Partitions = 8
	h.Config.LeaseTTL = 2 * time.Second
	if opts.Clock != nil {
		h.Clock = opts.Clock
		h.Config.Clock = opts.Clock
	}
	if opts.Config != nil {
		opts.Config(&h.Config)
	}
	if opts.Register != nil {
		if err := opts.Register(h.reg); err != nil {
			t.Fatalf("nodetest: register classes: %v", err)
		}
	}
	h.Restart()
	t.Cleanup(h.Stop)
	return h
}

// Registry returns the registry the harness's nodes use.
func (h *Harness) Registry() *node.Registry { return h.reg }

// Node returns the running node.
func (h *Harness) Node() *node.Node { return h.Agent.Node }

// Addr returns the node's gRPC address.
func (h *Harness) Addr() string { return h.Agent.Addr() }

// Stop stops the node gracefully and waits for it (idempotent).
func (h *Harness) Stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	if err := h.Agent.Wait(); err != nil {
		h.t.Errorf("nodetest: node stopped with error: %v", err)
	}
}

// Restart stops the node (if running) and starts a new one with the same
// configuration on the same etcd, waiting until it owns every partition.
func (h *Harness) Restart() {
	h.t.Helper()
	h.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := agent.Start(ctx, agent.Config{Node: h.Config, Etcd: h.Etcd.Endpoints(), Listen: "127.0.0.1:0"}, h.reg)
	if err != nil {
		cancel()
		h.t.Fatalf("nodetest: start node: %v", err)
	}
	h.Agent, h.cancel = a, cancel
	h.WaitFor("node owns every partition", func() bool {
		n := a.Node
		return n.PartitionCount() > 0 && len(n.OwnedPartitions()) == n.PartitionCount()
	})
}

// Dial returns a client of the node, closed at cleanup.
func (h *Harness) Dial() *client.Client {
	h.t.Helper()
	c, err := client.Dial(h.Addr(), client.Options{})
	if err != nil {
		h.t.Fatalf("nodetest: dial: %v", err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// Invoke calls an object by name in-process (no gRPC).
func (h *Harness) Invoke(class, name, method string, payload []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := h.Node().Invoke(ctx, class, node.Ref{Name: name}, method, payload)
	return res.Payload, err
}

// MustInvoke is Invoke failing the test on error.
func (h *Harness) MustInvoke(class, name, method string, payload []byte) []byte {
	h.t.Helper()
	out, err := h.Invoke(class, name, method, payload)
	if err != nil {
		h.t.Fatalf("nodetest: invoke %s/%s.%s: %v", class, name, method, err)
	}
	return out
}

// WaitFor polls cond every few milliseconds until it holds, failing the test
// after 15 s of real time.
func (h *Harness) WaitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("nodetest: timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// NewClock returns a fake clock at a fixed, well-known instant.
func NewClock() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
}

// Advance moves the fake clock forward.
func (h *Harness) Advance(d time.Duration) {
	if h.Clock == nil {
		panic(fmt.Sprintf("nodetest: Advance(%s) without Options.Clock", d))
	}
	h.Clock.Advance(d)
}
