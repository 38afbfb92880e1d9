// Command ratelimit serves the ratelimit example's Limiter class (a bucket
// of 10 tokens refilled at one a second) with every durable command.
//
//	go run ./examples/ratelimit/cmd/ratelimit dev
//	go run ./examples/ratelimit/cmd/ratelimit invoke Limiter api-key-1 take '{"n":3}'
package main

import (
	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/examples/ratelimit"
	"github.com/durable-run/durable/node"
)

func main() { cli.Main(options) }

var options = cli.Options{
	Name:  "ratelimit",
	RunAs: "go run ./examples/ratelimit/cmd/ratelimit",
	Register: func(reg *node.Registry) error {
		return ratelimit.Register(reg, ratelimit.Config{Burst: 10, PerSecond: 1})
	},
	Try: []string{`invoke Limiter api-key-1 take '{"n":3}'`},
}
