package cli

import (
	"github.com/durable-run/durable/bench/benchclass"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
)

// testOptions is the durable binary's (cmd/durable): the example classes,
// delivering to --upstream, and the bench's class.
var testOptions = Options{
	Name:     "durable",
	Register: func(reg *node.Registry) error { return benchclass.Register(reg, nil) },
	RegisterUpstream: func(reg *node.Registry, up Upstream) error {
		return examples.Register(reg, examples.Config{Upstream: up.URL, HTTP: up.HTTP})
	},
}

// For the external tests (package cli_test), which run the command line
// with clitest.
var (
	TestOptions = testOptions
	ExitCode    = exitCode
)
