// Package node runs durable objects: it activates objects of registered
// classes, delivers their events one at a time, buffers their storage writes,
// commits them atomically with group commit, schedules their alarms, and
// serves the gRPC API.
//
// Concurrency model:
//   - An active object's events are handled by one goroutine at a time
//     (object.run), which exists only while the object has work: it parks
//     when the mailbox and alarm signal are empty, and whoever enqueues
//     work wakes it (Node.wakeLocked, under Node.mu, where the object's
//     running flag lives). Every event of the object — invocation, alarm,
//     eviction, stop — is handled by that goroutine, so the object's own
//     fields need no lock. Callers enqueue work and wait for a reply.
//   - Node.mu guards the objects map and the partition table. Enqueueing into
//     an object's mailbox happens under Node.mu and never blocks, which is what
//     makes eviction race-free (an object leaves the map only when its mailbox
//     is empty, checked under the same lock). One sweeper evicts idle objects.
//   - An object does not wait for its commit: finished events are staged
//     (stage.go) and go to the node's committer (committer.go), which
//     batches the commits of many objects into one etcd Txn; a reply is
//     released once the writes it rests on are durable.
//   - The scheduler (one goroutine, one timer) owns the alarm heap.
//   - The partition loop owns the etcd lease and partition claims.
//
// Lock order: Node.mu before object.smu before committer.mu; Node.mu before
// scheduler.mu. No lock is held across etcd calls.
//
// Invariant (fencing): every write reaches etcd in a Txn comparing the
// partition's ownership token, taken when the event started. A failed compare
// means the partition is lost; the node then drops it at once.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/leader"
	"github.com/durable-run/durable/placement"
)

// objKey identifies an active object on this node.
type objKey struct {
	class string
	id    string
}

// partition is this node's view of one partition it owns.
type partition struct {
	token   int64 // fencing token of this tenure
	handoff bool  // being handed to another node: no new events start
}

// Node runs objects. Create it with New, then Run it.
type Node struct {
	cfg    Config
	log    *slog.Logger
	client *clientv3.Client
	keys   keyspace.Space
	alarms *alarmstore.Store
	reg    *Registry
	sched  *scheduler

	committer *committer // group commit; set up by New, started by Run
	reader    *reader    // group read; likewise

	// ctx lives from Run until shutdown; background work (commits, loads)
	// uses it so a caller's cancellation never leaves a commit ambiguous.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	partitionCount atomic.Int32 // fixed for the cluster once Run has read meta

	loadMu []sync.Mutex // per partition: serializes its alarm-window loads; sized by Run

	mu       sync.Mutex
	objects  map[objKey]*object
	owned    map[int]*partition
	nodes    map[string]placement.NodeInfo // live registrations, from the watch
	owners   map[int]placement.Owner       // owner keys, from the watch
	assign   map[int]leader.Assignment     // desired placement, from the watch
	changed  chan struct{}                 // closed and replaced whenever the above change
	stopping bool
	draining bool
	lease    clientv3.LeaseID
	kick     chan struct{} // asks the placement loop to reconcile now

	lmu        sync.Mutex
	validUntil time.Time // local lease deadline (monotonic); events stop past it

	frozen atomic.Pointer[chan struct{}] // non-nil while Freeze is in effect

	peers peerConns

	leader *leader.Leader // campaigns in the node's DC; set by Run
	meta   placement.Meta // set by Run

	// onDrained, when set, runs after the drain and before the objects stop
	// (see OnDrained).
	onDrained func(crashed bool)
}

// New returns a node over an etcd client. The client stays the caller's.
func New(cfg Config, client *clientv3.Client, reg *Registry) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node: invalid config: %w", err)
	}
	if client == nil || reg == nil {
		return nil, errors.New("node: etcd client and registry are required")
	}
	keys := keyspace.New(cfg.Prefix)
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "node", "node", cfg.ID),
		client:  client,
		keys:    keys,
		alarms:  alarmstore.New(client, keys),
		reg:     reg,
		objects: map[objKey]*object{},
		owned:   map[int]*partition{},
		nodes:   map[string]placement.NodeInfo{},
		owners:  map[int]placement.Owner{},
		assign:  map[int]leader.Assignment{},
		changed: make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	n.sched = newScheduler(cfg.Clock, cfg.MaxRunningAlarms, n.deliverAlarm)
	n.committer = newCommitter(client, keys, n.log.With("component", "committer"),
		cfg.CommitParallelism, cfg.CommitMaxOps, cfg.CommitMaxBytes, cfg.CommitTimeout,
		func(p int, token int64, err error) { go n.dropPartition(p, token, err) })
	n.reader = newReader(client, cfg.CommitParallelism, cfg.CommitMaxOps, cfg.CommitMaxBytes, cfg.CommitTimeout)
	return n, nil
}

// Config returns the node's validated configuration.
func (n *Node) Config() Config { return n.cfg }

// Registry returns the node's class registry.
func (n *Node) Registry() *Registry { return n.reg }

// Keys returns the node's key space.
func (n *Node) Keys() keyspace.Space { return n.keys }

// ErrCrash, as the cause of Run's context (context.WithCancelCause), makes
// the node stop as if its process had died: no drain, no release of its
// partitions, no revocation of its lease. Tests use it to simulate SIGKILL.
var ErrCrash = errors.New("node: simulated crash")

// Run registers the node, claims its partitions and serves objects until ctx
// is cancelled; then it drains (hands its partitions to other nodes, if any),
// stops every object, releases what is left and revokes its lease. It returns
// an error if it could not start.
func (n *Node) Run(ctx context.Context) error {
	homes := n.cfg.HomeDCs
	if len(homes) == 0 {
		homes = []string{n.cfg.DC}
	}
	meta, err := placement.EnsureCluster(ctx, n.client, n.keys, n.cfg.Partitions, homes)
	if err != nil {
		return err
	}
	if len(n.cfg.HomeDCs) > 0 && !slices.Equal(meta.HomeDCs, n.cfg.HomeDCs) {
		n.log.Warn("cluster home data centers differ from configuration; using the cluster's",
			"cluster", meta.HomeDCs, "configured", n.cfg.HomeDCs)
	}
	// meta and leader are set before the partition count: readers that see
	// a count see them.
	n.meta = meta
	n.leader = leader.New(leader.Config{
		Node: n.cfg.ID, DC: n.cfg.DC, Meta: meta, TTL: n.cfg.LeaseTTL,
		Grace: n.cfg.DCGrace, Stabilise: n.cfg.Stabilise, Gate: n.gate, Logger: n.cfg.Logger,
	}, n.client, n.keys)
	n.loadMu = make([]sync.Mutex, meta.Partitions)
	n.partitionCount.Store(int32(meta.Partitions))
	if meta.Partitions != n.cfg.Partitions {
		n.log.Warn("cluster partition count differs from configuration; using the cluster's",
			"cluster", meta.Partitions, "configured", n.cfg.Partitions)
	}
	lease, err := n.grantAndRegister(ctx)
	if err != nil {
		return err
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.committer.ctx, n.reader.ctx = n.ctx, n.ctx
	n.wg.Add(3)
	go func() { defer n.wg.Done(); n.sched.run(n.ctx.Done()) }()
	go func() { defer n.wg.Done(); n.windowLoop() }()
	go func() { defer n.wg.Done(); n.evictLoop() }()

	// The membership loop and the leader outlive ctx while draining: they
	// must keep the lease alive, move the partitions away (a draining leader
	// leads until it exits) and see the new owners claim.
	mctx, stopMembership := context.WithCancelCause(context.Background())
	var background sync.WaitGroup
	background.Add(2)
	go func() { defer background.Done(); n.runMembership(mctx, lease) }()
	go func() { defer background.Done(); n.leader.Run(mctx) }()
	<-ctx.Done()
	crashed := errors.Is(context.Cause(ctx), ErrCrash)
	if !crashed {
		n.drain()
	}
	if n.onDrained != nil {
		n.onDrained(crashed)
	}
	cause := context.Canceled
	if crashed {
		cause = leader.ErrAbandon
	}
	stopMembership(cause)
	background.Wait()
	n.shutdown(crashed)
	return nil
}

// shutdown stops every object, releases the partitions and revokes the lease
// (unless simulating a crash).
func (n *Node) shutdown(crashed bool) {
	n.mu.Lock()
	n.stopping = true
	objs := make([]*object, 0, len(n.objects))
	for _, o := range n.objects {
		objs = append(objs, o)
	}
	n.mu.Unlock()
	for _, o := range objs {
		o.stopAndWait(durable.ErrUnavailable)
	}
	// Release partitions so a successor need not wait for the lease to expire.
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.CommitTimeout)
	defer cancel()
	n.mu.Lock()
	owned := n.owned
	n.owned = map[int]*partition{}
	lease := n.lease
	n.mu.Unlock()
	for p, part := range owned {
		n.sched.dropPartition(p)
		if crashed {
			continue
		}
		if err := placement.Release(ctx, n.client, n.keys, p, part.token); err != nil {
			n.log.Warn("release partition failed", "partition", p, "err", err)
		}
	}
	n.peers.closeAll()
	if lease != 0 && !crashed {
		if _, err := n.client.Revoke(ctx, lease); err != nil {
			n.log.Warn("revoke lease failed", "err", err)
		}
	}
	n.cancel()
	n.committer.stop()
	n.reader.stop()
	n.wg.Wait()
	n.log.Info("node stopped")
}

// OnDrained sets fn to run when Run's context has ended and the node has
// handed its partitions away, before its objects stop and its peer
// connections close: the place to stop the gRPC server gracefully, so calls
// in flight (forwarded to the new owners) finish. crashed reports a
// simulated crash (ErrCrash). Call it before Run.
func (n *Node) OnDrained(fn func(crashed bool)) { n.onDrained = fn }

// PartitionCount returns the cluster's partition count (after Run started).
func (n *Node) PartitionCount() int { return int(n.partitionCount.Load()) }

// partitionOf maps an object ID to its partition.
func (n *Node) partitionOf(id durable.ID) int { return id.Partition(n.PartitionCount()) }

// token returns the fencing token of p, or 0 if this node does not own it.
func (n *Node) token(p int) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if part, ok := n.owned[p]; ok {
		return part.token
	}
	return 0
}

// changedLocked records a change of the partition table or the routing view
// and wakes waiters. Caller holds n.mu.
func (n *Node) changedLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// dropPartition forgets p after its ownership was lost (or released): every
// object of p is stopped, failing its queued callers with cause, and its
// alarms leave the heap.
func (n *Node) dropPartition(p int, token int64, cause error) {
	n.mu.Lock()
	part, ok := n.owned[p]
	if !ok || (token != 0 && part.token != token) {
		n.mu.Unlock()
		return
	}
	delete(n.owned, p)
	n.changedLocked()
	objs := n.objectsOfLocked(p)
	n.mu.Unlock()
	n.sched.dropPartition(p)
	for _, o := range objs {
		o.stop(cause)
	}
	n.log.Warn("partition dropped", "partition", p, "token", part.token, "cause", cause)
}

// objectsOfLocked returns the active objects of partition p. Caller holds
// n.mu.
func (n *Node) objectsOfLocked(p int) []*object {
	var objs []*object
	for _, o := range n.objects {
		if o.p == p {
			objs = append(objs, o)
		}
	}
	return objs
}

// objectLocked returns the active object for key, activating it; the caller
// holds n.mu. It returns nil if the node is stopping or does not serve p.
func (n *Node) objectLocked(class Class, id durable.ID, p int) *object {
	key := objKey{class: class.Name, id: id.String()}
	if o, ok := n.objects[key]; ok {
		return o
	}
	if part := n.owned[p]; n.stopping || part == nil || part.handoff {
		return nil
	}
	o := newObject(n, class, id, p)
	n.objects[key] = o
	return o
}

// wakeLocked starts o's goroutine if it is parked: the caller has just
// given it something to do. Caller holds n.mu.
func (n *Node) wakeLocked(o *object) {
	if o.running || o.gone {
		return
	}
	o.running = true
	n.wg.Add(1)
	go func() { defer n.wg.Done(); o.run() }()
}

// forgetLocked removes o from the map for good: it is never woken again.
// Caller holds n.mu.
func (n *Node) forgetLocked(o *object) {
	o.gone = true
	if cur, ok := n.objects[o.key]; ok && cur == o {
		delete(n.objects, o.key)
	}
}

// Ref addresses an object: by Name, or by ID in hex.
type Ref struct {
	Name string
	ID   string
}

// resolve validates class and ref and returns the object's ID.
func (n *Node) resolve(className string, ref Ref) (Class, durable.ID, error) {
	class, err := n.reg.Lookup(className)
	if err != nil {
		return Class{}, durable.ID{}, err
	}
	switch {
	case ref.Name != "" && ref.ID != "":
		return Class{}, durable.ID{}, durable.Invalidf("give an object name or an id, not both")
	case ref.ID != "":
		id, err := durable.IDFromString(class.Name, ref.ID)
		return class, id, err
	case ref.Name != "":
		return class, durable.IDFromName(class.Name, ref.Name), nil
	default:
		return Class{}, durable.ID{}, durable.Invalidf("object name or id is required")
	}
}

// deliverAlarm is the scheduler's callback: it activates the object and asks
// it to look at its alarm, and reports whether the object took the delivery
// (it then releases it when done). Past the local lease deadline the node
// starts no event, alarms included: another node may own the partition by
// now, and its handler would run concurrently. The alarm is looked at again
// later; if the partition is dropped meanwhile, its next owner loads the
// alarm from etcd.
func (n *Node) deliverAlarm(e alarmstore.Entry) bool {
	if !n.leaseValid() {
		n.sched.retryAt(objKey{class: e.Class, id: e.ID}, e.Partition, n.now().Add(n.cfg.SystemRetryDelay))
		return false
	}
	class, err := n.reg.Lookup(e.Class)
	if err != nil {
		n.log.Error("alarm of unregistered class left pending", "class", e.Class, "id", e.ID)
		return false
	}
	id, err := durable.IDFromString(e.Class, e.ID)
	if err != nil {
		n.log.Error("alarm index entry with invalid id skipped", "class", e.Class, "id", e.ID, "err", err)
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	o := n.objectLocked(class, id, e.Partition)
	if o == nil || o.delivered {
		return false
	}
	o.delivered = true
	o.signalAlarm()
	return true
}

// sweepEvery is how often the node looks for idle objects: one ticker for
// the node rather than a timer per object, which the runtime would have to
// move in its timer heap after every event of every object.
const sweepEvery = 250 * time.Millisecond

// evictLoop asks idle objects to leave memory.
func (n *Node) evictLoop() {
	tick := n.cfg.Clock.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.Chan():
		}
		now := n.now()
		n.mu.Lock()
		for _, o := range n.objects {
			switch {
			case !o.idle(now):
			case o.running:
				// Busy with something else: it evicts itself when done.
				select {
				case o.evictSig <- struct{}{}:
				default:
				}
			default:
				o.evictParkedLocked()
			}
		}
		n.mu.Unlock()
	}
}

// ActiveObjects returns the number of objects in memory.
func (n *Node) ActiveObjects() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.objects)
}

// OwnedPartitions returns the partitions this node owns.
func (n *Node) OwnedPartitions() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]int, 0, len(n.owned))
	for p := range n.owned {
		out = append(out, p)
	}
	return out
}

// LeaderTerm returns the node's election revision while it leads its data
// center, else 0.
func (n *Node) LeaderTerm() int64 {
	if n.PartitionCount() == 0 {
		return 0
	}
	return n.leader.Term()
}

// ScheduledAlarms returns the number of alarms held in the look-ahead heap.
func (n *Node) ScheduledAlarms() int { return n.sched.size() }

// now is the node's clock.
func (n *Node) now() time.Time { return n.cfg.Clock.Now() }

// WaitReady blocks until the node owns at least one partition or ctx ends.
func (n *Node) WaitReady(ctx context.Context) error {
	for {
		n.mu.Lock()
		ready := len(n.owned) > 0
		wait := n.changed
		n.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
