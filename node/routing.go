package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// maxHops bounds how often one invocation is forwarded between nodes; views
// that disagree for a moment cannot bounce a call forever.
const maxHops = 3

// hopsHeader carries the number of forwards so far.
const hopsHeader = "durable-hops"

// Ref addresses an object: by Name, or by ID in hex. Location, with a
// name, is a location hint (durable.WithLocation).
type Ref struct {
	Name     string
	ID       string
	Location string
}

// Resolve validates class and ref and returns the class, which this node
// must serve, and the object's ID.
func (n *Node) Resolve(className string, ref Ref) (Class, durable.ID, error) {
	class, err := n.reg.Lookup(className)
	if err != nil {
		return Class{}, durable.ID{}, err
	}
	id, err := n.ResolveID(className, ref)
	return class, id, err
}

// ResolveID is ResolveIDIn the node's layout.
func (n *Node) ResolveID(className string, ref Ref) (durable.ID, error) {
	return ResolveIDIn(n.layout, className, ref)
}

// ResolveIDIn is ResolveID checked against a cluster's layout: a location
// hint, given with a name or made into an ID, must name a data center
// partitions are homed in.
func ResolveIDIn(layout durable.Layout, className string, ref Ref) (durable.ID, error) {
	if err := layout.CheckLocation(ref.Location); err != nil {
		return durable.ID{}, err
	}
	id, err := ResolveID(className, ref)
	if err != nil {
		return id, err
	}
	if ref.ID != "" {
		// Only an ID can carry a hint for an unknown data center.
		if err := layout.Check(className, id); err != nil {
			return durable.ID{}, err
		}
	}
	return id, nil
}

// ResolveID validates ref and returns the object's ID, whether this node
// serves the class or not: a node routes calls for classes it does not
// serve (the leaders keep it out of assignment when it lacks a class the
// cluster requires), and the owner says whether the class exists.
func ResolveID(className string, ref Ref) (durable.ID, error) {
	if !classNameRE.MatchString(className) {
		return durable.ID{}, fmt.Errorf("%w: %q", durable.ErrUnknownClass, truncate(className))
	}
	switch {
	case ref.Name != "" && ref.ID != "":
		return durable.ID{}, durable.Invalidf("give an object name or an id, not both")
	case ref.ID != "" && ref.Location != "":
		return durable.ID{}, durable.Invalidf("a location hint goes with a name: an id carries its own")
	case ref.ID != "":
		return durable.IDFromString(className, ref.ID)
	case len(ref.Name) > durable.MaxNameBytes:
		return durable.ID{}, durable.Invalidf("object name of %d bytes exceeds the limit of %d", len(ref.Name), durable.MaxNameBytes)
	case ref.Name != "":
		return durable.IDFromName(className, ref.Name, durable.WithLocation(ref.Location)), nil
	default:
		return durable.ID{}, durable.Invalidf("object name or id is required")
	}
}

// maxMethodBytes bounds a method name.
const maxMethodBytes = 256

// truncate shortens user input quoted in an error message.
func truncate(s string) string {
	const most = 64
	if len(s) <= most {
		return s
	}
	return s[:most] + "…"
}

// Result is the reply to an invocation.
type Result struct {
	Payload []byte
	ID      durable.ID
	// Owner is the address of the node that ran the invocation.
	Owner string
}

// Invoke delivers an invocation to an object — here if this node owns its
// partition, otherwise forwarded to the owner — and waits for its reply,
// which is released only after the invocation's writes are durable. While the
// partition is between owners the call waits, within ctx, for the next one.
// Cancelling ctx abandons the wait; if the handler is still running the
// object is reset.
func (n *Node) Invoke(ctx context.Context, className string, ref Ref, method string, payload []byte) (Result, error) {
	return n.invoke(ctx, 0, className, ref, method, payload)
}

// route is where an invocation of partition p goes now.
type route struct {
	local bool
	addr  string // the owner's address, when another node owns p
	// changed and viewChanged are closed when the served partitions or the
	// cluster view change.
	changed, viewChanged <-chan struct{}
}

// route looks p up. The channels are taken before the state they guard, so
// a change after the look-up always closes one of them.
func (n *Node) route(p int) route {
	r := route{viewChanged: n.member.Changed()}
	r.local, r.changed = n.tab.local(p)
	if !r.local {
		r.addr = n.member.OwnerAddr(p)
	}
	return r
}

// ownerAddr is the address of p's owner as far as this node knows.
func (n *Node) ownerAddr(p int) string {
	if r := n.route(p); r.local {
		return n.cfg.Advertise
	} else {
		return r.addr
	}
}

func (n *Node) invoke(ctx context.Context, hops int, className string, ref Ref, method string, payload []byte) (Result, error) {
	if method == "" {
		return Result{}, durable.Invalidf("method is required")
	}
	if len(method) > maxMethodBytes {
		return Result{}, durable.Invalidf("method name of %d bytes exceeds the limit of %d", len(method), maxMethodBytes)
	}
	id, err := n.ResolveID(className, ref)
	if err != nil {
		return Result{}, err
	}
	p := n.partitionOf(id)
	// Every call carries a request id, so that retries here (a forward
	// cut mid-call, an owner that vanished) and by the caller cannot apply
	// it twice.
	if requestIDFrom(ctx) == "" {
		ctx = WithRequestID(ctx, NewRequestID())
	}
	for {
		if err := n.member.Gate(ctx); err != nil {
			return Result{}, err
		}
		if !n.member.LeaseValid() {
			return Result{}, n.env.unconfirmed
		}
		r := n.route(p)
		var retry bool
		switch {
		case r.local:
			class, err := n.reg.Lookup(className)
			if err != nil {
				return Result{}, err
			}
			res, err := n.invokeLocal(ctx, class, id, p, ref.Name, method, payload)
			// Ownership lost before or while the event ran: nothing was
			// committed (the fenced Txn failed or never ran), so the call
			// follows the partition to its next owner.
			if !errors.Is(err, durable.ErrOwnershipLost) {
				return res, err
			}
			retry = true
		case r.addr != "" && hops < maxHops:
			res, err := n.forward(ctx, r.addr, hops+1, className, ref, id, method, payload)
			// The owner could not be reached or does not own p (any more):
			// nothing was applied there, or the request id makes the
			// retry return what was.
			if !errors.Is(err, durable.ErrUnavailable) && !errors.Is(err, durable.ErrOwnershipLost) {
				return res, err
			}
			retry = true
		case hops >= maxHops:
			return Result{}, fmt.Errorf("%w: partition %d is not owned here after %d forwards", durable.ErrUnavailable, p, hops)
		}
		// Wait for the view to change (a new owner) or, after a failed
		// attempt, briefly, since the view may already be current.
		if err := waitView(ctx, r, retry); err != nil {
			return Result{}, fmt.Errorf("%w: partition %d has no reachable owner: %w", durable.ErrUnavailable, p, err)
		}
	}
}

// waitView waits until r's view changes or ctx ends; after a failed attempt
// (retry) at most 20 ms, since the view may already be current.
func waitView(ctx context.Context, r route, retry bool) error {
	var pause <-chan time.Time
	if retry {
		t := time.NewTimer(20 * time.Millisecond)
		defer t.Stop()
		pause = t.C
	}
	select {
	case <-r.changed:
	case <-r.viewChanged:
	case <-pause:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// invokeLocal runs the invocation on this node's object.
func (n *Node) invokeLocal(ctx context.Context, class Class, id durable.ID, p int, name, method string, payload []byte) (res Result, err error) {
	m := n.cfg.Metrics
	if err := n.adm.enter(); err != nil {
		m.Refusals.WithLabelValues("OVERLOADED").Inc()
		return Result{}, err
	}
	admitted := time.Now()
	if m.Enabled() {
		defer func() {
			label := m.Method(class.Name, method)
			m.Invocations.WithLabelValues(class.Name, label, Code(err).String()).Inc()
			m.InvocationSeconds.WithLabelValues(class.Name, label).Observe(time.Since(admitted).Seconds())
		}()
	}
	c := &call{ctx: ctx, method: method, payload: payload, name: name, rid: requestIDFrom(ctx), reply: make(chan callResult, 1),
		release: func() { n.adm.leave(time.Since(admitted)) }}
	if err := n.tab.enqueue(n.env, class, id, p, c); err != nil {
		c.release()
		switch {
		case errors.Is(err, durable.ErrObjectBusy):
			m.Refusals.WithLabelValues("OBJECT_BUSY").Inc()
		case errors.Is(err, durable.ErrOverloaded):
			m.Refusals.WithLabelValues("OVERLOADED").Inc()
		}
		return Result{}, err
	}
	select {
	case r := <-c.reply:
		return Result{Payload: r.payload, ID: id, Owner: n.cfg.Advertise}, r.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// forward sends the invocation to the owner at addr. The caller's deadline
// travels with it, and so does a name, which the owner keeps for the object.
func (n *Node) forward(ctx context.Context, addr string, hops int, class string, ref Ref, id durable.ID, method string, payload []byte) (Result, error) {
	conn, err := n.peers.get(addr)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", durable.ErrUnavailable, err)
	}
	ctx = metadata.AppendToOutgoingContext(outgoingCallPath(ctx), hopsHeader, strconv.Itoa(hops))
	obj := &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Id{Id: id.String()}}
	if ref.Name != "" {
		// The owner needs the name (State.Name) and so its hint.
		obj.Ref, obj.Location = &durablev1.ObjectRef_Name{Name: ref.Name}, ref.Location
	}
	// The forward ends when the partition's owner changes away from addr
	// (a dead, frozen or cut-off owner loses its lease within a TTL, and its
	// owner key with it): the caller then follows the partition to its new
	// owner, the request id making the retry safe.
	var watch sync.WaitGroup
	defer watch.Wait() // runs after cancel below, which ends the watch
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := n.partitionOf(id)
	watch.Go(func() { n.cancelWhenMoved(fctx, cancel, p, addr) })
	if n.cfg.ForwardTimeout > 0 {
		var stop context.CancelFunc
		fctx, stop = context.WithTimeoutCause(fctx, n.cfg.ForwardTimeout, errForwardTimeout)
		defer stop()
	}
	sent := time.Now()
	resp, err := durablev1.NewObjectsClient(conn).Invoke(fctx, &durablev1.InvokeRequest{
		Class: class, Object: obj, Method: method, Payload: payload, RequestId: requestIDFrom(ctx),
	})
	if m := n.cfg.Metrics; m.Enabled() {
		m.ForwardSeconds.Observe(time.Since(sent).Seconds())
		m.Forwards.WithLabelValues(status.Code(err).String()).Inc()
	}
	if err != nil {
		if cause := context.Cause(fctx); ctx.Err() == nil && cause != nil {
			// Cut short here, not by the caller: the owner moved or the hop
			// ran out of time.
			return Result{}, fmt.Errorf("%w: forward to %s: %w", durable.ErrUnavailable, addr, cause)
		}
		return Result{}, FromStatus(err)
	}
	return Result{Payload: resp.GetPayload(), ID: id, Owner: resp.GetOwner()}, nil
}

var (
	errOwnerMoved     = errors.New("the partition's owner changed")
	errForwardTimeout = errors.New("the forward ran past its per-hop timeout")
)

// cancelWhenMoved cancels a forward to addr once p's owner, as the view
// knows it, is no longer at addr; it returns when ctx ends.
func (n *Node) cancelWhenMoved(ctx context.Context, cancel context.CancelCauseFunc, p int, addr string) {
	for {
		r := n.route(p)
		if r.local || r.addr != addr {
			cancel(errOwnerMoved)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-r.changed:
		case <-r.viewChanged:
		}
	}
}

// hopsFrom reads the forward count of an incoming call.
func hopsFrom(ctx context.Context) int {
	if v := metadata.ValueFromIncomingContext(ctx, hopsHeader); len(v) > 0 {
		if h, err := strconv.Atoi(v[0]); err == nil && h >= 0 {
			return h
		}
	}
	return 0
}

// Peer returns the node's connection to another node at addr (cached).
func (n *Node) Peer(addr string) (*grpc.ClientConn, error) { return n.peers.get(addr) }

// peerConns caches gRPC connections to other nodes.
type peerConns struct {
	creds credentials.TransportCredentials // nil: plaintext
	opts  []grpc.DialOption                // beyond the credentials (tracing)
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (pc *peerConns) get(addr string) (*grpc.ClientConn, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if c, ok := pc.conns[addr]; ok {
		return c, nil
	}
	creds := pc.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	c, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, pc.opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to peer %s: %w", addr, err)
	}
	if pc.conns == nil {
		pc.conns = map[string]*grpc.ClientConn{}
	}
	pc.conns[addr] = c
	return c, nil
}

func (pc *peerConns) closeAll() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for addr, c := range pc.conns {
		_ = c.Close()
		delete(pc.conns, addr)
	}
}
