package agent_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
	"github.com/durable-run/durable/tracing"
)

// TestTraceCrossesAForward: a call made in a client span, through a node
// that forwards it to the owner, is one trace on both nodes: the entry
// node's server and forward spans, the owner's server span, its event span
// (child of it) and the group-commit Txn's span, linked to the event. An
// alarm run is a trace of its own whose commit links it too.
// tracedPair starts two traced nodes (sampling as the parent says, roots
// always) and finds a Counter the second owns; exporters hold each node's
// spans, empty when it returns.
func tracedPair(t *testing.T) (*nodetest.Cluster, []*tracetest.InMemoryExporter, string) {
	exporters := []*tracetest.InMemoryExporter{tracetest.NewInMemoryExporter(), tracetest.NewInMemoryExporter()}
	started := 0
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 2,
		Register: func(reg *node.Registry) error {
			return examples.Register(reg, examples.Config{Upstream: "http://127.0.0.1:1"})
		},
		Config: func(cfg *node.Config) {
			cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporters[started]))
			started++
		},
	})
	c.WaitSettled()
	// An object the second node owns, called through the first.
	var name string
	for i := 0; name == ""; i++ {
		n := fmt.Sprint("traced-", i)
		loc, err := c.Dial(0).Admin().Locate(context.Background(), &durablev1.LocateRequest{Class: "Counter", Object: &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: n}}})
		require.NoError(t, err)
		if loc.GetOwner() == c.Nodes[1].Config.ID {
			name = n
		}
	}
	for _, e := range exporters {
		e.Reset()
	}
	return c, exporters, name
}

// TestUnsampledCallRecordsNothing: a call whose trace the client did not
// sample starts no span on either node (their samplers would record any
// root): the decision crosses the forward, and the event and its commit
// follow it.
func TestUnsampledCallRecordsNothing(t *testing.T) {
	c, exporters, name := tracedPair(t)
	clientTP := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	cl, err := client.Dial(c.Addr(0), client.Options{NoDirect: true, DialOptions: tracing.DialOptions(clientTP)})
	require.NoError(t, err)
	defer cl.Close()
	ctx, root := clientTP.Tracer("test").Start(context.Background(), "caller")
	require.True(t, root.SpanContext().IsValid() && !root.SpanContext().IsSampled())
	for range 3 {
		_, err = cl.Invoke(ctx, "Counter", client.ByName(name), "increment", nil)
		require.NoError(t, err)
	}
	root.End()
	// A call without trace context afterwards, through the same nodes,
	// which sample it: once its spans are there, the unsampled calls'
	// would be too.
	plain, err := client.Dial(c.Addr(0), client.Options{NoDirect: true})
	require.NoError(t, err)
	defer plain.Close()
	_, err = plain.Invoke(context.Background(), "Counter", client.ByName(name), "increment", nil)
	require.NoError(t, err)
	c.WaitFor("the sampled call's commit span", func() bool { return len(spansNamed(exporters[1], "durable.commit")) > 0 })
	for i, e := range exporters {
		for _, s := range e.GetSpans() {
			require.NotEqual(t, root.SpanContext().TraceID(), s.SpanContext.TraceID(), "node %d recorded %q of the unsampled trace", i, s.Name)
		}
	}
	require.Len(t, spansNamed(exporters[1], "durable.event"), 1, "only the sampled call's event")
}

func spansNamed(e *tracetest.InMemoryExporter, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range e.GetSpans() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func TestTraceCrossesAForward(t *testing.T) {
	c, exporters, name := tracedPair(t)
	clientTP := sdktrace.NewTracerProvider()
	cl, err := client.Dial(c.Addr(0), client.Options{NoDirect: true, DialOptions: tracing.DialOptions(clientTP)})
	require.NoError(t, err)
	defer cl.Close()
	ctx, root := clientTP.Tracer("test").Start(context.Background(), "caller")
	_, err = cl.Invoke(ctx, "Counter", client.ByName(name), "increment", nil)
	require.NoError(t, err)
	root.End()
	traceID := root.SpanContext().TraceID()

	// one waits for the span: a server span ends after its reply left,
	// so the caller may see the reply first.
	one := func(e *tracetest.InMemoryExporter, name string, kind trace.SpanKind) tracetest.SpanStub {
		t.Helper()
		var found tracetest.SpanStub
		c.WaitFor(fmt.Sprintf("a %s span %q of the call's trace", kind, name), func() bool {
			for _, s := range spansNamed(e, name) {
				if s.SpanKind == kind && s.SpanContext.TraceID() == traceID {
					found = s
					return true
				}
			}
			return false
		})
		return found
	}
	one(exporters[0], "durable.v1.Objects/Invoke", trace.SpanKindServer)
	one(exporters[0], "durable.v1.Objects/Invoke", trace.SpanKindClient) // the forward
	server := one(exporters[1], "durable.v1.Objects/Invoke", trace.SpanKindServer)
	event := one(exporters[1], "durable.event", trace.SpanKindInternal)
	require.Equal(t, server.SpanContext.SpanID(), event.Parent.SpanID(), "the event runs under the owner's server span")
	c.WaitFor("the commit's span", func() bool { return linked(spansNamed(exporters[1], "durable.commit"), event.SpanContext) })
	for _, s := range spansNamed(exporters[1], "durable.commit") {
		if linked([]tracetest.SpanStub{s}, event.SpanContext) {
			require.Equal(t, traceID, s.SpanContext.TraceID(), "the commit is in the trace of the first event it carries")
		}
	}

	// An alarm run: a trace of its own, its commit linked to it.
	_, err = cl.Invoke(context.Background(), "Reminder", client.ByName(name), "set", []byte(`{"message":"x","in":"1ms"}`))
	require.NoError(t, err)
	var alarm tracetest.SpanStub
	c.WaitFor("the alarm's span", func() bool {
		for _, e := range exporters {
			if s := spansNamed(e, "durable.alarm"); len(s) > 0 {
				alarm = s[0]
				return linked(spansNamed(e, "durable.commit"), alarm.SpanContext)
			}
		}
		return false
	})
	require.False(t, alarm.Parent.IsValid(), "an alarm run is a root span")
}

// linked reports whether one of spans links to sc.
func linked(spans []tracetest.SpanStub, sc trace.SpanContext) bool {
	for _, s := range spans {
		for _, l := range s.Links {
			if l.SpanContext.SpanID() == sc.SpanID() && l.SpanContext.TraceID() == sc.TraceID() {
				return true
			}
		}
	}
	return false
}
