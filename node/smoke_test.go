package node_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
)

type counter struct{ st durable.State }

func (c *counter) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	v, _, err := c.st.Storage().Get(ctx, "n")
	if err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(string(v))
	if method == "inc" {
		n++
		if err := c.st.Storage().Put(ctx, "n", []byte(strconv.Itoa(n))); err != nil {
			return nil, err
		}
	}
	return []byte(strconv.Itoa(n)), nil
}

func TestSmokeCounter(t *testing.T) {
	h := newHarness(t, func(cfg *node.Config, reg *node.Registry) {
		require.NoError(t, node.RegisterClass(reg, "C", func(_ context.Context, st durable.State) (*counter, error) {
			return &counter{st: st}, nil
		}))
	})
	require.Equal(t, "1", h.mustInvoke("C", "a", "inc", ""))
	require.Equal(t, "2", h.mustInvoke("C", "a", "inc", ""))
	require.Equal(t, "1", h.mustInvoke("C", "b", "inc", ""))
	h.restart()
	require.Equal(t, "2", h.mustInvoke("C", "a", "get", ""))
}
