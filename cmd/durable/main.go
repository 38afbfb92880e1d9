// Command durable is the single binary of the durable runtime: a node agent,
// a development cluster, a client and admin tool, and a delivery sink. It is
// package cli with the example classes, delivering to --upstream, and the
// bench's class, so that `durable bench --addr` can measure its clusters.
package main

import (
	"github.com/durable-run/durable/bench/benchclass"
	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
)

func main() { cli.Main(options) }

var options = cli.Options{
	Name:     "durable",
	RunAs:    "go run ./cmd/durable",
	Register: func(reg *node.Registry) error { return benchclass.Register(reg, nil) },
	RegisterUpstream: func(reg *node.Registry, up cli.Upstream) error {
		return examples.Register(reg, examples.Config{Upstream: up.URL, HTTP: up.HTTP})
	},
	Try: []string{"invoke Batcher foo add hello", "alarm get Batcher foo", "status"},
}
