package nodetest

import (
	"testing"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/node"
)

// Harness is a one-node cluster with shortcuts for that node.
type Harness struct {
	*Cluster
	// Config is the node's configuration.
	Config node.Config
}

// StartOne starts a one-node cluster.
func StartOne(t testing.TB, opts Options) *Harness {
	t.Helper()
	opts.Nodes = 1
	c := Start(t, opts)
	return &Harness{Cluster: c, Config: c.Nodes[0].Config}
}

// Node returns the node.
func (h *Harness) Node() *node.Node { return h.Cluster.Node(0) }

// Addr returns the node's gRPC address.
func (h *Harness) Addr() string { return h.Cluster.Addr(0) }

// Dial returns a client of the node.
func (h *Harness) Dial() *client.Client { return h.Cluster.Dial(0) }

// Restart stops the node gracefully and starts it again on the same etcd.
func (h *Harness) Restart() {
	h.t.Helper()
	h.Stop(0)
	h.Cluster.Restart(0)
	h.WaitSettled()
}

// Invoke calls an object by name in-process.
func (h *Harness) Invoke(class, name, method string, payload []byte) ([]byte, error) {
	return h.Cluster.Invoke(0, class, name, method, payload)
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

// keys is the cluster's key space.
func (c *Cluster) keys() keyspace.Space { return keyspace.New(c.Prefix) }
