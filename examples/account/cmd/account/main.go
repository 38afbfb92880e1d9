// Command account serves the account example's Account class with every
// durable command (dev, agent, status, …). Its methods take protobuf
// messages: call them from Go with accountpb.NewAccountClient, or from any
// language through durable.v1.Objects/Invoke (docs/classes.md shows grpcurl).
//
//	go run ./examples/account/cmd/account dev
package main

import (
	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/examples/account"
)

func main() { cli.Main(options) }

var options = cli.Options{
	Name:     "account",
	RunAs:    "go run ./examples/account/cmd/account",
	Register: account.Register,
}
