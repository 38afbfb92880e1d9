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
// Each renewal first passes gate, so a frozen process renews nothing. A
// renewal sent at sent that etcd answered with ttl seconds is reported to
// renewed: the lease cannot expire before sent + ttl. A failed renewal is
// reported to failed and tried again at the next interval: the lease may
// still live.
//
// This is the one keep-alive loop of the runtime: the node's lease and the
// leader's election session both run on it. It is used instead of the
// client's background KeepAlive stream because that stream cannot be
// frozen, and because each renewal's send time is what the node's local
// lease deadline rests on.
func KeepAlive(ctx context.Context, leases clientv3.Lease, lease clientv3.LeaseID, interval time.Duration,
	gate func(context.Context) error, renewed func(sent time.Time, ttl int64), failed func(error)) error {
	t := time.NewTicker(interval)
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
		kctx, cancel := context.WithTimeout(ctx, interval)
		resp, err := leases.KeepAliveOnce(kctx, lease)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			return fmt.Errorf("%w: lease %x expired", ErrLeaseLost, int64(lease))
		case err != nil:
			failed(err)
		default:
			renewed(sent, resp.TTL)
		}
	}
}
