package tracing

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestFromEnvIsOffUnlessAnExporterIsAsked: no OTEL_* variables, or the SDK
// disabled, give a no-op provider (and no gRPC handlers); an OTLP endpoint
// gives an SDK provider; an exporter we do not ship is a clear error.
func TestFromEnvIsOffUnlessAnExporterIsAsked(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		enabled bool
		err     string
	}{
		{name: "nothing set"},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}},
		{name: "sdk disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, enabled: true},
		{name: "otlp", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, enabled: true},
		{name: "zipkin", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: `"zipkin": only otlp`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"} {
				t.Setenv(k, tc.env[k])
			}
			tp, stop, err := FromEnv(context.Background())
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			defer stop(context.Background())
			require.Equal(t, tc.enabled, Enabled(tp))
			require.Equal(t, tc.enabled, len(ServerOptions(tp)) > 0)
			require.Equal(t, tc.enabled, len(DialOptions(tp)) > 0)
			if tc.enabled {
				require.IsType(t, &sdktrace.TracerProvider{}, tp)
			}
		})
	}
	require.False(t, Enabled(nil))
}

// TestStartSkipsChildrenOfUnsampledSpans: Start records a child of a
// sampled span and a root as the sampler says, and starts nothing (ctx
// unchanged, a no-op span) under an unsampled span or without a tracer.
func TestStartSkipsChildrenOfUnsampledSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracer := tp.Tracer("test")
	background := context.Background()

	ctx, span := Start(background, nil, "off")
	require.Equal(t, background, ctx)
	require.False(t, span.IsRecording())

	root, rootSpan := Start(background, tracer, "root")
	require.True(t, rootSpan.IsRecording(), "a root is sampled by the default sampler")
	_, child := Start(root, tracer, "child")
	require.True(t, child.IsRecording())
	require.Equal(t, rootSpan.SpanContext().TraceID(), child.SpanContext().TraceID())
	child.End()
	rootSpan.End()

	unsampled := trace.ContextWithSpanContext(background, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1},
	}))
	ctx, span = Start(unsampled, tracer, "skipped")
	require.Equal(t, unsampled, ctx)
	require.False(t, span.IsRecording())
	span.End()
	var names []string
	for _, s := range exp.GetSpans() {
		names = append(names, s.Name)
	}
	require.ElementsMatch(t, []string{"root", "child"}, names)
}
