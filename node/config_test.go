package node_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

// TestZeroConfigGetsTheDefaults: a Config with only ID set validates, and
// every field with a default gets DefaultConfig's; the zeros that mean "off"
// stay off.
func TestZeroConfigGetsTheDefaults(t *testing.T) {
	c := node.Config{ID: "n1"}
	require.NoError(t, c.Validate())
	require.NotNil(t, c.Clock)
	require.NotNil(t, c.Jitter)
	require.NotNil(t, c.Logger)
	require.NotNil(t, c.Metrics)
	require.NotNil(t, c.TracerProvider)

	want := node.DefaultConfig()
	want.ID = "n1"
	want.CallLatencyTarget = 0 // zero: not watched
	want.ForwardTimeout = 0    // zero: no bound
	want.HomeDCs = nil         // empty: this node's DC
	c.Clock, c.Jitter, c.Logger, c.Metrics, c.TracerProvider = nil, nil, nil, nil, nil
	require.Equal(t, want, c)
}

// TestValidateReportsOnlyWrongValues: defaults never hide a value that is
// set but wrong, and every bad field is reported at once.
func TestValidateReportsOnlyWrongValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(c *node.Config)
		want []string
	}{
		{"no id", func(c *node.Config) { c.ID = "" }, []string{"node id"}},
		{"negative durations", func(c *node.Config) { c.IdleTimeout, c.DCGrace = -time.Second, -time.Second },
			[]string{"idle timeout -1s must be positive", "dc grace -1s must be positive"}},
		{"negative call latency target", func(c *node.Config) { c.CallLatencyTarget = -time.Millisecond }, []string{"call latency target"}},
		{"lease TTL below a second", func(c *node.Config) { c.LeaseTTL = 500 * time.Millisecond }, []string{"lease TTL 500ms must be at least 1s"}},
		{"max calls below min calls", func(c *node.Config) { c.MaxCalls, c.MinCalls = 8, 16 }, []string{"call bounds [16, 8]"}},
		{"negative max calls", func(c *node.Config) { c.MaxCalls = -1 }, []string{"call bounds"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := node.Config{ID: "n1"}
			tc.set(&c)
			err := c.Validate()
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
	t.Run("max calls below the default floor", func(t *testing.T) {
		c := node.Config{ID: "n1", MaxCalls: 8}
		require.NoError(t, c.Validate())
		require.Equal(t, 8, c.MinCalls, "the floor follows a small MaxCalls")
	})
}

// TestClusterStartsFromAZeroConfig: nodes whose Config is zero but for what
// the harness must know (ID, key prefix) and quiet logs form a cluster and
// serve calls.
func TestClusterStartsFromAZeroConfig(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 2,
		Register: func(reg *node.Registry) error {
			return node.RegisterClass(reg, "C", func(_ context.Context, st durable.State) (*counter, error) {
				return &counter{st: st}, nil
			})
		},
		Config: func(cfg *node.Config) {
			*cfg = node.Config{ID: cfg.ID, Prefix: cfg.Prefix, Logger: slog.New(slog.DiscardHandler)}
		},
	})
	for i := range 2 {
		require.Equal(t, 256, c.Node(i).Config().Partitions, "node %d", i)
	}
	c.WaitSettled()
	out, err := c.Invoke(0, "C", "a", "inc", nil)
	require.NoError(t, err)
	require.Equal(t, "1", string(out))
	out, err = c.Invoke(1, "C", "a", "inc", nil)
	require.NoError(t, err)
	require.Equal(t, "2", string(out))
}
