// Command chat serves the chat example's classes, Room and Inbox, with every
// durable command (dev, agent, invoke, status, …).
//
//	go run ./examples/chat/cmd/chat dev
//	go run ./examples/chat/cmd/chat invoke Room lobby post '{"user":"ada","text":"hi @bob"}'
//	go run ./examples/chat/cmd/chat invoke Room lobby read '{"since":0}'
//	go run ./examples/chat/cmd/chat invoke Inbox bob list
package main

import (
	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/examples/chat"
	"github.com/durable-run/durable/node"
)

func main() { cli.Main(options) }

var options = cli.Options{
	Name:  "chat",
	RunAs: "go run ./examples/chat/cmd/chat",
	Register: func(reg *node.Registry) error {
		return chat.Register(reg, chat.Config{})
	},
	Try: []string{
		`invoke Room lobby post '{"user":"ada","text":"hi @bob"}'`,
		`invoke Room lobby read '{"since":0}'`,
		`invoke Inbox bob list`,
	},
}
