package tracing

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The gRPC instrumentation is ours, not otelgrpc's (docs/design.md,
// "Tracing"): otelgrpc's stats handlers start a span and build and hash a
// metric attribute set for every RPC, sampled or not, and look the span up
// again on each of an RPC's seven stats events; at 1 % sampling that was
// most of tracing's cost. These interceptors do the work once per RPC, and
// none at all for a call whose trace was not sampled, beyond carrying the
// decision on.

const scope = "github.com/durable-run/durable/tracing"

// Start starts a span named name under ctx's span, as tracer.Start does,
// unless that would record nothing for sure: tracer is nil (tracing off),
// or ctx carries a span context that was not sampled. The parent-based
// samplers (the SDK's default, OTEL_TRACES_SAMPLER's parentbased_*) never
// record a child of an unsampled span; one that ignores the parent
// (always_on, traceidratio) could, and is not asked: a trace its caller
// chose not to sample stays unsampled through the cluster. Such a call
// returns ctx unchanged and a no-op span, saving the span's allocation
// and the sampler's work.
func Start(ctx context.Context, tracer trace.Tracer, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if tracer == nil {
		return ctx, noopSpan
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && !sc.IsSampled() {
		return ctx, noopSpan
	}
	return tracer.Start(ctx, name, opts...)
}

var noopSpan = trace.SpanFromContext(context.Background())

// mdCarrier adapts gRPC metadata to the propagators' carrier.
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// incoming reads the incoming metadata for the propagators without
// copying it (metadata.FromIncomingContext copies every key).
type incoming struct{ ctx context.Context }

func (c incoming) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (incoming) Set(string, string) {}

func (c incoming) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	return mdCarrier(md).Keys()
}

// serverStart extracts the caller's trace context from the incoming
// metadata and starts the RPC's server span under it.
func serverStart(ctx context.Context, tracer trace.Tracer, method string) (context.Context, trace.Span) {
	if len(metadata.ValueFromIncomingContext(ctx, "traceparent")) > 0 {
		ctx = propagators.Extract(ctx, incoming{ctx})
	}
	ctx, span := Start(ctx, tracer, strings.TrimPrefix(method, "/"), trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		span.SetAttributes(rpcAttrs(method)...)
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			span.SetAttributes(semconv.NetworkPeerAddress(p.Addr.String()))
		}
	}
	return ctx, span
}

// clientStart starts the RPC's client span and carries its context (or,
// unsampled, the caller's decision) in the outgoing metadata.
func clientStart(ctx context.Context, tracer trace.Tracer, method, target string) (context.Context, trace.Span) {
	ctx, span := Start(ctx, tracer, strings.TrimPrefix(method, "/"), trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(append(rpcAttrs(method), semconv.ServerAddress(target))...)
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, span
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	propagators.Inject(ctx, mdCarrier(md))
	return metadata.NewOutgoingContext(ctx, md), span
}

func rpcAttrs(method string) []attribute.KeyValue {
	return []attribute.KeyValue{semconv.RPCSystemNameGRPC, semconv.RPCMethod(strings.TrimPrefix(method, "/"))}
}

// end records the RPC's status on a recorded span and ends it.
func end(span trace.Span, err error) {
	if !span.IsRecording() {
		return
	}
	s, _ := status.FromError(err)
	span.SetAttributes(semconv.RPCResponseStatusCode(s.Code().String()))
	if err != nil {
		span.SetStatus(otelcodes.Error, s.Message())
	}
	span.End()
}

func serverInterceptors(tracer trace.Tracer) []grpc.ServerOption {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, span := serverStart(ctx, tracer, info.FullMethod)
		resp, err := handler(ctx, req)
		end(span, err)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, span := serverStart(ss.Context(), tracer, info.FullMethod)
		err := handler(srv, &tracedStream{ServerStream: ss, ctx: ctx})
		end(span, err)
		return err
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
}

type tracedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *tracedStream) Context() context.Context { return s.ctx }

func dialInterceptors(tracer trace.Tracer) []grpc.DialOption {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, span := clientStart(ctx, tracer, method, cc.Target())
		err := invoker(ctx, method, req, reply, cc, opts...)
		end(span, err)
		return err
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary)}
}
