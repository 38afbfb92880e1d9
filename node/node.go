// Package node is the object runtime: it activates objects of registered
// classes, delivers their events one at a time, buffers their storage
// writes and stages them for group commit (pipelining, the output gate),
// delivers their alarms and applies the alarm policy, remembers request ids
// for exactly-once retries, routes invocations to the partition's owner, and
// serves the Objects gRPC service with the one table of errors to gRPC
// codes.
//
// It never decides which partitions it serves: placement's Member claims
// them and calls the node's Serve, Quiesce and Drop (placement.Host). It
// never talks to etcd for writes itself: commits go through package commit,
// alarm records are built by alarmstore.
//
// Concurrency model:
//   - An active object's events are handled by one goroutine at a time
//     (object.run), which exists only while the object has work: it parks
//     when the mailbox and alarm signal are empty, and whoever enqueues
//     work wakes it (table.wakeLocked). Every event of the object —
//     invocation, alarm, eviction, stop — is handled by that goroutine, so
//     the object's own fields need no lock. Callers enqueue work and wait for
//     a reply.
//   - table.mu guards the objects set, the served partitions and each
//     object's running/gone/delivered flags and its signals. Enqueueing
//     into a mailbox (a list under the object's qmu) happens under it and
//     never blocks, which is what makes eviction and
//     activation race-free: an object leaves the set only when its mailbox
//     is empty, and is created only while its partition is served, both
//     checked under the same lock.
//   - pipeline.mu guards an object's storage state (the event's buffer, the
//     pending commits, the committed cache); it is taken by the object's
//     goroutine, the handler's goroutine (storage calls) and the
//     committer's (a commit settling).
//
// Lock order: table.mu before pipeline.mu (eviction checks for pending
// commits under both) and before admission.mu (activation is admitted under
// the table's lock). peerConns.mu is a leaf. The node never holds either
// lock while calling the schedule, the committer, the reader or the
// member, and none of them calls back into the node holding a lock of its
// own (Schedule calls deliverAlarm, the committer calls Done, the member
// calls Serve/Quiesce/Drop, all unlocked). No lock of this package is held
// across etcd calls or handler code.
//
// Invariant (fencing): every write reaches etcd in a Txn comparing the
// partition's ownership token, taken when the event started. A failed compare
// means the partition is lost; placement then drops it here at once.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/commit"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/tracing"
)

// Membership is what the node needs of its cluster membership
// (placement.Member implements it).
type Membership interface {
	// LeaseValid reports whether the node's lease is certainly alive; past
	// its local deadline no event may start.
	LeaseValid() bool
	// OwnerAddr is the address of p's owner if another node owns it, "".
	OwnerAddr(p int) string
	// Changed is closed at the next change of the cluster view.
	Changed() <-chan struct{}
	// Gate blocks while the process is frozen (tests).
	Gate(ctx context.Context) error
	// LeaseDeadline is the local lease deadline (zero before the first
	// renewal); each renewal moves it forward.
	LeaseDeadline() time.Time
	// LeaseTiming is how long until the local lease deadline, the round
	// trip of the last renewal and the lease's TTL (admission control).
	LeaseTiming() (margin, keepAlive, ttl time.Duration)
	// BinaryRecords reports whether every node reads binary records: until
	// then alarm records and request rings are written as JSON.
	BinaryRecords() bool
}

// Committer is the group commit the node stages its objects' writes to
// (commit.Committer implements it).
type Committer interface {
	Submit(*commit.Request)
	// Limits are the largest request the committer sends in one Txn.
	Limits() (ops, bytes int)
	// Idle reports whether nothing is queued or in flight.
	Idle() bool
	// Latency is the moving average of a commit Txn's round trip.
	Latency() time.Duration
}

// Reader is the group read of point keys (commit.Reader implements it).
type Reader interface {
	Get(ctx context.Context, keys ...string) ([]*mvccpb.KeyValue, error)
}

// Deps are what a node runs on; the agent wires them.
type Deps struct {
	// KV serves List's range reads, the node's only direct etcd reads.
	KV clientv3.KV
	// Commits and Reads are the node's group commit and group read.
	Commits Committer
	Reads   Reader
	// Membership is the node's lease and view of the cluster.
	Membership Membership
	// Partitions is the cluster's partition count and HomeDCs its home data
	// centers (placement.Meta): together they map IDs, located ones
	// included, to partitions.
	Partitions int
	HomeDCs    []string
}

// Node runs objects. Create it with New, Start it, serve partitions through
// it (placement.Host), and Stop it.
type Node struct {
	cfg        Config
	log        *slog.Logger
	reg        *Registry
	keys       keyspace.Space
	partitions int
	layout     durable.Layout
	member     Membership
	sched      *alarmstore.Schedule
	env        *env
	tab        *table
	adm        *admission
	peers      peerConns
	// unservedLog bounds the lines about alarms of classes not served here.
	unservedLog *rate.Limiter

	// ctx lives from Start until Stop; background work (commits, loads)
	// uses it so a caller's cancellation never leaves a commit ambiguous.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the schedule, the sweeper and every object goroutine
}

// New returns a node; deps are the caller's and stay so.
func New(cfg Config, reg *Registry, deps Deps) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node: invalid config: %w", err)
	}
	if reg == nil || deps.KV == nil || deps.Commits == nil || deps.Reads == nil || deps.Membership == nil || deps.Partitions < 1 {
		return nil, errors.New("node: registry, etcd KV, committer, reader, membership and partition count are required")
	}
	keys := keyspace.New(cfg.Prefix)
	n := &Node{
		cfg: cfg, log: cfg.Logger.With("component", "node", "node", cfg.ID), reg: reg, keys: keys,
		partitions: deps.Partitions, layout: durable.NewLayout(deps.Partitions, deps.HomeDCs), member: deps.Membership,
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.peers.opts = tracing.DialOptions(n.cfg.TracerProvider)
	n.peers.creds = n.cfg.PeerCredentials
	n.unservedLog = rate.NewLimiter(rate.Every(time.Second), 5)
	n.adm = newAdmission(&n.cfg)
	n.tab = newTable(&n.wg, n.adm)
	records := alarmstore.New(deps.KV, keys).WithFormat(deps.Membership.BinaryRecords)
	n.sched = alarmstore.NewSchedule(records, alarmstore.ScheduleConfig{
		Clock: cfg.Clock, Window: cfg.AlarmWindow, MaxRunning: cfg.MaxRunningAlarms, Partitions: deps.Partitions,
		Logger: n.log.With("component", "schedule"),
	}, n.deliverAlarm)
	policy := alarmstore.DefaultPolicy(cfg.Jitter)
	policy.SystemRetryDelay = cfg.SystemRetryDelay
	n.env = &env{
		node: cfg.ID, cfg: &n.cfg, policy: policy, clock: cfg.Clock, log: n.log, m: n.cfg.Metrics, keys: keys, dataKeyBase: len(keys.DataPrefix(0, "", "")), kv: deps.KV,
		retryLog: rate.NewLimiter(retryLogRate, retryLogRate),
		commits:  deps.Commits, reads: deps.Reads, alarms: n.sched, records: records, ctx: n.ctx, tab: n.tab,
		calls: n, binary: deps.Membership.BinaryRecords, leaseValid: deps.Membership.LeaseValid,
		unconfirmed: fmt.Errorf("%w: node %s cannot confirm its lease", durable.ErrUnavailable, cfg.ID),
	}
	if tracing.Enabled(n.cfg.TracerProvider) {
		n.env.tracer = n.cfg.TracerProvider.Tracer("github.com/durable-run/durable/node")
	}
	return n, nil
}

// Config returns the node's validated configuration.
func (n *Node) Config() Config { return n.cfg }

// Registry returns the node's class registry.
func (n *Node) Registry() *Registry { return n.reg }

// Keys returns the node's key space.
func (n *Node) Keys() keyspace.Space { return n.keys }

// PartitionCount returns the cluster's partition count.
func (n *Node) PartitionCount() int { return n.partitions }

// partitionOf maps an object ID to its partition.
func (n *Node) partitionOf(id durable.ID) int { return n.layout.Partition(id) }

// Layout returns how the cluster maps IDs to partitions.
func (n *Node) Layout() durable.Layout { return n.layout }

// now is the node's clock.
func (n *Node) now() time.Time { return n.cfg.Clock.Now() }

// Start starts the node's background work: the alarm schedule and the
// sweeper of idle objects.
func (n *Node) Start() {
	n.wg.Go(func() { n.sched.Run(n.ctx) })
	n.wg.Go(n.evictLoop)
	n.wg.Go(n.admissionLoop)
	n.wg.Go(n.leaseGuard)
}

// leaseGuard cancels the contexts of the handlers running when the node's
// local lease deadline passes before a renewal moved it: from then on
// another node may own their partitions, and a handler that heeds its
// context must stop acting on the world before that node runs the same
// object (a starved process, whose renewals are late, keeps running its
// handlers; nothing they write can commit, but what they send out could
// overlap the next owner's run). It acts once per deadline, so a late
// renewal that opened a short valid window, in which handlers started, is
// followed by another cancellation when that window closes; while the
// lease is unconfirmed it looks every leaseGuardPoll. It waits on the real
// clock, as the deadline is. runHandler starts no handler past the
// deadline.
func (n *Node) leaseGuard() {
	t := time.NewTimer(0)
	defer t.Stop()
	var handled time.Time // the deadline last acted on
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		deadline := n.member.LeaseDeadline()
		cancel, wait := lapseStep(time.Now(), deadline, handled)
		t.Reset(wait)
		if !cancel {
			continue
		}
		running, stopping := n.tab.runningHandlers()
		if stopping {
			continue
		}
		handled = deadline
		// Counted before any handler learns of its cancellation.
		n.cfg.Metrics.LeaseLapses.Inc()
		n.cfg.Metrics.LapseAborts.Add(float64(len(running)))
		for _, w := range running {
			w.cancel(n.env.unconfirmed)
		}
		if len(running) > 0 {
			n.log.Warn("lease unconfirmed past its local deadline; cancelled the handlers running", "handlers", len(running))
		}
	}
}

// lapseStep is the lease guard's rule: woken at now, with the local lease
// deadline (zero before the first renewal) and the deadline it last acted
// on, it cancels the running handlers if the deadline has passed and is
// not the one it acted on, and looks again when the deadline comes or,
// past it, after leaseGuardPoll.
func lapseStep(now, deadline, handled time.Time) (cancel bool, wait time.Duration) {
	if left := deadline.Sub(now); left > 0 {
		return false, left
	}
	return !deadline.IsZero() && !deadline.Equal(handled), leaseGuardPoll
}

// leaseGuardPoll is how often the lease guard looks for a renewal while
// the lease is unconfirmed: a handler started in a valid window that a late
// renewal opened runs at most this long past the window's end.
const leaseGuardPoll = 20 * time.Millisecond

// admissionTick is how often admission control looks at the node's
// pressure. It runs on real time: it reacts to real load.
const admissionTick = 100 * time.Millisecond

// admissionLoop adapts the call bound, and with it the activation rate and
// the alarm delivery bound, to the node's pressure.
func (n *Node) admissionLoop() {
	t := time.NewTicker(admissionTick)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		margin, keepAlive, ttl := n.member.LeaseTiming()
		_, alarms := n.adm.tick(pressure{
			LeaseMargin: margin, TTL: ttl, KeepAlive: keepAlive, KeepAliveBudget: ttl / 6, // half a renewal's timeout
			Commit: n.env.commits.Latency(), CommitTarget: n.cfg.CommitLatencyTarget,
			CallTarget: n.cfg.CallLatencyTarget,
		})
		n.sched.SetMaxRunning(alarms)
	}
}

// Admission returns the node's admission control counters.
func (n *Node) Admission() AdmissionStats { return n.adm.stats() }

// Stop stops every object (queued callers get ErrUnavailable; pending
// commits settle first), the schedule and the sweeper, and closes the
// connections to peers. Partitions are no longer served. Call it once,
// after the member stopped claiming.
func (n *Node) Stop() {
	for _, o := range n.tab.stop() {
		o.stopAndWait(fmt.Errorf("%w: node is stopping", durable.ErrUnavailable))
	}
	for p := range n.partitions {
		n.sched.Drop(p)
	}
	n.cancel()
	n.wg.Wait()
	n.peers.closeAll()
	n.log.Info("node stopped")
}

// Serve makes p serve events under token and loads its alarm window,
// retrying until it succeeds, p is dropped or ctx ends (placement.Host).
func (n *Node) Serve(ctx context.Context, p int, token int64) {
	if !n.tab.serve(p, token) {
		return
	}
	// The backoff paces etcd reads: real time, not the injected clock.
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		err := n.sched.Claim(ctx, p)
		if err == nil || n.tab.token(p) != token || ctx.Err() != nil {
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

// Quiesce stops p for a handoff: no new events (callers wait and follow the
// partition), its alarms leave the schedule, every object of p finishes the
// event it is running and its commits settle (placement.Host).
func (n *Node) Quiesce(p int) {
	objs := n.tab.unserve(p, 0)
	n.sched.Drop(p)
	moved := fmt.Errorf("%w: partition %d moved to another node", durable.ErrOwnershipLost, p)
	for _, o := range objs {
		o.stopAndWait(moved)
	}
	n.log.Debug("partition quiesced", "partition", p, "objects", len(objs))
}

// Drop forgets p at once after its tenure under token ended: every object
// of p is stopped, failing its queued callers with cause (they follow the
// partition: nothing of theirs committed), the contexts of the handlers
// running are cancelled (nothing they do can commit), and p's alarms leave
// the schedule (placement.Host).
func (n *Node) Drop(p int, token int64, cause error) {
	objs := n.tab.unserve(p, token)
	n.sched.Drop(p)
	for _, o := range objs {
		o.abort(cause)
		o.stop(cause)
	}
}

// deliverAlarm is the schedule's callback: it activates the object and asks
// it to look at its alarm, and reports whether the object took the delivery
// (it then releases it when done). Past the local lease deadline the node
// starts no event, alarms included: another node may own the partition by
// now, and its handler would run concurrently. The alarm is looked at again
// later; if the partition is dropped meanwhile, its next owner loads the
// alarm from etcd.
func (n *Node) deliverAlarm(e alarmstore.Entry) bool {
	if !n.member.LeaseValid() {
		n.sched.RetryAt(e.Partition, e.Class, e.ID, n.now().Add(n.cfg.SystemRetryDelay))
		return false
	}
	class, err := n.reg.Lookup(e.Class)
	if err != nil {
		// Never parked silently: it waits for a node that serves the
		// class (the leaders assign partitions only to nodes serving every
		// required class; a class added in a rolling deploy is required
		// once every node serves it).
		n.cfg.Metrics.AlarmUnserved.WithLabelValues(e.Class).Inc()
		if n.unservedLog.Allow() {
			n.log.Warn("alarm of a class this node does not serve: it waits for a node that does", "class", e.Class, "id", e.ID,
				"partition", e.Partition, "retry_in", unservedRetry)
		}
		n.sched.RetryAt(e.Partition, e.Class, e.ID, n.now().Add(unservedRetry))
		return false
	}
	ok, full := n.tab.deliver(n.env, class, e.ID, e.Partition)
	if full {
		// Memory is full of objects: the alarm waits, it is not dropped.
		n.sched.RetryAt(e.Partition, e.Class, e.ID, n.now().Add(retryAfterPressure))
	}
	return ok
}

// unservedRetry is how often an alarm of a class the node does not serve
// is looked at again.
const unservedRetry = 30 * time.Second

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
		n.tab.sweep(n.now(), false)
	}
}

// ActiveObjects returns the number of objects in memory.
func (n *Node) ActiveObjects() int { return n.tab.size() }

// ServedPartitions returns the partitions the node serves.
func (n *Node) ServedPartitions() []int { return n.tab.served() }

// ScheduledAlarms returns the number of alarms held in the look-ahead window.
func (n *Node) ScheduledAlarms() int { return n.sched.Size() }

// RunningAlarms returns the number of alarms handed to objects whose
// handling has not finished.
func (n *Node) RunningAlarms() int { return n.sched.Running() }

// AlarmsOverdue returns the alarms in memory that are due and not yet
// handed to their objects.
func (n *Node) AlarmsOverdue() int { return n.sched.Overdue(n.cfg.Clock.Now()) }

// MaxRunningAlarms returns the current bound on alarms handed out at once.
func (n *Node) MaxRunningAlarms() int { return n.sched.MaxRunning() }

// Quiet reports whether the node has nothing to do at its clock's current
// time: no alarm due and undelivered (see alarmstore.Schedule.Quiet), no
// object running an event, no commit queued or in flight. Tests that move
// a fake clock wait until it holds before checking that nothing ran.
func (n *Node) Quiet() bool {
	return n.sched.Quiet() && n.tab.quiet() && n.env.commits.Idle()
}
