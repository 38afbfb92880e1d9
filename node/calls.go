package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/durable-run/durable"
)

// Calls between objects (State.Objects).
//
// A handler's call to another object is an ordinary invocation through
// Node.invoke — local or forwarded to the owner — with two additions:
//
//   - Its request id is derived from the calling event (callBase) and the
//     call's position in it, so a retried event sends the same ids and each
//     callee applies its call once (dedup.go).
//   - It carries the call path, the objects whose events wait on it, in the
//     context and, across nodes, in the durable-call-path header. A call to
//     an object on the path would wait for its own event: it is refused
//     with ErrCallCycle before anything runs.

// callPathHeader carries the call path between nodes, one value per object
// ("class/id"), the first caller first. The security guard reserves
// durable-* headers to nodes, so a client cannot forge it.
const callPathHeader = "durable-call-path"

// maxCallDepth bounds how many objects one chain of calls may pass through.
const maxCallDepth = 16

// invoker is how an object reaches other objects: the node's call path.
type invoker interface {
	invoke(ctx context.Context, hops int, className string, ref Ref, method string, payload []byte) (Result, error)
}

type callPathKey struct{}

// withCallPath returns ctx carrying the call path.
func withCallPath(ctx context.Context, path []string) context.Context {
	return context.WithValue(ctx, callPathKey{}, path)
}

// callPathFrom returns the call path ctx carries (nil: a call from outside).
func callPathFrom(ctx context.Context) []string {
	p, _ := ctx.Value(callPathKey{}).([]string)
	return p
}

// incomingCallPath reads the call path of an incoming call from its header;
// a path longer than any a node sends is cut, which can only make a cycle
// refused later (by the deadline) rather than run.
func incomingCallPath(ctx context.Context) []string {
	p := metadata.ValueFromIncomingContext(ctx, callPathHeader)
	if len(p) > maxCallDepth {
		p = p[:maxCallDepth]
	}
	return p
}

// outgoingCallPath puts ctx's call path into the header of a forward.
func outgoingCallPath(ctx context.Context) context.Context {
	p := callPathFrom(ctx)
	if len(p) == 0 {
		return ctx
	}
	kv := make([]string, 0, 2*len(p))
	for _, e := range p {
		kv = append(kv, callPathHeader, e)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// pathEntry names an object on a call path.
func pathEntry(class string, id durable.ID) string { return class + "/" + id.String() }

// callOrigin is what identifies an event across its retries: an
// invocation's request id or an alarm's scheduled time. The zero value is
// a runtime event's. The base of the calls' request ids is made of it only
// when the event makes a call: most events make none.
type callOrigin struct {
	kind      string // "invoke" or "alarm"; "": no identity across retries
	rid       string // invoke: the request id
	scheduled int64  // alarm: the scheduled time, Unix milliseconds
}

// base returns the base of the request ids of the calls of an event of
// class/id with this origin.
func (c callOrigin) base(class string, id durable.ID) string {
	switch c.kind {
	case "":
		// An event with no identity across retries (a runtime event): its
		// calls get fresh ids.
		return NewRequestID()
	case "alarm":
		return callBase(class, id, c.kind, strconv.FormatInt(c.scheduled, 10))
	default:
		return callBase(class, id, c.kind, c.rid)
	}
}

// callBase identifies an event for the request ids of its calls: the
// object, the kind of event and what identifies the event across its
// retries (an invocation's request id, an alarm's scheduled time).
func callBase(class string, id durable.ID, kind, ident string) string {
	return strings.Join([]string{class, id.String(), kind, ident}, "\x00")
}

// callRequestID is the request id of the seq-th call (from 1) of the event
// with base.
func callRequestID(base string, seq int) string {
	sum := sha256.Sum256([]byte(base + "\x00" + strconv.Itoa(seq)))
	return "call-" + hex.EncodeToString(sum[:16])
}

// objectCalls implements durable.Objects for one instance of an object.
type objectCalls struct {
	o *object
	h *storageHandle
}

func (oc *objectCalls) Call(ctx context.Context, class, name, method string, payload []byte) ([]byte, error) {
	if name == "" {
		return nil, durable.Invalidf("object name is required")
	}
	return oc.call(ctx, class, Ref{Name: name}, method, payload)
}

func (oc *objectCalls) CallID(ctx context.Context, class string, id durable.ID, method string, payload []byte) ([]byte, error) {
	return oc.call(ctx, class, Ref{ID: id.String()}, method, payload)
}

// call checks the call against the call path, numbers it in the calling
// event and invokes it through the node. Cancelling ctx (the handler's, with
// the caller's deadline) abandons the call as it abandons any invocation.
func (oc *objectCalls) call(ctx context.Context, class string, ref Ref, method string, payload []byte) ([]byte, error) {
	o := oc.o
	id, err := ResolveID(class, ref)
	if err != nil {
		return nil, err
	}
	self, target := pathEntry(o.class.Name, o.id), pathEntry(class, id)
	if target == self {
		return nil, fmt.Errorf("%w: %s %s called itself", durable.ErrCallCycle, o.class.Name, o.id)
	}
	path := callPathFrom(ctx)
	if slices.Contains(path, target) {
		return nil, fmt.Errorf("%w: %s %s called %s %s, which waits on it", durable.ErrCallCycle, o.class.Name, o.id, class, id)
	}
	if len(path) >= maxCallDepth {
		return nil, durable.Invalidf("a chain of calls between objects may pass through at most %d objects", maxCallDepth)
	}
	rid, err := oc.h.nextCallID()
	if err != nil {
		return nil, err
	}
	ctx = WithRequestID(ctx, rid)
	ctx = withCallPath(ctx, append(slices.Clip(path), self))
	res, err := o.env.calls.invoke(ctx, 0, class, ref, method, payload)
	return res.Payload, err
}

// nextCallID numbers a call in the event in progress and returns its
// request id.
func (h *storageHandle) nextCallID() (string, error) {
	pl, tx, err := h.lock()
	if err != nil {
		return "", err
	}
	defer pl.mu.Unlock()
	if tx.callBase == "" {
		tx.callBase = tx.origin.base(pl.o.class.Name, pl.o.id)
	}
	tx.calls++
	return callRequestID(tx.callBase, tx.calls), nil
}
