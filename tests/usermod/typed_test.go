package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/nodetest"
)

// sharedEtcd is the etcd the package's nodetest clusters share (each under
// a prefix of its own).
var sharedEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &sharedEtcd) }

// startCluster runs the binary's classes (its own Register) on a nodetest
// cluster of nodes and returns a client of every node.
func startCluster(t *testing.T, nodes int) *client.Client {
	t.Helper()
	c := nodetest.Start(t, nodetest.Options{Nodes: nodes, Etcd: sharedEtcd, Register: options.Register})
	return c.DialAll()
}

// TestTypedCallsAndStubsReachTheUsersClass: client.Call and a bound stub
// call Tally's typed methods through a two-node cluster.
func TestTypedCallsAndStubsReachTheUsersClass(t *testing.T) {
	cl := startCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, name := range []string{"a", "b", "c", "d"} {
		got, err := client.Call(ctx, cl, "Tally", client.ByName(name), Add, AddRequest{N: int64(i + 1)})
		require.NoError(t, err)
		require.Equal(t, Total{Total: int64(i + 1)}, got)

		stub := cl.Stub("Tally", client.ByName(name))
		add, get := client.Bind(stub, Add), client.Bind(stub, Get)
		got, err = add(ctx, AddRequest{N: 10})
		require.NoError(t, err)
		require.Equal(t, int64(i+11), got.Total)
		got, err = get(ctx, struct{}{})
		require.NoError(t, err)
		require.Equal(t, int64(i+11), got.Total)
	}

	_, err := client.Call(ctx, cl, "Tally", client.ByName("a"), Add, AddRequest{N: 0})
	require.True(t, client.IsObjectError(err), "the handler's own error: %v", err)
	require.Contains(t, status.Convert(err).Message(), ErrNotPositive.Error())
}

// TestTypedCallErrors: a method the class does not have is Unimplemented
// (UNKNOWN_METHOD), a payload its request type cannot decode is
// InvalidArgument (BAD_PAYLOAD); neither reaches the handler nor is the
// object's error.
func TestTypedCallErrors(t *testing.T) {
	cl := startCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		class, method string
		payload       []byte
		code          codes.Code
		reason        string
	}{
		{"Tally", "subtract", nil, codes.Unimplemented, "UNKNOWN_METHOD"},
		{"Greeter", "bye", nil, codes.Unimplemented, "UNKNOWN_METHOD"},
		{"Tally", Add.Name(), []byte(`{"n":"two"}`), codes.InvalidArgument, "BAD_PAYLOAD"},
		{"Tally", Add.Name(), []byte(`not json`), codes.InvalidArgument, "BAD_PAYLOAD"},
	} {
		t.Run(tc.class+"."+tc.method+" "+string(tc.payload), func(t *testing.T) {
			_, err := cl.Invoke(ctx, tc.class, client.ByName("x"), tc.method, tc.payload)
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			require.Equal(t, tc.reason, client.Detail(err).GetReason())
			require.False(t, client.IsObjectError(err))
		})
	}
	// Typed: a stub of a method the class does not declare.
	_, err := client.Bind(cl.Stub("Greeter", client.ByName("x")), Get)(ctx, struct{}{})
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)

	got, err := client.Call(ctx, cl, "Tally", client.ByName("x"), Get, struct{}{})
	require.NoError(t, err)
	require.Equal(t, Total{}, got, "the refused calls changed nothing")
}
