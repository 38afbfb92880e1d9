package node_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// TestRecordsStayJSONWhileANodeReadsOnlyJSON: while a node of an earlier
// version (its registration names no record format) is in the cluster,
// alarm records and request rings are written as the JSON it reads; once
// it is gone, binary. Both kinds are read back either way.
func TestRecordsStayJSONWhileANodeReadsOnlyJSON(t *testing.T) {
	h := nodetest.StartOne(t, nodetest.Options{
		Etcd:     testEtcd,
		Register: func(reg *node.Registry) error { return examples.Register(reg, examples.Config{}) },
	})
	member := h.Cluster.Agent(0).Member
	h.WaitFor("the view names this node", member.BinaryRecords)
	keys := keyspace.New(h.Cluster.Prefix)
	ctx := context.Background()
	// The earlier version's node: draining, so that it takes no partition.
	old := keys.Node("old-version")
	_, err := h.Cluster.Client.Put(ctx, old, `{"dc":"dc1","address":"127.0.0.1:1","draining":true}`)
	require.NoError(t, err)
	h.WaitFor("the old node is seen", func() bool { return !member.BinaryRecords() })
	st, err := h.Dial().Admin().Status(ctx, &durablev1.StatusRequest{})
	require.NoError(t, err)
	formats := map[string]int32{}
	for _, n := range st.GetNodes() {
		formats[n.GetId()] = n.GetRecords()
	}
	require.Equal(t, map[string]int32{"old-version": 0, h.Cluster.Nodes[0].Config.ID: 1}, formats, "status names each node's record format")

	stored := func(name string) (alarm, ring []byte) {
		t.Helper()
		id := durable.IDFromName("Reminder", name)
		p := h.Node().PartitionOf(id)
		for _, k := range []struct {
			key string
			v   *[]byte
		}{{keys.Alarm(p, "Reminder", id.String()), &alarm}, {keys.Requests(p, "Reminder", id.String()), &ring}} {
			resp, err := h.Cluster.Client.Get(ctx, k.key)
			require.NoError(t, err)
			require.Len(t, resp.Kvs, 1, k.key)
			*k.v = resp.Kvs[0].Value
		}
		return alarm, ring
	}
	set := func(name string) {
		t.Helper()
		ictx := node.WithRequestID(ctx, "rid-"+name)
		_, err := h.Node().Invoke(ictx, "Reminder", node.Ref{Name: name}, "set", []byte(`{"message":"hi","in":"1h"}`))
		require.NoError(t, err)
	}

	set("during")
	alarm, ring := stored("during")
	require.Equal(t, byte('{'), alarm[0], "an alarm record as JSON while a node reads only JSON: %q", alarm)
	require.Equal(t, byte('['), ring[0], "a request ring as JSON: %q", ring)

	_, err = h.Cluster.Client.Delete(ctx, old)
	require.NoError(t, err)
	h.WaitFor("every node reads binary records", member.BinaryRecords)
	set("after")
	alarm, ring = stored("after")
	require.Equal(t, byte(1), alarm[0], "binary alarm record once every node reads it: %q", alarm)
	require.Equal(t, byte(1), ring[0], "binary request ring: %q", ring)

	// What was written as JSON is still read: the retry of the first set
	// is answered from its JSON ring (it runs nothing, so its alarm record
	// is not rewritten, binary), and its JSON alarm record is read.
	set("during")
	alarm, _ = stored("during")
	require.Equal(t, byte('{'), alarm[0], "the retry ran again instead of being answered from the ring")
	got, err := h.Dial().Admin().GetAlarm(ctx, &durablev1.GetAlarmRequest{Class: "Reminder", Object: client.ByName("during")})
	require.NoError(t, err)
	require.NotNil(t, got.GetAlarm(), "the JSON alarm record is read")
}
