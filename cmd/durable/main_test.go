package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/node"
)

// TestDurableServesTheExamplesAndTheBenchClass: the durable binary's dev and
// agent serve the example classes and the bench's, and take --upstream and
// --upstream-ca.
func TestDurableServesTheExamplesAndTheBenchClass(t *testing.T) {
	reg := node.NewRegistry()
	require.NoError(t, options.Register(reg))
	require.NoError(t, options.RegisterUpstream(reg, cli.Upstream{URL: "http://127.0.0.1:1"}))
	require.Subset(t, reg.Names(), []string{"Batcher", "Counter", "Reminder", "Cleaner", "BenchAlarm"})

	for sub, def := range map[string]string{"agent": "http://127.0.0.1:4680", "dev": ""} {
		cmd, _, err := cli.Command(options).Find([]string{sub})
		require.NoError(t, err)
		f := cmd.Flags().Lookup("upstream")
		require.NotNil(t, f, sub)
		require.Equal(t, def, f.DefValue, sub)
		require.NotNil(t, cmd.Flags().Lookup("upstream-ca"), sub)
	}
}
