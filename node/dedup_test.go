package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// visitAs visits name through node i under request id rid.
func visitAs(t *testing.T, c *nodetest.Cluster, i int, name, rid string) nodetest.Visit {
	t.Helper()
	ctx, cancel := context.WithTimeout(node.WithRequestID(context.Background(), rid), 10*time.Second)
	defer cancel()
	res, err := c.Node(i).Invoke(ctx, "Probe", node.Ref{Name: name}, "visit", nil)
	require.NoError(t, err)
	var v nodetest.Visit
	require.NoError(t, json.Unmarshal(res.Payload, &v))
	return v
}

func invokeRuns(rec *nodetest.Recorder, name string) int {
	n := 0
	for _, r := range rec.Snapshot() {
		if r.Object == name && r.Kind == "invoke" {
			n++
		}
	}
	return n
}

// TestRetryWithRequestIDRunsOnce: a call repeated with its request id gets
// the first run's reply without running again — on the same node, after
// the object left memory, and on the partition's next owner; a new id runs.
func TestRetryWithRequestIDRunsOnce(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := nodetest.Start(t, nodetest.Options{
		Nodes:    2,
		Register: func(reg *node.Registry) error { return nodetest.RegisterProbe(reg, rec) },
	})
	const name = "once"
	require.Equal(t, 1, visitAs(t, c, 0, name, "r1").N)
	require.Equal(t, 1, visitAs(t, c, 0, name, "r1").N, "a retry replays the reply")
	require.Equal(t, 1, visitAs(t, c, 1, name, "r1").N, "through another node too")
	require.Equal(t, 1, invokeRuns(rec, name), "the handler ran once")
	require.Equal(t, 2, visitAs(t, c, 1, name, "r2").N, "a new request id runs")

	// The owner stops: the next owner reads the remembered ids from etcd.
	owner := 0
	if visitAs(t, c, 0, name, "r3").Node != c.Nodes[0].Config.ID {
		owner = 1
	}
	c.Stop(owner)
	c.WaitSettled()
	v := visitAs(t, c, 1-owner, name, "r3")
	require.Equal(t, 3, v.N, "the retry on the new owner replays the old owner's reply")
	require.Equal(t, c.Nodes[owner].Config.ID, v.Node)
	require.Equal(t, 3, invokeRuns(rec, name))
}

// TestRequestIDRingIsBounded: an object remembers its last 16 requests; an
// id older than that runs again.
func TestRequestIDRingIsBounded(t *testing.T) {
	rec := &nodetest.Recorder{}
	c := nodetest.Start(t, nodetest.Options{
		Register: func(reg *node.Registry) error { return nodetest.RegisterProbe(reg, rec) },
	})
	for k := 1; k <= 17; k++ {
		require.Equal(t, k, visitAs(t, c, 0, "ring", fmt.Sprint("id-", k)).N)
	}
	require.Equal(t, 2, visitAs(t, c, 0, "ring", "id-2").N, "within the last 16: its own reply, replayed")
	require.Equal(t, 18, visitAs(t, c, 0, "ring", "id-1").N, "forgotten: runs again")
}

func TestOversizedRequestIDIsRefused(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{
		Register: func(reg *node.Registry) error { return nodetest.RegisterProbe(reg, &nodetest.Recorder{}) },
	})
	cl := c.Dial(0)
	_, err := durablev1.NewObjectsClient(cl.Conn()).Invoke(context.Background(), &durablev1.InvokeRequest{
		Class: "Probe", Object: client.ByName("x"), Method: "visit", RequestId: strings.Repeat("r", node.MaxRequestIDBytes+1),
	})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "request id")
}
