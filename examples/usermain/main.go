// Command usermain is what a user's binary looks like: one class, Greeter,
// and every durable command (dev, agent, invoke, status, …) with its flags,
// DURABLE_* variables and TLS options, from package cli.
//
//	go run ./examples/usermain dev
//	go run ./examples/usermain invoke Greeter ada hello   # → hello ada, visit 1
package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/node"
)

func main() { cli.Main(options) }

var options = cli.Options{
	Name:  "usermain",
	RunAs: "go run ./examples/usermain",
	Register: func(reg *node.Registry) error {
		return node.RegisterClass(reg, "Greeter", newGreeter)
	},
	Try: []string{"invoke Greeter ada hello"},
}

// Greeter greets each caller by its object name and counts the visits.
type Greeter struct{ st durable.State }

func newGreeter(_ context.Context, st durable.State) (*Greeter, error) {
	return &Greeter{st: st}, nil
}

func (g *Greeter) Invoke(ctx context.Context, method string, _ []byte) ([]byte, error) {
	if method != "hello" {
		return nil, fmt.Errorf("unknown method %q", method)
	}
	v, _, err := g.st.Storage().Get(ctx, "visits")
	if err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(string(v))
	n++
	if err := g.st.Storage().Put(ctx, "visits", []byte(strconv.Itoa(n))); err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "hello %s, visit %d", g.st.Name(), n), nil
}
