package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/examples/ratelimit"
	"github.com/durable-run/durable/node"
)

// TestRegistersLimiter: the binary serves Limiter.
func TestRegistersLimiter(t *testing.T) {
	reg := node.NewRegistry()
	require.NoError(t, options.Register(reg))
	require.Equal(t, []string{ratelimit.ClassName}, reg.Names())
}
