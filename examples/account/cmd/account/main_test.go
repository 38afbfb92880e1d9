package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/examples/account"
	"github.com/durable-run/durable/node"
)

// TestRegistersAccount: the binary serves Account.
func TestRegistersAccount(t *testing.T) {
	reg := node.NewRegistry()
	require.NoError(t, options.Register(reg))
	require.Equal(t, []string{account.ClassName}, reg.Names())
}
