// Package tracing sets up OpenTelemetry tracing for a durable process and
// holds the few helpers the other packages share: W3C trace context on
// every gRPC hop (client → node → owner, grpc.go), spans for an invocation's event
// (durable.event), an alarm run (durable.alarm) and a group-commit Txn
// (durable.commit, linked to the events it carries).
//
// Tracing is off unless the standard OpenTelemetry environment asks for an
// exporter (FromEnv): then spans go to an OTLP/gRPC collector configured
// by OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_* variables. Off, a
// no-op provider is used and gRPC connections get no tracing interceptor
// at all, so tracing costs nothing. Tests pass an SDK provider with an
// in-memory exporter.
package tracing

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
)

// Enabled reports whether tp records spans (not nil, not a no-op).
func Enabled(tp trace.TracerProvider) bool {
	if tp == nil {
		return false
	}
	_, isNoop := tp.(noop.TracerProvider)
	return !isNoop
}

// propagators carry the W3C trace context (and baggage) across hops.
var propagators = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Propagators returns the propagators every hop uses.
func Propagators() propagation.TextMapPropagator { return propagators }

// ServerOptions are the gRPC server options that trace its RPCs with tp,
// none when tp is not Enabled.
func ServerOptions(tp trace.TracerProvider) []grpc.ServerOption {
	if !Enabled(tp) {
		return nil
	}
	return serverInterceptors(tp.Tracer(scope))
}

// DialOptions are the gRPC dial options that trace outgoing unary RPCs
// with tp and carry their trace context, none when tp is not Enabled.
func DialOptions(tp trace.TracerProvider) []grpc.DialOption {
	if !Enabled(tp) {
		return nil
	}
	return dialInterceptors(tp.Tracer(scope))
}

// FromEnv returns the tracer provider the standard OpenTelemetry
// environment asks for, and a function that flushes and stops it: an OTLP
// gRPC exporter when OTEL_TRACES_EXPORTER is "otlp" or an OTLP endpoint is
// set (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
// unless OTEL_SDK_DISABLED is "true"; otherwise a no-op provider. The
// resource names the service ("durable", or OTEL_SERVICE_NAME) and attrs.
func FromEnv(ctx context.Context, attrs ...attribute.KeyValue) (trace.TracerProvider, func(context.Context) error, error) {
	none := func(context.Context) error { return nil }
	exporter := os.Getenv("OTEL_TRACES_EXPORTER")
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") + os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	switch {
	case os.Getenv("OTEL_SDK_DISABLED") == "true", exporter == "none", exporter == "" && endpoint == "":
		return noop.NewTracerProvider(), none, nil
	case exporter != "" && exporter != "otlp":
		return nil, none, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%q: only otlp (or none) is supported", exporter)
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, none, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(append([]attribute.KeyValue{attribute.String("service.name", serviceName())}, attrs...)...))
	if err != nil {
		return nil, none, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

func serviceName() string {
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return "durable"
}
