package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/leader"
	"github.com/durable-run/durable/placement"
)

// grantAndRegister creates the node's lease and registration. A registration
// of the same id under another lease may belong to a crashed incarnation of
// this node: it is waited out for one lease TTL before the id is declared in
// use by a live process.
func (n *Node) grantAndRegister(ctx context.Context) (clientv3.LeaseID, error) {
	ttl := int64(n.cfg.LeaseTTL / time.Second)
	info := placement.NodeInfo{ID: n.cfg.ID, DC: n.cfg.DC, Address: n.cfg.Advertise}
	giveUp := time.Now().Add(n.cfg.LeaseTTL + time.Second)
	for {
		sent := time.Now()
		lg, err := n.client.Grant(ctx, ttl)
		if err != nil {
			return 0, fmt.Errorf("node: grant lease: %w", err)
		}
		err = placement.Register(ctx, n.client, n.keys, info, lg.ID)
		if err == nil {
			n.mu.Lock()
			n.lease = lg.ID
			n.mu.Unlock()
			n.extendLease(sent, lg.TTL)
			n.log.Info("node registered", "dc", n.cfg.DC, "address", n.cfg.Advertise, "lease", int64(lg.ID), "ttl", ttl)
			return lg.ID, nil
		}
		_, _ = n.client.Revoke(context.Background(), lg.ID)
		if !errors.Is(err, placement.ErrNodeIDInUse) || time.Now().After(giveUp) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// leaseMargin is subtracted from the lease TTL for the local deadline: the
// node stops serving this long before etcd could possibly expire its lease,
// covering clock-rate differences between the node and etcd.
func (n *Node) leaseMargin() time.Duration { return n.cfg.LeaseTTL / 6 }

// extendLease records a keep-alive sent at sent that etcd answered with ttl
// seconds: the lease cannot expire before sent + ttl, because etcd renewed it
// after sent.
func (n *Node) extendLease(sent time.Time, ttl int64) {
	until := sent.Add(time.Duration(ttl)*time.Second - n.leaseMargin())
	n.lmu.Lock()
	if until.After(n.validUntil) {
		n.validUntil = until
	}
	n.lmu.Unlock()
}

// leaseValid reports whether the node may serve: its lease is certainly
// alive. Past the local deadline it refuses events (reads included) until a
// keep-alive confirms the lease again, so a paused or cut-off node never
// serves a stale read after another node may have taken over.
func (n *Node) leaseValid() bool {
	n.lmu.Lock()
	defer n.lmu.Unlock()
	return time.Now().Before(n.validUntil)
}

// keepAlive renews lease every TTL/3 until it is lost (returned as an error)
// or ctx ends (nil).
func (n *Node) keepAlive(ctx context.Context, lease clientv3.LeaseID) error {
	interval := n.cfg.LeaseTTL / 3
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := n.gate(ctx); err != nil {
			return nil
		}
		sent := time.Now()
		kctx, cancel := context.WithTimeout(ctx, interval)
		resp, err := n.client.KeepAliveOnce(kctx, lease)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			return fmt.Errorf("lease %x expired", int64(lease))
		case err != nil:
			n.log.Warn("keep-alive failed; serving stops at the lease deadline unless one succeeds", "err", err)
		default:
			n.extendLease(sent, resp.TTL)
		}
	}
}

// runMembership keeps the lease alive, watches the cluster and reconciles
// ownership with placement until ctx ends. When the lease is lost it drops
// every partition, takes a new lease, registers again and carries on.
func (n *Node) runMembership(ctx context.Context, lease clientv3.LeaseID) {
	for {
		err := n.session(ctx, lease)
		if ctx.Err() != nil {
			return
		}
		n.dropAll(fmt.Errorf("%w: %w", durable.ErrOwnershipLost, err))
		n.log.Warn("lease lost; registering again", "err", err)
		for backoff := 100 * time.Millisecond; ; backoff = min(backoff*2, n.cfg.LeaseTTL) {
			if lease, err = n.grantAndRegister(ctx); err == nil {
				break
			}
			n.log.Warn("re-register failed; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// session runs while lease is alive.
func (n *Node) session(ctx context.Context, lease clientv3.LeaseID) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		if err := n.keepAlive(sctx, lease); err != nil {
			cancel(err)
		}
	}()
	for sctx.Err() == nil {
		err := n.watchAndReconcile(sctx, lease)
		if sctx.Err() == nil {
			n.log.Warn("cluster watch broke; reloading", "err", err)
			select {
			case <-sctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if cause := context.Cause(sctx); !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// watchAndReconcile loads nodes/ and owner/, then follows both with watches,
// reconciling after every change and every lease TTL. It returns when a watch
// breaks (the caller reloads) or ctx ends.
func (n *Node) watchAndReconcile(ctx context.Context, lease clientv3.LeaseID) error {
	v, err := leader.Read(ctx, n.client, n.keys, n.meta)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.nodes, n.owners, n.assign = v.Nodes, v.Owners, v.Assign
	n.changedLocked()
	n.mu.Unlock()

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	rev := clientv3.WithRev(v.Revision + 1)
	nodeWatch := n.client.Watch(wctx, n.keys.NodesPrefix(), clientv3.WithPrefix(), rev)
	ownerWatch := n.client.Watch(wctx, n.keys.OwnerPrefix(), clientv3.WithPrefix(), clientv3.WithPrevKV(), rev)
	assignWatch := n.client.Watch(wctx, n.keys.AssignPrefix(), clientv3.WithPrefix(), rev)
	tick := time.NewTicker(n.cfg.LeaseTTL)
	defer tick.Stop()
	n.reconcile(ctx, lease)
	for {
		select {
		case <-ctx.Done():
			return nil
		case wr, ok := <-nodeWatch:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("nodes watch: %v", wr.Err())
			}
			n.applyNodeEvents(wr.Events)
		case wr, ok := <-ownerWatch:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("owner watch: %v", wr.Err())
			}
			n.applyOwnerEvents(wr.Events)
		case wr, ok := <-assignWatch:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("assign watch: %v", wr.Err())
			}
			n.applyAssignEvents(wr.Events)
		case <-tick.C:
		case <-n.kick:
		}
		if err := n.gate(ctx); err != nil {
			return nil
		}
		n.reconcile(ctx, lease)
	}
}

func (n *Node) applyNodeEvents(evs []*clientv3.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range evs {
		id := string(ev.Kv.Key)[len(n.keys.NodesPrefix()):]
		if ev.Type == clientv3.EventTypeDelete {
			delete(n.nodes, id)
			continue
		}
		if ni, err := placement.ParseNode(id, ev.Kv.Value); err == nil {
			n.nodes[id] = ni
		}
	}
	n.changedLocked()
}

func (n *Node) applyAssignEvents(evs []*clientv3.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range evs {
		p, ok := keyspace.ParsePartitionKey(string(ev.Kv.Key), n.keys.AssignPrefix())
		if !ok {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			delete(n.assign, p)
			continue
		}
		a, err := leader.ParseAssignment(ev.Kv.Value, ev.Kv.ModRevision)
		if err != nil {
			n.log.Warn("ignoring an assignment", "partition", p, "err", err)
			continue
		}
		n.assign[p] = a
	}
	n.changedLocked()
}

func (n *Node) applyOwnerEvents(evs []*clientv3.Event) {
	var lost []placement.Owner
	var lostP []int
	n.mu.Lock()
	for _, ev := range evs {
		p, ok := keyspace.ParsePartitionKey(string(ev.Kv.Key), n.keys.OwnerPrefix())
		if !ok {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			delete(n.owners, p)
			if part := n.owned[p]; part != nil && !part.handoff && ev.PrevKv != nil && ev.PrevKv.CreateRevision == part.token {
				// Our owner key is gone (lease expired, or deleted behind
				// our back): the tenure is over.
				lost = append(lost, placement.Owner{Node: n.cfg.ID, Token: part.token})
				lostP = append(lostP, p)
			}
			continue
		}
		n.owners[p] = placement.Owner{Node: string(ev.Kv.Value), Token: ev.Kv.CreateRevision}
	}
	n.changedLocked()
	n.mu.Unlock()
	for i, p := range lostP {
		n.dropPartition(p, lost[i].Token, fmt.Errorf("%w: owner key of partition %d deleted", durable.ErrOwnershipLost, p))
	}
}

// desiredLocked is the node that should own p: the one its data center's
// leader assigned, if that node is live and not draining, else "" (nobody
// claims; an owner does not hand off to a node that is gone). Caller holds
// n.mu.
func (n *Node) desiredLocked(p int) string {
	a, ok := n.assign[p]
	if !ok {
		return ""
	}
	if ni, live := n.nodes[a.Node]; !live || ni.Draining {
		return ""
	}
	return a.Node
}

// Settled reports whether, as far as this node sees, placement has converged:
// every partition is owned by the node placement wants, and this node is not
// handing any partition off.
func (n *Node) Settled() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for p := 0; p < n.PartitionCount(); p++ {
		if o, ok := n.owners[p]; !ok || o.Node != n.desiredLocked(p) {
			return false
		}
	}
	for _, part := range n.owned {
		if part.handoff {
			return false
		}
	}
	return n.PartitionCount() > 0
}

// maxHandoffs bounds concurrent partition handoffs of one node: one while
// rebalancing (gradual), a few while draining (fast shutdown).
const (
	rebalanceHandoffs = 1
	drainHandoffs     = 4
)

// reconcile claims the partitions placement gives this node and hands off
// those it gives to others.
func (n *Node) reconcile(ctx context.Context, lease clientv3.LeaseID) {
	if !n.leaseValid() {
		return
	}
	n.mu.Lock()
	active := 0
	for _, part := range n.owned {
		if part.handoff {
			active++
		}
	}
	limit := rebalanceHandoffs
	if n.draining {
		limit = drainHandoffs
	}
	var claims, handoffs []int
	for p := 0; p < n.PartitionCount(); p++ {
		want := n.desiredLocked(p)
		part := n.owned[p]
		_, taken := n.owners[p]
		switch {
		case part == nil && want == n.cfg.ID && !taken && !n.draining && !n.stopping:
			claims = append(claims, p)
		case part != nil && !part.handoff && want != "" && want != n.cfg.ID && active < limit:
			part.handoff = true
			active++
			handoffs = append(handoffs, p)
		}
	}
	if len(handoffs) > 0 {
		n.changedLocked()
	}
	n.mu.Unlock()
	for _, p := range handoffs {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.handoff(p) }()
	}
	// Claims (a Txn, then a window read each) run side by side: a node
	// taking over a dead node's partitions serves them all after a few
	// round trips, not one per partition.
	var wg sync.WaitGroup
	sem := make(chan struct{}, claimParallelism)
	for _, p := range claims {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			token, _, err := placement.Claim(ctx, n.client, n.keys, p, n.cfg.ID, lease)
			if err != nil {
				if !errors.Is(err, placement.ErrOwned) && ctx.Err() == nil {
					n.log.Warn("claim failed", "partition", p, "err", err)
				}
				return
			}
			n.adopt(ctx, p, token)
		}()
	}
	wg.Wait()
}

// claimParallelism bounds the claims one node runs at once.
const claimParallelism = 16

// handoff moves p to another node gracefully: no new events start (callers
// wait and are routed to the new owner), events in flight finish and commit,
// the alarms leave the heap, then owner/p is released for the new owner to
// claim.
func (n *Node) handoff(p int) {
	start := time.Now()
	n.mu.Lock()
	part := n.owned[p]
	if part == nil {
		n.mu.Unlock()
		return
	}
	objs := n.objectsOfLocked(p)
	n.mu.Unlock()
	n.sched.dropPartition(p)
	moved := fmt.Errorf("%w: partition %d moved to another node", durable.ErrOwnershipLost, p)
	for _, o := range objs {
		o.stopAndWait(moved)
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.CommitTimeout)
	err := placement.Release(ctx, n.client, n.keys, p, part.token)
	cancel()
	if err != nil {
		// The lease will free it if the release never lands.
		n.log.Warn("release during handoff failed", "partition", p, "err", err)
	}
	n.mu.Lock()
	if n.owned[p] == part {
		delete(n.owned, p)
	}
	n.changedLocked()
	n.mu.Unlock()
	n.log.Debug("partition handed off", "partition", p, "objects", len(objs), "took", time.Since(start))
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// drain marks the node draining and waits (up to CommitTimeout plus a lease
// TTL per partition batch, bounded overall) until other nodes own its
// partitions. With no other live node there is nowhere to go: it returns and
// shutdown releases the partitions.
func (n *Node) drain() {
	n.mu.Lock()
	n.draining = true
	lease := n.lease
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.CommitTimeout)
	info := placement.NodeInfo{ID: n.cfg.ID, DC: n.cfg.DC, Address: n.cfg.Advertise, Draining: true}
	err := placement.Register(ctx, n.client, n.keys, info, lease)
	cancel()
	if err != nil {
		n.log.Warn("could not mark the node draining", "err", err)
		return
	}
	n.log.Info("draining")
	deadline := time.Now().Add(drainLimit)
	for {
		n.mu.Lock()
		owned := len(n.owned)
		// Released is not enough: wait until another node owns each
		// partition, so a caller of Drain sees them all placed.
		remaining := 0
		for p := 0; p < n.PartitionCount(); p++ {
			if o, ok := n.owners[p]; !ok || o.Node == n.cfg.ID {
				remaining++
			}
		}
		// Partitions move within the data center; with no other local
		// node they wait for another data center to adopt them.
		others := 0
		for id, ni := range n.nodes {
			if id != n.cfg.ID && !ni.Draining && ni.DC == n.cfg.DC {
				others++
			}
		}
		wait := n.changed
		n.mu.Unlock()
		switch {
		case remaining == 0:
			n.log.Info("drained")
			return
		case others == 0:
			n.log.Info("no other node in the data center to drain to; partitions are released at shutdown and adopted by another data center after its grace period", "owned", owned)
			return
		}
		select {
		case n.kick <- struct{}{}:
		default:
		}
		select {
		case <-wait:
		case <-time.After(time.Until(deadline)):
			n.log.Warn("drain timed out; releasing the rest", "left", remaining)
			return
		}
	}
}

// drainLimit bounds a drain; what is left is released at shutdown and claimed
// by the others without waiting for a lease to expire.
const drainLimit = 30 * time.Second

// Drain hands every partition of the node to other nodes, as a SIGTERM does,
// and keeps the node running without partitions until Run's context ends.
func (n *Node) Drain() { n.drain() }

// adopt makes a claimed partition serve: events may run at once, and its
// alarms due within the window are loaded.
func (n *Node) adopt(ctx context.Context, p int, token int64) {
	n.mu.Lock()
	n.owned[p] = &partition{token: token}
	n.owners[p] = placement.Owner{Node: n.cfg.ID, Token: token}
	n.changedLocked()
	n.mu.Unlock()
	n.log.Debug("partition claimed", "partition", p, "token", token)
	// Start from nothing: whatever the scheduler still holds for p belongs
	// to an earlier tenure.
	n.sched.dropPartition(p)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		err := n.loadWindow(ctx, p, true)
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
// entries that entered it; claim opens the window of a newly claimed
// partition, otherwise only an existing window is extended. On failure the
// window is rolled back so the next attempt reads them again.
func (n *Node) loadWindow(ctx context.Context, p int, claim bool) error {
	// One load at a time: a rollback must not undo a later extension.
	n.loadMu[p].Lock()
	defer n.loadMu[p].Unlock()
	until := n.now().Add(n.cfg.AlarmWindow)
	prev, had := n.sched.openWindow(p, until, claim)
	if !had && !claim || had && !until.After(prev) {
		return nil
	}
	var after time.Time
	if had {
		after = prev
	}
	loaded := 0
	err := n.alarms.LoadWindow(ctx, p, after, until, func(e alarmstore.Entry) {
		loaded++
		n.sched.load(e)
	})
	if loaded > 0 {
		n.log.Debug("alarms loaded", "partition", p, "count", loaded, "until", until)
	}
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
				if err := n.loadWindow(n.ctx, p, false); err != nil && n.ctx.Err() == nil {
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

// Freeze simulates a process pause (SIGSTOP) for tests: keep-alives, the
// placement loop and new events stop until Thaw. Work already running
// continues, as it would until the scheduler stopped the process.
func (n *Node) Freeze() {
	ch := make(chan struct{})
	n.frozen.CompareAndSwap(nil, &ch)
}

// Thaw ends Freeze.
func (n *Node) Thaw() {
	if ch := n.frozen.Swap(nil); ch != nil {
		close(*ch)
	}
}

// gate blocks while the node is frozen.
func (n *Node) gate(ctx context.Context) error {
	ch := n.frozen.Load()
	if ch == nil {
		return nil
	}
	select {
	case <-*ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
