package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

// TestLocationHintPlacesTheObjectInItsDataCenter: an object named with a
// location hint, or made as a located unique ID, lives on a partition homed
// in that data center and runs on its node; the hint is part of the
// identity; the first reply names the homes, so the client then calls the
// owner directly; a data center the cluster does not have is refused.
func TestLocationHintPlacesTheObjectInItsDataCenter(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 2, DCs: []string{"dc1", "dc2"}, Etcd: sharedEtcd,
		Register: func(reg *node.Registry) error { return examples.Register(reg, examples.Config{}) },
	})
	c.WaitFor("every partition at home", func() bool {
		for _, a := range c.Assignments() {
			if a.DC != a.Home {
				return false
			}
		}
		return true
	})
	c.WaitSettled()
	const seed, dc2 = 0, 1 // node 0 is in dc1, node 1 in dc2
	w := &wire{}
	cl := dial(t, c.Addr(seed), client.Options{DialOptions: []grpc.DialOption{w.dialOption()}})
	layout := durable.NewLayout(c.Node(seed).PartitionCount(), []string{"dc1", "dc2"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	resp, err := cl.Invoke(ctx, "Counter", client.ByNameIn("room", "dc2"), "increment", nil)
	require.NoError(t, err)
	id := durable.IDFromName("Counter", "room", durable.WithLocation("dc2"))
	require.Equal(t, id.String(), resp.GetId())
	require.EqualValues(t, layout.Partition(id), resp.GetPartition())
	require.Equal(t, "dc2", layout.Homes()[resp.GetPartition()%2], "a located object's partition is homed in its data center")
	require.Equal(t, c.Addr(dc2), resp.GetOwner(), "and runs there")
	require.Equal(t, []string{"dc1", "dc2"}, resp.GetHomeDcs(), "the reply names the homes")
	require.Equal(t, c.Addr(seed), w.take()[0].target, "the first call went through the seed")

	plain, err := cl.Invoke(ctx, "Counter", client.ByName("room"), "increment", nil)
	require.NoError(t, err)
	require.NotEqual(t, resp.GetId(), plain.GetId(), "the hint is part of the identity")
	require.EqualValues(t, 1, counterValue(t, plain))
	require.Empty(t, plain.GetHomeDcs(), "only located objects' replies carry the homes")
	w.take()

	again, err := cl.Invoke(ctx, "Counter", client.ByNameIn("room", "dc2"), "increment", nil)
	require.NoError(t, err)
	require.EqualValues(t, 2, counterValue(t, again))
	got := w.take()
	require.Len(t, got, 1)
	require.Equal(t, c.Addr(dc2), got[0].target, "the client maps the located name to its owner")

	// Located unique IDs, addressed by ID, run in dc2 too; once a
	// partition's owner is learned, the client maps the ID to it itself.
	for range 5 {
		uid := client.ByID(durable.NewUniqueID("Counter", durable.WithLocation("dc2")).String())
		for range 2 {
			resp, err := cl.Invoke(ctx, "Counter", uid, "increment", nil)
			require.NoError(t, err)
			require.Equal(t, c.Addr(dc2), resp.GetOwner())
		}
		got := w.take()
		require.Len(t, got, 2)
		require.Equal(t, c.Addr(dc2), got[1].target)
	}
	// dc1 works too, and a name located in dc1 runs on node 0.
	resp, err = cl.Invoke(ctx, "Counter", client.ByNameIn("room", "dc1"), "increment", nil)
	require.NoError(t, err)
	require.Equal(t, c.Addr(seed), resp.GetOwner())

	for name, ref := range map[string]client.Ref{
		"a name in an unknown data center": client.ByNameIn("room", "dc9"),
		"an ID located in one":             client.ByID(durable.NewUniqueID("Counter", durable.WithLocation("dc9")).String()),
	} {
		_, err := cl.Invoke(ctx, "Counter", ref, "increment", nil)
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%s: %v", name, err)
		require.Contains(t, status.Convert(err).Message(), "dc1, dc2", "%s: the error names the cluster's data centers", name)
	}
	ref := client.ByID(id.String())
	ref.Location = "dc2"
	_, err = cl.Invoke(ctx, "Counter", ref, "increment", nil)
	require.Equal(t, codes.InvalidArgument, status.Code(err), "a hint beside an id: %v", err)
}
