package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// maxHops bounds how often one invocation is forwarded between nodes; views
// that disagree for a moment cannot bounce a call forever.
const maxHops = 3

// hopsHeader carries the number of forwards so far.
const hopsHeader = "durable-hops"

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
	local   bool
	addr    string        // the owner's address, when another node owns p
	changed chan struct{} // closed when the view changes
}

func (n *Node) route(p int) route {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := route{changed: n.changed}
	if part := n.owned[p]; part != nil && !part.handoff && !n.stopping {
		r.local = true
		return r
	}
	if o, ok := n.owners[p]; ok && o.Node != n.cfg.ID {
		if ni, ok := n.nodes[o.Node]; ok {
			r.addr = ni.Address
		}
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
	class, id, err := n.resolve(className, ref)
	if err != nil {
		return Result{}, err
	}
	if n.PartitionCount() == 0 {
		return Result{}, fmt.Errorf("%w: node is starting", durable.ErrUnavailable)
	}
	p := n.partitionOf(id)
	// Every call carries a request id, so that retries here (a forward
	// cut mid-call, an owner that vanished) and by the caller cannot apply
	// it twice.
	if requestIDFrom(ctx) == "" {
		ctx = WithRequestID(ctx, NewRequestID())
	}
	for {
		if err := n.gate(ctx); err != nil {
			return Result{}, err
		}
		if !n.leaseValid() {
			return Result{}, fmt.Errorf("%w: node %s cannot confirm its lease", durable.ErrUnavailable, n.cfg.ID)
		}
		r := n.route(p)
		var retry bool
		switch {
		case r.local:
			res, err := n.invokeLocal(ctx, class, id, p, ref.Name, method, payload)
			// Ownership lost before or while the event ran: nothing was
			// committed (the fenced Txn failed or never ran), so the call
			// follows the partition to its next owner.
			if !errors.Is(err, durable.ErrOwnershipLost) {
				return res, err
			}
			retry = true
		case r.addr != "" && hops < maxHops:
			res, err := n.forward(ctx, r.addr, hops+1, class.Name, ref, id, method, payload)
			if err == nil || !retryableRemote(err) {
				return res, err
			}
			retry = true
		case hops >= maxHops:
			return Result{}, fmt.Errorf("%w: partition %d is not owned here after %d forwards", durable.ErrUnavailable, p, hops)
		}
		// Wait for the view to change (a new owner) or, after a failed
		// attempt, briefly, since the view may already be current.
		if err := waitView(ctx, r.changed, retry); err != nil {
			return Result{}, fmt.Errorf("%w: partition %d has no reachable owner: %w", durable.ErrUnavailable, p, err)
		}
	}
}

// waitView waits until changed is closed or ctx ends; after a failed attempt
// (retry) at most 20 ms, since the view may already be current.
func waitView(ctx context.Context, changed <-chan struct{}, retry bool) error {
	var pause <-chan time.Time
	if retry {
		t := time.NewTimer(20 * time.Millisecond)
		defer t.Stop()
		pause = t.C
	}
	select {
	case <-changed:
	case <-pause:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// invokeLocal runs the invocation on this node's object.
func (n *Node) invokeLocal(ctx context.Context, class Class, id durable.ID, p int, name, method string, payload []byte) (Result, error) {
	c := &call{ctx: ctx, method: method, payload: payload, name: name, rid: requestIDFrom(ctx), reply: make(chan callResult, 1)}
	n.mu.Lock()
	o := n.objectLocked(class, id, p)
	if o == nil {
		n.mu.Unlock()
		return Result{}, fmt.Errorf("%w: partition %d is not served here", durable.ErrOwnershipLost, p)
	}
	c.seq = o.arrivals.Add(1)
	select {
	case o.mailbox <- c:
	default:
		n.mu.Unlock()
		return Result{}, fmt.Errorf("%w: %d events already queued for %s/%s", durable.ErrOverloaded, n.cfg.QueueSize, class.Name, id)
	}
	n.wakeLocked(o)
	n.mu.Unlock()
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
	ctx = metadata.AppendToOutgoingContext(ctx, hopsHeader, strconv.Itoa(hops))
	obj := &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Id{Id: id.String()}}
	if ref.Name != "" {
		obj.Ref = &durablev1.ObjectRef_Name{Name: ref.Name}
	}
	resp, err := durablev1.NewObjectsClient(conn).Invoke(ctx, &durablev1.InvokeRequest{
		Class: class, Object: obj, Method: method, Payload: payload, RequestId: requestIDFrom(ctx),
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Payload: resp.GetPayload(), ID: id, Owner: resp.GetOwner()}, nil
}

// retryableRemote reports whether a forwarded call failed in a way that
// means "try the partition's next owner": the peer was unreachable or said
// it does not own the partition. An unreachable peer may have run the call
// before the connection broke; its request id makes the retry return that
// run's reply instead of running again.
func retryableRemote(err error) bool {
	if errors.Is(err, durable.ErrUnavailable) {
		return true
	}
	d := client.Detail(err)
	if d == nil {
		return status.Code(err) == codes.Unavailable
	}
	return d.GetRetryable() && (d.GetReason() == "OWNERSHIP_LOST" || d.GetReason() == "UNAVAILABLE")
}

// hopsFrom reads the forward count of an incoming call.
func hopsFrom(ctx context.Context) int {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(hopsHeader); len(v) > 0 {
		if h, err := strconv.Atoi(v[0]); err == nil && h >= 0 {
			return h
		}
	}
	return 0
}

// peerConns caches gRPC connections to other nodes.
type peerConns struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (pc *peerConns) get(addr string) (*grpc.ClientConn, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if c, ok := pc.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
