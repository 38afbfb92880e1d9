package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/examples/chat"
	"github.com/durable-run/durable/node"
)

// TestRegistersRoom: the binary serves Room, as a class with alarms.
func TestRegistersRoom(t *testing.T) {
	reg := node.NewRegistry()
	require.NoError(t, options.Register(reg))
	require.Equal(t, []string{chat.ClassName}, reg.Names())
}
