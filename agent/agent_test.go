package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
	"github.com/durable-run/durable/sink"
)

// kv is a test class whose methods write what the payload asks for, so bad
// input can be driven from the outside.
type kv struct{ st durable.State }

func (k *kv) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	s := k.st.Storage()
	switch method {
	case "put": // payload "key=value"
		key, val, _ := strings.Cut(string(payload), "=")
		return nil, s.Put(ctx, key, []byte(val))
	case "put-then-bigkey":
		if err := s.Put(ctx, "ok", []byte("v")); err != nil {
			return nil, err
		}
		return nil, s.Put(ctx, strings.Repeat("k", durable.MaxKeyBytes+1), nil)
	case "bigvalue":
		return nil, s.Put(ctx, "k", make([]byte, durable.MaxValueBytes+1))
	case "manykeys":
		m := map[string][]byte{}
		for i := 0; i <= durable.MaxKeysPerOp; i++ {
			m[strings.Repeat("x", i+1)] = nil
		}
		return nil, s.PutMany(ctx, m)
	case "alarm":
		return nil, s.SetAlarm(ctx, time.Now().Add(time.Hour))
	case "fail":
		return nil, errors.New("the object says no")
	}
	return nil, nil
}

func startKV(t *testing.T, agentCfg ...func(*agent.Config)) *nodetest.Harness {
	opts := nodetest.Options{Register: func(reg *node.Registry) error {
		if err := examples.Register(reg, examples.Config{Upstream: "http://127.0.0.1:1"}); err != nil {
			return err
		}
		return node.RegisterClass(reg, "KV", func(_ context.Context, st durable.State) (*kv, error) { return &kv{st: st}, nil })
	}}
	if len(agentCfg) > 0 {
		opts.Agent = agentCfg[0]
	}
	return nodetest.StartOne(t, opts)
}

func dataKeys(t *testing.T, h *nodetest.Harness) int64 {
	t.Helper()
	resp, err := h.Client.Get(context.Background(), h.Config.Prefix+"data/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	return resp.Count
}

func TestInvokeOverGRPCRepliesWithIDAndOwner(t *testing.T) {
	h := startKV(t)
	c := h.Dial()
	ctx := context.Background()
	resp, err := c.Invoke(ctx, "Counter", client.ByName("c"), "increment", nil)
	require.NoError(t, err)
	require.JSONEq(t, `{"value":1}`, string(resp.GetPayload()))
	require.Equal(t, durable.IDFromName("Counter", "c").String(), resp.GetId())
	require.Equal(t, h.Addr(), resp.GetOwner())
	// The same object by ID.
	resp, err = c.Invoke(ctx, "Counter", client.ByID(resp.GetId()), "get", nil)
	require.NoError(t, err)
	require.JSONEq(t, `{"value":1}`, string(resp.GetPayload()))
}

func TestBadInputGetsDocumentedCodesAndWritesNothing(t *testing.T) {
	h := startKV(t)
	c := h.Dial()
	foreign := durable.IDFromName("Batcher", "x").String()
	tests := []struct {
		name   string
		class  string
		ref    client.Ref
		method string
		code   codes.Code
		reason string
	}{
		{"unknown class", "Nope", client.ByName("a"), "get", codes.NotFound, "UNKNOWN_CLASS"},
		{"malformed id", "KV", client.ByID("xyz"), "put", codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"foreign id", "KV", client.ByID(foreign), "put", codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"no object", "KV", nil, "put", codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"empty method", "KV", client.ByName("a"), "", codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"oversized key after a valid put", "KV", client.ByName("a"), "put-then-bigkey", codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"oversized value", "KV", client.ByName("a"), "bigvalue", codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"too many keys", "KV", client.ByName("a"), "manykeys", codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"empty key", "KV", client.ByName("a"), "put", codes.InvalidArgument, "INVALID_ARGUMENT"},
		{"alarm without handler", "KV", client.ByName("a"), "alarm", codes.FailedPrecondition, "NO_ALARM_HANDLER"},
		{"unknown typed method", "Counter", client.ByName("a"), "nope", codes.Unimplemented, "UNKNOWN_METHOD"},
		{"undecodable typed payload", "Counter", client.ByName("a"), "increment", codes.InvalidArgument, "BAD_PAYLOAD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Invoke(context.Background(), tt.class, tt.ref, tt.method, []byte("=v"))
			require.Equal(t, tt.code, status.Code(err), "error: %v", err)
			d := client.Detail(err)
			require.NotNil(t, d, "status carries an ErrorDetail")
			require.Equal(t, tt.reason, d.GetReason())
			require.False(t, d.GetRetryable())
			require.False(t, client.IsObjectError(err))
		})
	}
	require.Zero(t, dataKeys(t, h), "bad input wrote something")
}

func TestObjectErrorIsMarkedAsTheObjects(t *testing.T) {
	h := startKV(t)
	_, err := h.Dial().Invoke(context.Background(), "KV", client.ByName("c"), "fail", nil)
	require.Equal(t, codes.Unknown, status.Code(err))
	require.True(t, client.IsObjectError(err), "handler errors are marked as the object's: %v", err)
	require.False(t, client.Retryable(err))
}

func TestReflectionIsOffUnlessEnabled(t *testing.T) {
	c := startKV(t).Dial()
	stream, err := reflectionpb.NewServerReflectionClient(c.Conn()).ServerReflectionInfo(context.Background())
	require.NoError(t, err)
	// Send may already see the stream ended (io.EOF); Recv has its status.
	_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	_, err = stream.Recv()
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
}

func TestHealthAndReflection(t *testing.T) {
	h := startKV(t, func(cfg *agent.Config) { cfg.Security.Reflection = true })
	c := h.Dial()
	ctx := context.Background()
	hr, err := healthpb.NewHealthClient(c.Conn()).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, hr.GetStatus())

	stream, err := reflectionpb.NewServerReflectionClient(c.Conn()).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}))
	rr, err := stream.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	require.Contains(t, names, "durable.v1.Objects")
	require.Contains(t, names, "durable.v1.Admin")
	require.NoError(t, stream.CloseSend())
}

func TestAdminShowsAlarmsAndStatus(t *testing.T) {
	h := startKV(t)
	c := h.Dial()
	ctx := context.Background()
	_, err := c.Invoke(ctx, "Reminder", client.ByName("r"), "set", []byte(`{"message":"m","in":"1h"}`))
	require.NoError(t, err)
	got, err := c.Admin().GetAlarm(ctx, &durablev1.GetAlarmRequest{Class: "Reminder", Object: client.ByName("r")})
	require.NoError(t, err)
	require.NotNil(t, got.GetAlarm())
	require.Equal(t, "r", got.GetAlarm().GetName())
	require.InDelta(t, time.Now().Add(time.Hour).UnixMilli(), got.GetAlarm().GetDueUnixMs(), float64(time.Minute.Milliseconds()))

	none, err := c.Admin().GetAlarm(ctx, &durablev1.GetAlarmRequest{Class: "Reminder", Object: client.ByName("other")})
	require.NoError(t, err)
	require.Nil(t, none.GetAlarm())

	list, err := c.Admin().ListAlarms(ctx, &durablev1.ListAlarmsRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetAlarms(), 1)

	st, err := c.Admin().Status(ctx, &durablev1.StatusRequest{})
	require.NoError(t, err)
	require.EqualValues(t, 8, st.GetPartitionCount())
	require.EqualValues(t, 1, st.GetPendingAlarms())
	require.Len(t, st.GetNodes(), 1)
	require.Len(t, st.GetNodes()[0].GetPartitions(), 8)
	for _, p := range st.GetPartitions() {
		require.Equal(t, h.Config.ID, p.GetOwner())
		require.NotZero(t, p.GetToken())
	}
}

// TestBatcherEndToEndRealTime runs Batcher through gRPC with a real clock
// and the real sink: the batch arrives once, after the delay.
func TestBatcherEndToEndRealTime(t *testing.T) {
	snk, err := sink.New(sink.Options{})
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: snk.Handler()}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close(); snk.Close() })

	const delay = 300 * time.Millisecond
	h := nodetest.StartOne(t, nodetest.Options{Register: func(reg *node.Registry) error {
		return examples.Register(reg, examples.Config{Upstream: "http://" + lis.Addr().String(), BatchDelay: delay})
	}})
	c := h.Dial()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	for i, item := range []string{"a", "b", "c"} {
		resp, err := c.Invoke(ctx, "Batcher", client.ByName("foo"), "add", []byte(item))
		require.NoError(t, err)
		var q struct{ Queued int }
		require.NoError(t, json.Unmarshal(resp.GetPayload(), &q))
		require.Equal(t, i+1, q.Queued)
	}
	require.NoError(t, snk.Wait(ctx, func(ds []sink.Delivery) bool { return len(ds) >= 1 }))
	require.GreaterOrEqual(t, time.Since(start), delay, "delivered before the batch delay")
	d := snk.Deliveries()[0]
	var b examples.Batch
	require.NoError(t, json.Unmarshal(d.Body, &b))
	require.Equal(t, []string{"a", "b", "c"}, b.Items)
	require.Equal(t, durable.IDFromName("Batcher", "foo").String()+"/0", d.IdempotencyKey)

	// The delivery happens inside the handler; the alarm is deleted by the
	// commit that follows it.
	h.WaitFor("alarm deleted after delivery", func() bool {
		al, err := c.Admin().GetAlarm(ctx, &durablev1.GetAlarmRequest{Class: "Batcher", Object: client.ByName("foo")})
		return err == nil && al.GetAlarm() == nil
	})
	require.Equal(t, 1, len(snk.Deliveries()), "delivered more than once")
}

func TestStartFailsClearlyWhenEtcdIsUnreachable(t *testing.T) {
	cfg := agent.Config{Node: node.DefaultConfig(), Etcd: []string{"http://127.0.0.1:1"}, Listen: "127.0.0.1:0", DialTimeout: 500 * time.Millisecond}
	_, err := agent.Start(context.Background(), cfg, node.NewRegistry())
	require.ErrorContains(t, err, "unreachable")
}
