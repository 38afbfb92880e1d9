package client

import (
	"context"
	"fmt"

	"github.com/durable-run/durable"
)

// Call invokes the typed method m of an object: it encodes req with m's
// request codec, calls Invoke (with its retries and request id) and decodes
// the reply with m's reply codec — the codec rules of durable.Method,
// protobuf for proto.Message types and JSON otherwise, the same on both
// sides because both use the one declaration.
//
// Errors are Invoke's (gRPC statuses: an unknown method is Unimplemented,
// a payload the object cannot decode InvalidArgument with reason
// BAD_PAYLOAD, the handler's own error is marked by IsObjectError). A
// request that cannot be encoded is not sent; a reply that cannot be
// decoded is an error after the call ran.
func Call[Req, Resp any](ctx context.Context, c *Client, class string, ref Ref, m durable.Method[Req, Resp], req Req) (Resp, error) {
	var zero Resp
	payload, err := m.EncodeRequest(req)
	if err != nil {
		return zero, fmt.Errorf("client: encode the request of %s.%s: %w", class, m.Name(), err)
	}
	resp, err := c.Invoke(ctx, class, ref, m.Name(), payload)
	if err != nil {
		return zero, err
	}
	out, err := m.DecodeReply(resp.GetPayload())
	if err != nil {
		return zero, fmt.Errorf("client: decode the reply of %s.%s (the call ran): %w", class, m.Name(), err)
	}
	return out, nil
}

// Stub is one object seen from the client: typed stubs are built on it with
// Bind, so a class's client is a struct of bound methods:
//
//	type CounterStub struct {
//		Increment func(context.Context, *int64) (examples.CounterValue, error)
//		Get       func(context.Context, struct{}) (examples.CounterValue, error)
//	}
//
//	func NewCounterStub(c *client.Client, ref client.Ref) CounterStub {
//		s := c.Stub("Counter", ref)
//		return CounterStub{
//			Increment: client.Bind(s, examples.CounterIncrement),
//			Get:       client.Bind(s, examples.CounterGet),
//		}
//	}
type Stub struct {
	client *Client
	class  string
	ref    Ref
}

// Stub returns the stub of the object ref of class.
func (c *Client) Stub(class string, ref Ref) Stub { return Stub{client: c, class: class, ref: ref} }

// Bind returns a function that calls m on s's object (Call).
func Bind[Req, Resp any](s Stub, m durable.Method[Req, Resp]) func(ctx context.Context, req Req) (Resp, error) {
	return func(ctx context.Context, req Req) (Resp, error) {
		return Call(ctx, s.client, s.class, s.ref, m, req)
	}
}
