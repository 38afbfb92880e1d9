// Command usermod is a user's binary: two classes and every durable command.
package main

import (
	"errors"

	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/node"
)

func main() { cli.Main(options) }

var options = cli.Options{Name: "usermod", Register: func(reg *node.Registry) error {
	return errors.Join(node.RegisterClass(reg, "Greeter", newGreeter), node.RegisterClass(reg, "Tally", newTally))
}}
