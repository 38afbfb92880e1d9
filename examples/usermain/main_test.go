package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/cli/clitest"
)

// TestDevServesTheUsersClass: the user's binary's `dev` serves Greeter, its
// `invoke` calls it, and its banner names the binary and suggests the
// user's command.
func TestDevServesTheUsersClass(t *testing.T) {
	ctx := context.Background()
	dev := clitest.StartDev(t, options, "--nodes", "1", "--partitions", "8")
	require.Len(t, dev.Addrs, 1, dev.Out.String())
	addr := dev.Addrs[0]
	require.Contains(t, dev.Out.String(), "usermain dev is running")
	require.Contains(t, dev.Out.String(), "go run ./examples/usermain invoke --addr "+addr+" Greeter ada hello")

	for _, want := range []string{"hello ada, visit 1", "hello ada, visit 2"} {
		out, err := clitest.Run(ctx, options, "invoke", "--addr", addr, "Greeter", "ada", "hello")
		require.NoError(t, err)
		require.Equal(t, want, strings.TrimSpace(out))
	}
	_, err := clitest.Run(ctx, options, "invoke", "--addr", addr, "Counter", "c", "increment")
	require.Error(t, err, "the example classes are durable's, not this binary's")
	require.NoError(t, dev.Stop())
}
