package placement

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrLeaseLost means etcd no longer knows a lease: it expired.
var ErrLeaseLost = errors.New("placement: lease lost")

// KeepAlive renews lease every interval with KeepAliveOnce until etcd says
// the lease is gone (an error wrapping ErrLeaseLost) or ctx ends (nil).
// Each renewal first passes gate, so a frozen process renews nothing, and
// is bounded by half an interval: a renewal stuck behind a busy etcd must
// not use up the time the next one needs. A renewal sent at sent that etcd
// answered with ttl seconds after took is reported to renewed: the lease
// cannot expire before sent + ttl. A failed renewal is reported to failed
// and tried again after a quarter interval, not a whole one: the lease may
// still live, and each lost interval eats into the local deadline.
//
// This is the one keep-alive loop of the runtime: the node's lease and the
// leader's election session both run on it. It is used instead of the
// client's background KeepAlive stream because that stream cannot be
// frozen, and because each renewal's send time is what the node's local
// lease deadline rests on.
func KeepAlive(ctx context.Context, leases clientv3.Lease, lease clientv3.LeaseID, interval time.Duration,
	gate func(context.Context) error, renewed func(sent time.Time, ttl int64, took time.Duration), failed func(error)) error {
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if gate(ctx) != nil {
			return nil
		}
		sent := time.Now()
		kctx, cancel := context.WithTimeout(ctx, interval/2)
		resp, err := leases.KeepAliveOnce(kctx, lease)
		cancel()
		next := interval
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			return fmt.Errorf("%w: lease %x expired", ErrLeaseLost, int64(lease))
		case err != nil:
			failed(err)
			next = interval / 4
		default:
			renewed(sent, resp.TTL, time.Since(sent))
		}
		t.Reset(next)
	}
}
