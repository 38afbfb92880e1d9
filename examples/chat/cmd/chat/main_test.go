package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/examples/chat"
	"github.com/durable-run/durable/node"
)

// TestRegistersRoomAndInbox: the binary serves Room and Inbox.
func TestRegistersRoomAndInbox(t *testing.T) {
	reg := node.NewRegistry()
	require.NoError(t, options.Register(reg))
	require.Equal(t, []string{chat.InboxClassName, chat.ClassName}, reg.Names())
}
