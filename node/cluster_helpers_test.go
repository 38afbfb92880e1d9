package node_test

import (
	"context"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

func startAgent(c *nodetest.Cluster, cfg node.Config) (*agent.Agent, error) {
	return agent.Start(context.Background(), agent.Config{Node: cfg, Etcd: c.EtcdEndpoints(), Listen: "127.0.0.1:0"}, c.Registry())
}
