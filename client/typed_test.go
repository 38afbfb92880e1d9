package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

// echo is a test class with typed methods of both codecs, a failing one and
// an untyped fallback: a class that mixes.
type echo struct {
	*durable.Router
	st durable.State
}

type greetReq struct {
	Name string `json:"name"`
}

type greetResp struct {
	Greeting string `json:"greeting"`
	Count    int    `json:"count"`
}

var (
	// echoGreet (JSON) counts its calls in the object's storage.
	echoGreet = durable.NewMethod[greetReq, greetResp]("greet")
	// echoUpper (protobuf) upper-cases a string.
	echoUpper = durable.NewMethod[*wrapperspb.StringValue, *wrapperspb.StringValue]("upper")
	// echoFail is the handler's own error.
	echoFail = durable.NewMethod[struct{}, struct{}]("fail")
)

func newEcho(_ context.Context, st durable.State) (*echo, error) {
	e := &echo{st: st}
	e.Router = durable.Methods(
		durable.Handle(echoGreet, e.greet),
		durable.Handle(echoUpper, func(_ context.Context, s *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
			b := []byte(s.GetValue())
			for i, c := range b {
				if 'a' <= c && c <= 'z' {
					b[i] = c - 'a' + 'A'
				}
			}
			return wrapperspb.String(string(b)), nil
		}),
		durable.Handle(echoFail, func(context.Context, struct{}) (struct{}, error) {
			return struct{}{}, fmt.Errorf("the object says no")
		}),
	).Fallback(func(_ context.Context, method string, payload []byte) ([]byte, error) {
		return append([]byte("untyped "+method+": "), payload...), nil
	})
	return e, nil
}

func (e *echo) greet(ctx context.Context, r greetReq) (greetResp, error) {
	s := e.st.Storage()
	v, _, err := s.Get(ctx, "count")
	if err != nil {
		return greetResp{}, err
	}
	n, _ := strconv.Atoi(string(v))
	n++
	if err := s.Put(ctx, "count", []byte(strconv.Itoa(n))); err != nil {
		return greetResp{}, err
	}
	return greetResp{Greeting: "hello " + r.Name + " from " + e.st.Name(), Count: n}, nil
}

// startTyped starts two nodes with the example classes and Echo, and returns
// a client that goes through node 0 only, and a name of class owned by node
// 1: every call is forwarded, so replies and errors cross two hops.
func startTyped(t *testing.T) (*nodetest.Cluster, *client.Client, func(class, prefix string) string) {
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 2,
		Etcd:  sharedEtcd,
		Register: func(reg *node.Registry) error {
			if err := examples.Register(reg, examples.Config{}); err != nil {
				return err
			}
			return node.RegisterClass(reg, "Echo", newEcho)
		},
	})
	c.WaitSettled()
	forwarded := func(class, prefix string) string { return nameOwnedBy(t, c, class, prefix, is(1)) }
	return c, c.Dial(0), forwarded
}

func TestTypedCallsRoundTripThroughAForward(t *testing.T) {
	_, cl, forwarded := startTyped(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("json", func(t *testing.T) {
		ref := client.ByName(forwarded("Echo", "json"))
		for want := 1; want <= 2; want++ {
			got, err := client.Call(ctx, cl, "Echo", ref, echoGreet, greetReq{Name: "ada"})
			require.NoError(t, err)
			require.Equal(t, greetResp{Greeting: "hello ada from " + ref.GetName(), Count: want}, got)
		}
		raw, err := cl.Invoke(ctx, "Echo", ref, "greet", []byte(`{"name":"bo"}`))
		require.NoError(t, err)
		require.JSONEq(t, fmt.Sprintf(`{"greeting":"hello bo from %s","count":3}`, ref.GetName()), string(raw.GetPayload()), "JSON on the wire")
	})

	t.Run("protobuf", func(t *testing.T) {
		ref := client.ByName(forwarded("Echo", "proto"))
		got, err := client.Call(ctx, cl, "Echo", ref, echoUpper, wrapperspb.String("hello"))
		require.NoError(t, err)
		require.Equal(t, "HELLO", got.GetValue())
		req, err := proto.Marshal(wrapperspb.String("wire"))
		require.NoError(t, err)
		raw, err := cl.Invoke(ctx, "Echo", ref, "upper", req)
		require.NoError(t, err)
		var reply wrapperspb.StringValue
		require.NoError(t, proto.Unmarshal(raw.GetPayload(), &reply), "protobuf on the wire")
		require.Equal(t, "WIRE", reply.GetValue())
	})

	t.Run("untyped fallback", func(t *testing.T) {
		raw, err := cl.Invoke(ctx, "Echo", client.ByName(forwarded("Echo", "raw")), "anything", []byte("x"))
		require.NoError(t, err)
		require.Equal(t, "untyped anything: x", string(raw.GetPayload()))
	})

	t.Run("a stub of bound methods", func(t *testing.T) {
		c := newCounterStub(cl, client.ByName(forwarded("Counter", "stub")))
		v, err := c.Increment(ctx, nil)
		require.NoError(t, err)
		require.EqualValues(t, 1, v.Value)
		delta := int64(41)
		v, err = c.Increment(ctx, &delta)
		require.NoError(t, err)
		require.EqualValues(t, 42, v.Value)
		v, err = c.Get(ctx, struct{}{})
		require.NoError(t, err)
		require.EqualValues(t, 42, v.Value)
	})
}

// counterStub is the example Counter's typed client: a few lines over the
// methods examples declares.
type counterStub struct {
	Increment func(context.Context, *int64) (examples.CounterValue, error)
	Get       func(context.Context, struct{}) (examples.CounterValue, error)
	Set       func(context.Context, *int64) (examples.CounterValue, error)
}

func newCounterStub(c *client.Client, ref client.Ref) counterStub {
	s := c.Stub("Counter", ref)
	return counterStub{
		Increment: client.Bind(s, examples.CounterIncrement),
		Get:       client.Bind(s, examples.CounterGet),
		Set:       client.Bind(s, examples.CounterSet),
	}
}

// TestTypedCallErrors: an unknown method and a payload the object cannot
// decode are the caller's errors with their own codes, never the object's;
// the handler's error is the object's; a reply the caller cannot decode is
// the client's error after the call ran. Through a forward, so the statuses
// cross FromStatus on the way.
func TestTypedCallErrors(t *testing.T) {
	_, cl, forwarded := startTyped(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ref := client.ByName(forwarded("Echo", "errors"))
	counter := client.ByName(forwarded("Counter", "errors"))

	tests := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
		object bool
	}{
		{"unknown method", func() error {
			// Counter has no fallback (Echo sends every unknown name to its own).
			_, err := client.Call(ctx, cl, "Counter", counter, durable.NewMethod[struct{}, struct{}]("nope"), struct{}{})
			return err
		}, codes.Unimplemented, "UNKNOWN_METHOD", false},
		{"bad json", func() error {
			_, err := cl.Invoke(ctx, "Echo", ref, "greet", []byte(`{"name":`))
			return err
		}, codes.InvalidArgument, "BAD_PAYLOAD", false},
		{"bad protobuf", func() error {
			_, err := cl.Invoke(ctx, "Echo", ref, "upper", []byte{0xff, 0xff})
			return err
		}, codes.InvalidArgument, "BAD_PAYLOAD", false},
		{"a declaration that disagrees with the class's", func() error {
			_, err := client.Call(ctx, cl, "Echo", ref, durable.NewMethod[string, string]("upper"), "\xff\xff")
			return err
		}, codes.InvalidArgument, "BAD_PAYLOAD", false},
		{"handler error", func() error {
			_, err := client.Call(ctx, cl, "Echo", ref, echoFail, struct{}{})
			return err
		}, codes.Unknown, "OBJECT_ERROR", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Equal(t, tt.reason, client.Detail(err).GetReason())
			require.Equal(t, tt.object, client.IsObjectError(err))
			require.False(t, client.Retryable(err))
		})
	}

	// The greet call ran (and counted) even though its reply is not an int.
	_, err := client.Call(ctx, cl, "Echo", ref, durable.NewMethod[greetReq, int]("greet"), greetReq{})
	require.Error(t, err)
	require.Nil(t, client.Detail(err), "a reply the client cannot decode is no status of the server")
	var ute *json.UnmarshalTypeError
	require.ErrorAs(t, err, &ute)
	got, err := client.Call(ctx, cl, "Echo", ref, echoGreet, greetReq{})
	require.NoError(t, err)
	require.Equal(t, 2, got.Count, "bad payloads wrote nothing; the undecodable reply's call ran")
}
