package durable

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
)

// Typed methods.
//
// Object.Invoke sees a method name and bytes, so an untyped class hand-writes
// a switch, the decoding of every payload and, on the client side, a stub. A
// Method declares one method once — its name and its request and reply types
// — and both sides use the declaration: the class routes to a typed handler
// with Handle and Methods, the Go client calls it with client.Call.
//
//	var CounterIncrement = durable.NewMethod[*int64, CounterValue]("increment")
//
//	c.Router = durable.Methods(durable.Handle(CounterIncrement, c.increment))
//
//	v, err := client.Call(ctx, cl, "Counter", client.ByName("c"), CounterIncrement, &delta)
//
// Codecs. The payload's encoding is a property of the declaration, not of the
// call (InvokeRequest carries no content type): a type that implements
// proto.Message (a generated message pointer, such as
// *wrapperspb.StringValue) is protobuf binary; any other type is JSON
// (encoding/json). An empty payload decodes to the zero value under JSON (so
// a pointer request type tells "no payload" apart) and to an empty message
// under protobuf. NewMethod(…).WithCodecs replaces the defaults.
//
// Errors. A name the router does not know fails with ErrUnknownMethod (gRPC
// Unimplemented, reason UNKNOWN_METHOD) unless the router has a fallback; a
// payload its codec cannot decode fails with ErrBadPayload (InvalidArgument,
// reason BAD_PAYLOAD). Neither is the object's own error and neither reaches
// the handler. An error the handler returns is the object's own error, as
// with Invoke; a reply the codec cannot encode is too (the class's bug, not
// the caller's).

// Codec encodes and decodes the values of one type.
type Codec[T any] interface {
	Marshal(v T) ([]byte, error)
	Unmarshal(data []byte) (T, error)
}

// DefaultCodec is T's codec: protobuf binary when T implements proto.Message,
// JSON otherwise.
func DefaultCodec[T any]() Codec[T] {
	var zero T
	if _, ok := any(zero).(proto.Message); ok {
		return protoCodec[T]{}
	}
	return JSONCodec[T]{}
}

// JSONCodec encodes with encoding/json. An empty payload decodes to T's zero
// value.
type JSONCodec[T any] struct{}

func (JSONCodec[T]) Marshal(v T) ([]byte, error) { return json.Marshal(v) }

func (JSONCodec[T]) Unmarshal(data []byte) (T, error) {
	var v T
	if len(data) == 0 {
		return v, nil
	}
	err := json.Unmarshal(data, &v)
	return v, err
}

// protoCodec encodes a proto.Message T (a generated message pointer) in the
// protobuf binary format.
type protoCodec[T any] struct{}

func (protoCodec[T]) Marshal(v T) ([]byte, error) {
	return proto.Marshal(any(v).(proto.Message))
}

func (protoCodec[T]) Unmarshal(data []byte) (T, error) {
	var zero T
	// A generated message answers ProtoReflect on a nil pointer, which is
	// how a fresh message of T's type is made without reflection on T.
	m := any(zero).(proto.Message).ProtoReflect().Type().New().Interface()
	if err := proto.Unmarshal(data, m); err != nil {
		return zero, err
	}
	return m.(T), nil
}

// Method declares a typed method: its name and the codecs of its request and
// reply. Declare it once (a package-level variable) and share it between the
// class, which handles it (Handle), and its callers (client.Call).
type Method[Req, Resp any] struct {
	name string
	req  Codec[Req]
	resp Codec[Resp]
}

// NewMethod declares the method name with Req and Resp's default codecs.
func NewMethod[Req, Resp any](name string) Method[Req, Resp] {
	return Method[Req, Resp]{name: name, req: DefaultCodec[Req](), resp: DefaultCodec[Resp]()}
}

// WithCodecs returns m with its request and reply codecs replaced (a nil one
// is left as it was).
func (m Method[Req, Resp]) WithCodecs(req Codec[Req], resp Codec[Resp]) Method[Req, Resp] {
	if req != nil {
		m.req = req
	}
	if resp != nil {
		m.resp = resp
	}
	return m
}

// Name is the method's name on the wire.
func (m Method[Req, Resp]) Name() string { return m.name }

// EncodeRequest encodes a request of m (for a client).
func (m Method[Req, Resp]) EncodeRequest(req Req) ([]byte, error) { return m.codecs().req.Marshal(req) }

// DecodeReply decodes a reply of m (for a client).
func (m Method[Req, Resp]) DecodeReply(data []byte) (Resp, error) {
	return m.codecs().resp.Unmarshal(data)
}

// codecs fills the defaults into a zero Method (declared without NewMethod).
func (m Method[Req, Resp]) codecs() Method[Req, Resp] {
	if m.req == nil {
		m.req = DefaultCodec[Req]()
	}
	if m.resp == nil {
		m.resp = DefaultCodec[Resp]()
	}
	return m
}

// Route is a method bound to its handler, ready for Methods.
type Route struct {
	name   string
	invoke func(ctx context.Context, payload []byte) ([]byte, error)
}

// Handle binds m to handler h. The payload is decoded before h runs (an
// undecodable one fails with ErrBadPayload and h does not run); h's reply is
// encoded with m's reply codec.
func Handle[Req, Resp any](m Method[Req, Resp], h func(ctx context.Context, req Req) (Resp, error)) Route {
	m = m.codecs()
	return Route{name: m.name, invoke: func(ctx context.Context, payload []byte) ([]byte, error) {
		req, err := m.req.Unmarshal(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: method %q: %v", ErrBadPayload, m.name, err)
		}
		resp, err := h(ctx, req)
		if err != nil {
			return nil, err
		}
		out, err := m.resp.Marshal(resp)
		if err != nil {
			// Not %w: the class's reply type is at fault, and a codec's
			// error must not pass for a runtime sentinel.
			return nil, fmt.Errorf("encode the reply of %q: %v", m.name, err)
		}
		return out, nil
	}}
}

// Router implements Object.Invoke by routing on the method name to the
// handlers bound with Handle. Embed it (a *Router built in the factory, with
// handlers bound to the instance) or call its Invoke from a class's own.
//
// A Router is read-only once built, so one instance may serve concurrent
// calls; the runtime delivers one event at a time anyway.
type Router struct {
	// routes, sorted by name: a factory builds a Router per instance, and
	// a sorted slice is a fraction of a map's memory for a class's few
	// methods (what every parked object of the class holds).
	routes   []Route
	fallback func(ctx context.Context, method string, payload []byte) ([]byte, error)
}

// Methods builds a Router over routes. An empty or repeated name is a
// programming error in the class's declaration and panics, as
// http.ServeMux does for a repeated pattern: it shows at the first activation
// in any test.
func Methods(routes ...Route) *Router {
	r := &Router{routes: slices.Clone(routes)}
	for _, rt := range routes {
		if rt.name == "" || rt.invoke == nil {
			panic("durable: Methods: a route without a name or handler (use Handle)")
		}
	}
	slices.SortFunc(r.routes, func(a, b Route) int { return strings.Compare(a.name, b.name) })
	for i := 1; i < len(r.routes); i++ {
		if r.routes[i].name == r.routes[i-1].name {
			panic(fmt.Sprintf("durable: Methods: method %q declared twice", r.routes[i].name))
		}
	}
	return r
}

// Fallback sets the handler of the names r does not route (a class that
// mixes typed methods with untyped ones) and returns r. Without one, an
// unknown name fails with ErrUnknownMethod.
func (r *Router) Fallback(invoke func(ctx context.Context, method string, payload []byte) ([]byte, error)) *Router {
	r.fallback = invoke
	return r
}

// Invoke implements Object.
func (r *Router) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	if i, ok := slices.BinarySearchFunc(r.routes, method, func(rt Route, name string) int { return strings.Compare(rt.name, name) }); ok {
		return r.routes[i].invoke(ctx, payload)
	}
	if r.fallback != nil {
		return r.fallback(ctx, method, payload)
	}
	if len(r.routes) == 0 {
		return nil, fmt.Errorf("%w %q", ErrUnknownMethod, method)
	}
	return nil, fmt.Errorf("%w %q (the class has %s)", ErrUnknownMethod, method, strings.Join(r.Names(), ", "))
}

// Names lists the routed method names, sorted.
func (r *Router) Names() []string {
	names := make([]string, len(r.routes))
	for i, rt := range r.routes {
		names[i] = rt.name
	}
	return names
}

// CallObject calls the typed method m on the object of class named name,
// from an event of the calling object (objs is its State.Objects()). See
// Objects for the deadline, the request ids and the refusal of call cycles.
func CallObject[Req, Resp any](ctx context.Context, objs Objects, class, name string, m Method[Req, Resp], req Req) (Resp, error) {
	var zero Resp
	payload, err := m.EncodeRequest(req)
	if err != nil {
		return zero, fmt.Errorf("encode the request of %q: %v", m.name, err)
	}
	out, err := objs.Call(ctx, class, name, m.name, payload)
	if err != nil {
		return zero, err
	}
	resp, err := m.DecodeReply(out)
	if err != nil {
		return zero, fmt.Errorf("decode the reply of %q: %v", m.name, err)
	}
	return resp, nil
}
