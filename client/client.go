// Package client is the Go client of a durable cluster. It invokes objects
// over gRPC, learns each partition's owner from the replies and calls it
// directly (skipping the forwarding hop), and retries, with backoff, only the
// calls the server marked safe to retry (ErrorDetail.retryable): an error from
// the object's own handler, an overload or a commit of unknown outcome is
// returned at once.
package client

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// Options configures a Client.
type Options struct {
	// MaxAttempts bounds the tries of one call (default 8); the caller's
	// context bounds them in time.
	MaxAttempts int
	// BaseBackoff is the first retry delay (default 50 ms), doubled per
	// attempt up to MaxBackoff (default 2 s), with full jitter.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// NoDirect turns off calling owners directly: every call goes through
	// the seed addresses, which forward it. Use it when the nodes' advertised
	// addresses are not reachable from the client (e.g. behind NAT).
	NoDirect bool
	// DialOptions are added to the gRPC dials; the default is plaintext.
	DialOptions []grpc.DialOption
	// NoThrottle turns off client-side throttling: by default, while the
	// cluster refuses calls as overloaded, the client refuses a share of
	// new calls itself, without sending them (see throttle.go).
	NoThrottle bool
}

// unreachableFor is how long an owner address that could not be reached is
// skipped in favour of the seeds.
const unreachableFor = 5 * time.Second

// Client talks to one cluster. Calls go to the owner of the object's
// partition when the client has learned it from an earlier reply, otherwise
// to the seed addresses, which forward them. A Client is safe for concurrent
// use.
type Client struct {
	seeds    *grpc.ClientConn
	objects  durablev1.ObjectsClient
	admin    durablev1.AdminClient
	opts     Options
	dial     []grpc.DialOption
	throttle *throttle // nil with NoThrottle

	mu          sync.Mutex
	partitions  int            // the cluster's partition count, once learned
	homes       []string       // the cluster's home data centers, once a reply names them
	layout      durable.Layout // how IDs map to partitions (located ones once homes are known)
	owners      map[int]string // partition → owner address
	direct      map[string]*grpc.ClientConn
	unreachable map[string]time.Time // owner address → skip until
}

// Dial connects to a cluster through target: one node address (host:port) or
// several separated by commas, tried in order when one is down.
func Dial(target string, opts Options) (*Client, error) {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 8
	}
	if opts.BaseBackoff <= 0 {
		opts.BaseBackoff = 50 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 2 * time.Second
	}
	var addrs []resolver.Address
	for _, a := range strings.Split(target, ",") {
		if a = strings.TrimSpace(a); a != "" {
			// Over TLS, each seed's certificate is checked against its own
			// host (the channel's authority is "seeds").
			host, _, err := net.SplitHostPort(a)
			if err != nil {
				host = a
			}
			addrs = append(addrs, resolver.Address{Addr: a, ServerName: host})
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("client: no address in %q", target)
	}
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts.DialOptions...)
	seedTarget, seedDial := addrs[0].Addr, dial
	if len(addrs) > 1 {
		// pick_first over every seed: when the connected one fails, the
		// next call connects to another.
		r := manual.NewBuilderWithScheme("durable-seeds")
		r.InitialState(resolver.State{Addresses: addrs})
		seedTarget, seedDial = r.Scheme()+":///seeds", append(slices.Clip(dial), grpc.WithResolvers(r))
	}
	conn, err := grpc.NewClient(seedTarget, seedDial...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", target, err)
	}
	c := &Client{
		seeds: conn, opts: opts, dial: dial,
		objects:     durablev1.NewObjectsClient(conn),
		admin:       durablev1.NewAdminClient(conn),
		owners:      map[int]string{},
		direct:      map[string]*grpc.ClientConn{},
		unreachable: map[string]time.Time{},
	}
	if !opts.NoThrottle {
		c.throttle = newThrottle()
	}
	return c, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	errs := []error{c.seeds.Close()}
	for addr, conn := range c.direct {
		errs = append(errs, conn.Close())
		delete(c.direct, addr)
	}
	return errors.Join(errs...)
}

// Conn returns the connection to the seeds, e.g. for the health service.
func (c *Client) Conn() *grpc.ClientConn { return c.seeds }

// Admin returns the Admin service client (through the seeds).
func (c *Client) Admin() durablev1.AdminClient { return c.admin }

// Ref addresses an object by name or by ID.
type Ref = *durablev1.ObjectRef

// ByName refers to the object of a class named name.
func ByName(name string) Ref { return &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: name}} }

// ByNameIn refers to the object of a class named name homed in data center
// dc (a location hint, part of the object's identity: durable.WithLocation).
func ByNameIn(name, dc string) Ref {
	return &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: name}, Location: dc}
}

// ByID refers to an object by its 64-hex-digit ID.
func ByID(id string) Ref { return &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Id{Id: id}} }

// Invoke calls method on an object and returns its reply. It retries what the
// server marked safe to retry, and moves to another node when one cannot be
// reached. Every attempt carries the same fresh request id, so a retry of a
// call that did run (its reply lost with a connection) returns that run's
// reply instead of running again.
func (c *Client) Invoke(ctx context.Context, class string, ref Ref, method string, payload []byte) (*durablev1.InvokeResponse, error) {
	req := &durablev1.InvokeRequest{Class: class, Object: ref, Method: method, Payload: payload, RequestId: newRequestID()}
	p := c.partitionOf(class, ref)
	// Only a new call may be refused here: the retries of one that was
	// sent are not.
	if c.throttle != nil && !c.throttle.allow() {
		return nil, errThrottled()
	}
	var resp *durablev1.InvokeResponse
	err := c.retry(ctx, func(ctx context.Context) (bool, error) {
		addr, objects := c.route(p)
		var err error
		resp, err = objects.Invoke(ctx, req)
		if c.throttle != nil {
			c.throttle.done(!overloaded(err))
		}
		if err == nil {
			c.learn(resp)
			return false, nil
		}
		if d := Detail(err); d != nil && d.GetOwnerAddress() != "" && p >= 0 {
			c.setOwner(p, d.GetOwnerAddress())
		}
		if addr != "" && status.Code(err) == codes.Unavailable && Detail(err) == nil {
			// The owner we called directly is gone: go through the seeds
			// at once.
			c.markUnreachable(addr)
			return true, err
		}
		return false, err
	})
	return resp, err
}

func newRequestID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// partitionOf returns the object's partition, or -1 when the client does not
// know the partition count yet or the reference is malformed (the server will
// say why).
func (c *Client) partitionOf(class string, ref Ref) int {
	c.mu.Lock()
	count, layout := c.partitions, c.layout
	c.mu.Unlock()
	if count <= 0 || c.opts.NoDirect {
		return -1
	}
	var id durable.ID
	var err error
	switch {
	case ref.GetName() != "":
		id = durable.IDFromName(class, ref.GetName(), durable.WithLocation(ref.GetLocation()))
	case ref.GetId() != "":
		id, err = durable.IDFromString(class, ref.GetId())
	default:
		return -1
	}
	if err != nil {
		return -1
	}
	// Until a reply names the homes, a located ID maps as any other: the
	// call goes to a wrong owner once and is forwarded.
	return layout.Partition(id)
}

// route returns where a call of partition p goes: its owner's address and
// connection if known and reachable, otherwise "" and the seeds.
func (c *Client) route(p int) (string, durablev1.ObjectsClient) {
	c.mu.Lock()
	defer c.mu.Unlock()
	addr, ok := c.owners[p]
	if !ok || p < 0 {
		return "", c.objects
	}
	if until, bad := c.unreachable[addr]; bad {
		if time.Now().Before(until) {
			return "", c.objects
		}
		delete(c.unreachable, addr)
	}
	conn, ok := c.direct[addr]
	if !ok {
		var err error
		if conn, err = grpc.NewClient(addr, c.dial...); err != nil {
			c.unreachable[addr] = time.Now().Add(unreachableFor)
			return "", c.objects
		}
		c.direct[addr] = conn
	}
	return addr, durablev1.NewObjectsClient(conn)
}

// learn remembers the owner named in a reply.
func (c *Client) learn(resp *durablev1.InvokeResponse) {
	if c.opts.NoDirect || resp.GetOwner() == "" || resp.GetPartitionCount() <= 0 {
		return
	}
	c.mu.Lock()
	// A reply names the homes only for a located object; a new partition
	// count is a new cluster, whose homes are not known yet.
	if n, homes := int(resp.GetPartitionCount()), resp.GetHomeDcs(); n != c.partitions || len(homes) > 0 && !slices.Equal(homes, c.homes) {
		c.partitions, c.homes, c.owners = n, homes, map[int]string{}
		c.layout = durable.NewLayout(n, homes)
	}
	c.mu.Unlock()
	c.setOwner(int(resp.GetPartition()), resp.GetOwner())
}

func (c *Client) setOwner(p int, addr string) {
	if c.opts.NoDirect || p < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p < c.partitions {
		c.owners[p] = addr
	}
}

// markUnreachable skips addr for a while and forgets the partitions it owned.
func (c *Client) markUnreachable(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unreachable[addr] = time.Now().Add(unreachableFor)
	for p, a := range c.owners {
		if a == addr {
			delete(c.owners, p)
		}
	}
}

// retry runs fn until it succeeds, fails with an error not marked retryable,
// runs out of attempts, or ctx ends. fn returning again=true asks for an
// immediate retry (another node) without backoff.
func (c *Client) retry(ctx context.Context, fn func(ctx context.Context) (again bool, err error)) error {
	var err error
	backoffs := 0
	for attempt := 0; attempt < c.opts.MaxAttempts; attempt++ {
		var again bool
		if again, err = fn(ctx); err == nil || !Retryable(err) {
			return err
		}
		if again {
			continue
		}
		d := c.opts.MaxBackoff
		if backoffs < 32 && c.opts.BaseBackoff<<backoffs < d {
			d = c.opts.BaseBackoff << backoffs // no overflow: shifts stop at 32
		}
		backoffs++
		d = time.Duration(rand.Int64N(int64(d)) + 1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
	return err
}

// Detail returns the durable ErrorDetail of an error from the server.
func Detail(err error) *durablev1.ErrorDetail {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if ed, ok := d.(*durablev1.ErrorDetail); ok {
			return ed
		}
	}
	return nil
}

// Retryable reports whether the server marked err safe to retry. A plain
// Unavailable without details (the node could not be reached at all) is also
// safe: the call never arrived.
func Retryable(err error) bool {
	if d := Detail(err); d != nil {
		return d.GetRetryable()
	}
	return status.Code(err) == codes.Unavailable
}

// IsObjectError reports whether err was returned by the object's own handler.
func IsObjectError(err error) bool {
	d := Detail(err)
	return d != nil && d.GetObjectError()
}
