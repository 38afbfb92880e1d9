package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/placement"
)

// grantAndRegister creates the node's lease and registration.
func (n *Node) grantAndRegister(ctx context.Context) (clientv3.LeaseID, error) {
	ttl := int64(n.cfg.LeaseTTL / time.Second)
	lg, err := n.client.Grant(ctx, ttl)
	if err != nil {
		return 0, fmt.Errorf("node: grant lease: %w", err)
	}
	info := placement.NodeInfo{ID: n.cfg.ID, DC: n.cfg.DC, Address: n.cfg.Advertise}
	if err := placement.Register(ctx, n.client, n.keys, info, lg.ID); err != nil {
		_, _ = n.client.Revoke(context.Background(), lg.ID)
		return 0, err
	}
	n.mu.Lock()
	n.lease = lg.ID
	n.mu.Unlock()
	n.log.Info("node registered", "dc", n.cfg.DC, "address", n.cfg.Advertise, "lease", int64(lg.ID), "ttl", ttl)
	return lg.ID, nil
}

// wanted reports whether this node should own p. A single node wants every
// partition; cluster placement narrows this.
func (n *Node) wanted(p int) bool { return true }

// runMembership keeps the lease alive and claims wanted partitions until ctx
// ends. When the lease is lost it drops every partition, takes a new lease and
// claims again.
func (n *Node) runMembership(ctx context.Context, lease clientv3.LeaseID) {
	for ctx.Err() == nil {
		n.serveLease(ctx, lease)
		if ctx.Err() != nil {
			return
		}
		n.dropAll(fmt.Errorf("%w: lease %x expired or lost", durable.ErrOwnershipLost, int64(lease)))
		n.log.Warn("lease lost; registering again")
		var err error
		for backoff := 100 * time.Millisecond; ctx.Err() == nil; backoff = min(backoff*2, n.cfg.LeaseTTL) {
			lease, err = n.grantAndRegister(ctx)
			if err == nil {
				break
			}
			n.log.Warn("re-register failed; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
		}
	}
}

// serveLease runs while lease is alive: it claims partitions and reacts to
// ownership changes. It returns when the lease is lost or ctx ends.
func (n *Node) serveLease(ctx context.Context, lease clientv3.LeaseID) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := n.client.KeepAlive(lctx, lease)
	if err != nil {
		n.log.Warn("keep-alive failed to start", "err", err)
		return
	}
	watch := n.client.Watch(clientv3.WithRequireLeader(lctx), n.keys.OwnerPrefix(), clientv3.WithPrefix(), clientv3.WithPrevKV())
	n.claimAll(lctx, lease)
	retry := time.NewTicker(n.cfg.LeaseTTL)
	defer retry.Stop()
	for {
		select {
		case <-lctx.Done():
			return
		case _, ok := <-ka:
			if !ok {
				return
			}
		case wr, ok := <-watch:
			if !ok || wr.Err() != nil {
				// The watch broke (etcd leader loss, compaction): start a
				// new one; claims are retried on the ticker meanwhile.
				watch = n.client.Watch(clientv3.WithRequireLeader(lctx), n.keys.OwnerPrefix(), clientv3.WithPrefix(), clientv3.WithPrevKV())
				continue
			}
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypeDelete {
					continue
				}
				p, ok := parseOwnerKey(n, string(ev.Kv.Key))
				if !ok {
					continue
				}
				// Our key deleted behind our back: the tenure is over.
				n.dropPartition(p, ev.PrevKv.GetCreateRevision(), fmt.Errorf("%w: owner key of partition %d deleted", durable.ErrOwnershipLost, p))
			}
			n.claimAll(lctx, lease)
		case <-retry.C:
			n.claimAll(lctx, lease)
		}
	}
}

func parseOwnerKey(n *Node, key string) (int, bool) {
	var p int
	if _, err := fmt.Sscanf(key[len(n.keys.OwnerPrefix()):], "%d", &p); err != nil {
		return 0, false
	}
	return p, p >= 0 && p < n.PartitionCount()
}

// claimAll claims every wanted partition this node does not own.
func (n *Node) claimAll(ctx context.Context, lease clientv3.LeaseID) {
	for p := 0; p < n.PartitionCount(); p++ {
		if !n.wanted(p) || n.token(p) != 0 {
			continue
		}
		token, _, err := placement.Claim(ctx, n.client, n.keys, p, n.cfg.ID, lease)
		if err != nil {
			if !errors.Is(err, placement.ErrOwned) && ctx.Err() == nil {
				n.log.Warn("claim failed", "partition", p, "err", err)
			}
			continue
		}
		n.adopt(ctx, p, token)
	}
}

// adopt makes a claimed partition serve: events may run at once, and its
// alarms due within the window are loaded.
func (n *Node) adopt(ctx context.Context, p int, token int64) {
	n.mu.Lock()
	n.owned[p] = &partition{token: token}
	n.ownedChangedLocked()
	n.mu.Unlock()
	n.log.Debug("partition claimed", "partition", p, "token", token)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		err := n.loadWindow(ctx, p)
		if err == nil || n.token(p) != token || ctx.Err() != nil {
			return
		}
		n.log.Warn("loading alarms failed; retrying", "partition", p, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// loadWindow extends p's window to now + AlarmWindow and reads the index
// entries that entered it. On failure the window is rolled back so the next
// attempt reads them again.
func (n *Node) loadWindow(ctx context.Context, p int) error {
	// One load at a time: a rollback must not undo a later extension.
	n.loadMu.Lock()
	defer n.loadMu.Unlock()
	until := n.now().Add(n.cfg.AlarmWindow)
	prev, had := n.sched.openWindow(p, until)
	if had && !until.After(prev) {
		return nil
	}
	var after time.Time
	if had {
		after = prev
	}
	err := n.alarms.LoadWindow(ctx, p, after, until, n.sched.load)
	if err != nil {
		n.sched.rollbackWindow(p, until, prev, had)
	}
	return err
}

// windowLoop extends the windows of owned partitions as time passes.
func (n *Node) windowLoop() {
	tick := n.cfg.Clock.NewTicker(n.cfg.AlarmWindow / 4)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.Chan():
			for p := range n.sched.loaded() {
				if err := n.loadWindow(n.ctx, p); err != nil && n.ctx.Err() == nil {
					n.log.Warn("extending alarm window failed; will retry", "partition", p, "err", err)
				}
			}
		}
	}
}

// dropAll drops every owned partition.
func (n *Node) dropAll(cause error) {
	for _, p := range n.OwnedPartitions() {
		n.dropPartition(p, 0, cause)
	}
}
