// Package client is the Go client of a durable cluster. It invokes objects
// over gRPC and retries, with backoff, only the calls the server marked safe
// to retry (ErrorDetail.retryable): an error from the object's own handler, an
// overload or a commit of unknown outcome is returned at once.
//
// A Client is safe for concurrent use.
package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

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
	// DialOptions are added to the gRPC dial; the default is plaintext.
	DialOptions []grpc.DialOption
}

// Client talks to one cluster through one node address.
type Client struct {
	conn    *grpc.ClientConn
	objects durablev1.ObjectsClient
	admin   durablev1.AdminClient
	opts    Options
}

// Dial connects to a node at addr (host:port).
func Dial(addr string, opts Options) (*Client, error) {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 8
	}
	if opts.BaseBackoff <= 0 {
		opts.BaseBackoff = 50 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 2 * time.Second
	}
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts.DialOptions...)
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	return &Client{
		conn: conn, opts: opts,
		objects: durablev1.NewObjectsClient(conn),
		admin:   durablev1.NewAdminClient(conn),
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the underlying connection, e.g. for the health service.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Admin returns the Admin service client.
func (c *Client) Admin() durablev1.AdminClient { return c.admin }

// Ref addresses an object by name or by ID.
type Ref = *durablev1.ObjectRef

// ByName refers to the object of a class named name.
func ByName(name string) Ref { return &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: name}} }

// ByID refers to an object by its 64-hex-digit ID.
func ByID(id string) Ref { return &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Id{Id: id}} }

// Invoke calls method on an object and returns its reply.
func (c *Client) Invoke(ctx context.Context, class string, ref Ref, method string, payload []byte) (*durablev1.InvokeResponse, error) {
	req := &durablev1.InvokeRequest{Class: class, Object: ref, Method: method, Payload: payload}
	var resp *durablev1.InvokeResponse
	err := c.retry(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.objects.Invoke(ctx, req)
		return err
	})
	return resp, err
}

// retry runs fn until it succeeds, fails with an error not marked retryable,
// runs out of attempts, or ctx ends.
func (c *Client) retry(ctx context.Context, fn func(ctx context.Context) error) error {
	var err error
	for attempt := 0; attempt < c.opts.MaxAttempts; attempt++ {
		if err = fn(ctx); err == nil || !Retryable(err) {
			return err
		}
		d := min(c.opts.BaseBackoff<<attempt, c.opts.MaxBackoff)
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
