package placement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/metrics"
)

// Host is what a member asks of the runtime that serves its partitions (the
// node). The member calls it from its own goroutines, never holding its
// lock.
type Host interface {
	// Serve makes p serve events under token, the fencing token of a
	// tenure just claimed, and loads what p needs (its alarm window). It
	// returns when that is done, when p is dropped meanwhile, or when ctx
	// ends.
	Serve(ctx context.Context, p int, token int64)
	// Quiesce stops p for a graceful handoff: no new event of p starts,
	// the events in flight finish and their commits settle. It returns
	// when nothing of p runs any more.
	Quiesce(p int)
	// Drop forgets p at once: its tenure under token ended (lease lost,
	// owner key gone, a fence failed) and nothing of p may commit. It must
	// not wait for events in flight.
	Drop(p int, token int64, cause error)
}

// MemberConfig configures a Member.
type MemberConfig struct {
	// ID, DC and Advertise are the node's registration, with Classes, the
	// classes it serves: the leaders assign partitions only to nodes that
	// serve every class the cluster requires.
	ID, DC, Advertise string
	Classes           []string
	// LeaseTTL is the TTL of the node's lease: whole seconds.
	LeaseTTL time.Duration
	// CommitTimeout bounds the member's own writes (release, drain mark).
	CommitTimeout time.Duration
	// Clock drives the drain deadline. Lease timing is etcd's and runs on
	// real time.
	Clock clockwork.Clock
	// Leases, when set, grants and renews the node's lease on a connection
	// of its own (the agent dials one), so that renewals do not queue
	// behind the node's commits and reads on a busy connection. Nil: the
	// member's client.
	Leases clientv3.Lease
	// Logger receives the member's logs.
	Logger *slog.Logger
	// Metrics receives the lease's and the tenures' figures; nil:
	// metrics.Discard().
	Metrics *metrics.Set
}

// Member is one node's membership: its lease (keep-alive, local deadline),
// its registration, its view of the cluster (registrations, assignments,
// owners, from watches) and the partitions it owns (claims, handoffs,
// drain). It asks its Host to serve, quiesce and drop partitions.
//
// Concurrency: mu guards the view, the owned partitions and the flags; lmu
// guards the local lease deadline. Neither is held across etcd calls or
// calls into the Host. Lock order: mu before lmu (in practice never nested).
// Run's goroutines (keep-alive, watch loop, handoffs, claims) are all waited
// for before Run returns.
type Member struct {
	cfg    MemberConfig
	client *clientv3.Client
	keys   keyspace.Space
	meta   Meta
	log    *slog.Logger
	freeze Freezer

	lmu        sync.Mutex
	validUntil time.Time // local lease deadline (monotonic); serving stops past it

	keepAliveNS    atomic.Int64 // round trip of the last successful renewal
	binary         atomic.Bool  // every registered node reads binary records (BinaryRecords)
	leaseLosses    atomic.Int64
	partitionsLost atomic.Int64

	mu       sync.Mutex
	host     Host
	owned    map[int]*tenure
	nodes    map[string]NodeInfo // live registrations, from the watch
	owners   map[int]Owner       // owner keys, from the watch
	assign   map[int]Assignment  // desired placement, from the watch
	changed  chan struct{}       // closed and replaced whenever the above change
	draining bool
	stopping bool
	lease    clientv3.LeaseID

	kick chan struct{} // asks the watch loop to reconcile now
}

// tenure is one partition this member owns.
type tenure struct {
	token   int64 // fencing token
	handoff bool  // being handed to another node
}

// NewMember returns a member of the cluster described by meta; Register
// it, then Run it.
func NewMember(cfg MemberConfig, client *clientv3.Client, keys keyspace.Space, meta Meta) *Member {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Leases == nil {
		cfg.Leases = client
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	return &Member{
		cfg: cfg, client: client, keys: keys, meta: meta,
		log:     cfg.Logger.With("component", "member"),
		owned:   map[int]*tenure{},
		nodes:   map[string]NodeInfo{},
		owners:  map[int]Owner{},
		assign:  map[int]Assignment{},
		changed: make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
}

// Freeze simulates a process pause (SIGSTOP) for tests; see Freezer.
func (m *Member) Freeze() { m.freeze.Freeze() }

// Thaw ends Freeze.
func (m *Member) Thaw() { m.freeze.Thaw() }

// Gate blocks while the member is frozen.
func (m *Member) Gate(ctx context.Context) error { return m.freeze.Gate(ctx) }

// Register creates the node's lease and registration, trying again with
// backoff while etcd refuses (unreachable, or full: a lease grant is a
// write) until ctx ends. A registration of the same id under another lease
// may belong to a crashed incarnation of this node: it is waited out for
// one lease TTL (real time: it is etcd's expiry) before the id is declared
// in use by a live process (ErrNodeIDInUse, returned at once).
func (m *Member) Register(ctx context.Context) error {
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		_, err := m.grantAndRegister(ctx)
		if err == nil || errors.Is(err, ErrNodeIDInUse) || ctx.Err() != nil {
			return err
		}
		m.log.Warn("registration failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

// info is the node's record as it registers now: a draining node that
// registers again (its lease was lost) stays draining, or the leader would
// assign it partitions it never claims.
func (m *Member) info() NodeInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return NodeInfo{ID: m.cfg.ID, DC: m.cfg.DC, Address: m.cfg.Advertise, Draining: m.draining, Classes: JoinClasses(m.cfg.Classes), Records: RecordsVersion}
}

func (m *Member) grantAndRegister(ctx context.Context) (clientv3.LeaseID, error) {
	ttl := int64(m.cfg.LeaseTTL / time.Second)
	info := m.info()
	giveUp := time.Now().Add(m.cfg.LeaseTTL + time.Second)
	for {
		sent := time.Now()
		lg, err := m.cfg.Leases.Grant(ctx, ttl)
		if err != nil {
			return 0, fmt.Errorf("placement: grant lease: %w", err)
		}
		err = Register(ctx, m.client, m.keys, info, lg.ID)
		if err == nil {
			m.mu.Lock()
			m.lease = lg.ID
			m.mu.Unlock()
			m.extendLease(sent, lg.TTL, time.Since(sent))
			m.log.Info("node registered", "address", m.cfg.Advertise, "lease", int64(lg.ID), "ttl", ttl)
			return lg.ID, nil
		}
		_, _ = m.cfg.Leases.Revoke(context.Background(), lg.ID)
		if !errors.Is(err, ErrNodeIDInUse) || time.Now().After(giveUp) {
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
func (m *Member) leaseMargin() time.Duration { return m.cfg.LeaseTTL / 6 }

// extendLease records a keep-alive sent at sent that etcd answered with ttl
// seconds after took: the lease cannot expire before sent + ttl, because
// etcd renewed it after sent.
func (m *Member) extendLease(sent time.Time, ttl int64, took time.Duration) {
	m.keepAliveNS.Store(int64(took))
	m.cfg.Metrics.KeepAliveSeconds.Observe(took.Seconds())
	until := sent.Add(time.Duration(ttl)*time.Second - m.leaseMargin())
	m.lmu.Lock()
	if until.After(m.validUntil) {
		m.validUntil = until
	}
	m.lmu.Unlock()
}

// LeaseHealth is what a member knows of its lease.
type LeaseHealth struct {
	// Registered: the member holds a lease and its registration.
	Registered bool
	// Margin is how long until the local lease deadline (negative: past
	// it, the node serves nothing); TTL is the lease's.
	Margin, TTL time.Duration
	// KeepAlive is the round trip of the last successful renewal.
	KeepAlive time.Duration
	// Draining: the node is handing its partitions away, or has.
	Draining bool
	// LeaseLosses counts the leases lost (expired in etcd) and
	// PartitionsLost the tenures that ended without a handoff (lease lost,
	// owner key deleted, a fence failed), since the member started.
	LeaseLosses, PartitionsLost int64
}

// Health returns the member's lease health.
func (m *Member) Health() LeaseHealth {
	m.mu.Lock()
	h := LeaseHealth{Registered: m.lease != 0 && !m.stopping, TTL: m.cfg.LeaseTTL, Draining: m.draining}
	m.mu.Unlock()
	m.lmu.Lock()
	h.Margin = time.Until(m.validUntil)
	m.lmu.Unlock()
	h.KeepAlive = time.Duration(m.keepAliveNS.Load())
	h.LeaseLosses, h.PartitionsLost = m.leaseLosses.Load(), m.partitionsLost.Load()
	return h
}

// LeaseTiming returns how long until the local lease deadline, the round
// trip of the last renewal and the lease's TTL.
func (m *Member) LeaseTiming() (margin, keepAlive, ttl time.Duration) {
	m.lmu.Lock()
	margin = time.Until(m.validUntil)
	m.lmu.Unlock()
	return margin, time.Duration(m.keepAliveNS.Load()), m.cfg.LeaseTTL
}

// LeaseDeadline returns the local lease deadline (zero before the first
// renewal): the node serves until then. Each renewal moves it forward.
func (m *Member) LeaseDeadline() time.Time {
	m.lmu.Lock()
	defer m.lmu.Unlock()
	return m.validUntil
}

// LeaseValid reports whether the node may serve: its lease is certainly
// alive. Past the local deadline the node refuses events (reads included)
// until a keep-alive confirms the lease again, so a paused or cut-off node
// never serves a stale read after another node may have taken over.
func (m *Member) LeaseValid() bool {
	m.lmu.Lock()
	defer m.lmu.Unlock()
	return time.Now().Before(m.validUntil)
}

// Run keeps the lease alive, watches the cluster and reconciles ownership
// with the assignments until ctx ends (nil), asking host to serve what it
// claims. When the lease is lost it drops every partition, takes a new
// lease, registers again and carries on — unless another live process has
// taken the node's id meanwhile: then it returns ErrNodeIDInUse. Register
// must have succeeded.
func (m *Member) Run(ctx context.Context, host Host) error {
	m.mu.Lock()
	m.host = host
	lease := m.lease
	m.mu.Unlock()
	var handoffs sync.WaitGroup
	defer handoffs.Wait()
	for {
		err := m.session(ctx, lease, &handoffs)
		if ctx.Err() != nil {
			return nil
		}
		m.leaseLosses.Add(1)
		m.cfg.Metrics.LeaseLosses.Inc()
		m.dropAll(fmt.Errorf("%w: %w", durable.ErrOwnershipLost, err))
		m.log.Warn("lease lost; registering again", "err", err)
		m.mu.Lock()
		m.lease = 0
		m.mu.Unlock()
		if err := m.Register(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Error("cannot register again", "err", err)
			return err
		}
		m.mu.Lock()
		lease = m.lease
		m.mu.Unlock()
	}
}

// session runs while lease is alive; it returns why it ended (nil: ctx).
func (m *Member) session(ctx context.Context, lease clientv3.LeaseID, handoffs *sync.WaitGroup) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var keepAlive sync.WaitGroup
	defer keepAlive.Wait()
	keepAlive.Go(func() {
		err := KeepAlive(sctx, m.cfg.Leases, lease, m.cfg.LeaseTTL/3, m.Gate, m.extendLease, func(err error) {
			m.log.Warn("keep-alive failed; serving stops at the lease deadline unless one succeeds", "err", err)
		})
		if err != nil {
			cancel(err)
		}
	})
	for sctx.Err() == nil {
		err := m.watchAndReconcile(sctx, lease, handoffs)
		if sctx.Err() == nil {
			m.log.Warn("cluster watch broke; reloading", "err", err)
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

// watchAndReconcile loads nodes/, assign/ and owner/, then follows them with
// watches, reconciling after every change and every lease TTL. It returns
// when a watch breaks (the caller reloads) or ctx ends.
func (m *Member) watchAndReconcile(ctx context.Context, lease clientv3.LeaseID, handoffs *sync.WaitGroup) error {
	v, err := Read(ctx, m.client, m.keys, m.meta)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.nodes, m.owners, m.assign = v.Nodes, v.Owners, v.Assign
	m.changedLocked()
	m.mu.Unlock()

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	rev := clientv3.WithRev(v.Revision + 1)
	nodeWatch := m.client.Watch(wctx, m.keys.NodesPrefix(), clientv3.WithPrefix(), rev)
	ownerWatch := m.client.Watch(wctx, m.keys.OwnerPrefix(), clientv3.WithPrefix(), clientv3.WithPrevKV(), rev)
	assignWatch := m.client.Watch(wctx, m.keys.AssignPrefix(), clientv3.WithPrefix(), rev)
	tick := time.NewTicker(m.cfg.LeaseTTL)
	defer tick.Stop()
	m.reconcile(ctx, lease, handoffs)
	for {
		select {
		case <-ctx.Done():
			return nil
		case wr, ok := <-nodeWatch:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("nodes watch: %v", wr.Err())
			}
			m.applyNodeEvents(wr.Events)
		case wr, ok := <-ownerWatch:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("owner watch: %v", wr.Err())
			}
			m.applyOwnerEvents(wr.Events)
		case wr, ok := <-assignWatch:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("assign watch: %v", wr.Err())
			}
			m.applyAssignEvents(wr.Events)
		case <-tick.C:
		case <-m.kick:
		}
		if err := m.Gate(ctx); err != nil {
			return nil
		}
		m.reconcile(ctx, lease, handoffs)
	}
}

func (m *Member) applyNodeEvents(evs []*clientv3.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ev := range evs {
		id := string(ev.Kv.Key)[len(m.keys.NodesPrefix()):]
		if ev.Type == clientv3.EventTypeDelete {
			delete(m.nodes, id)
			continue
		}
		if ni, err := ParseNode(id, ev.Kv.Value); err == nil {
			m.nodes[id] = ni
		}
	}
	m.changedLocked()
}

func (m *Member) applyAssignEvents(evs []*clientv3.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ev := range evs {
		p, ok := keyspace.ParsePartitionKey(string(ev.Kv.Key), m.keys.AssignPrefix())
		if !ok {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			delete(m.assign, p)
			continue
		}
		a, err := ParseAssignment(ev.Kv.Value, ev.Kv.ModRevision)
		if err != nil {
			m.log.Warn("ignoring an assignment", "partition", p, "err", err)
			continue
		}
		m.assign[p] = a
	}
	m.changedLocked()
}

func (m *Member) applyOwnerEvents(evs []*clientv3.Event) {
	var lost []Owner
	var lostP []int
	m.mu.Lock()
	for _, ev := range evs {
		p, ok := keyspace.ParsePartitionKey(string(ev.Kv.Key), m.keys.OwnerPrefix())
		if !ok {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			delete(m.owners, p)
			if t := m.owned[p]; t != nil && !t.handoff && ev.PrevKv != nil && ev.PrevKv.CreateRevision == t.token {
				// Our owner key is gone (lease expired, or deleted behind
				// our back): the tenure is over.
				lost = append(lost, Owner{Node: m.cfg.ID, Token: t.token})
				lostP = append(lostP, p)
			}
			continue
		}
		m.owners[p] = Owner{Node: string(ev.Kv.Value), Token: ev.Kv.CreateRevision}
	}
	m.changedLocked()
	m.mu.Unlock()
	for i, p := range lostP {
		m.lose(p, lost[i].Token, fmt.Errorf("%w: owner key of partition %d deleted", durable.ErrOwnershipLost, p), "owner_deleted")
	}
}

// changedLocked records a change of the view or the owned partitions and
// wakes waiters. Caller holds m.mu.
func (m *Member) changedLocked() {
	binary := len(m.nodes) > 0
	for _, n := range m.nodes {
		binary = binary && n.Records >= RecordsVersion
	}
	m.binary.Store(binary)
	close(m.changed)
	m.changed = make(chan struct{})
}

// BinaryRecords reports whether records may be written binary: every node
// registered reads them. Until then (a rolling upgrade from a version that
// reads JSON only, or before the view is loaded) records are written as
// JSON, which every version reads. Once every node is upgraded, a node of
// the earlier version must not join again: it cannot read what was written
// since.
func (m *Member) BinaryRecords() bool { return m.binary.Load() }

// Changed returns a channel closed at the next change of the view or of
// the owned partitions.
func (m *Member) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// OwnerAddr returns the address of p's owner as far as the view knows, ""
// if p has no owner, the owner is this node, or its address is unknown.
func (m *Member) OwnerAddr(p int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if o, ok := m.owners[p]; ok && o.Node != m.cfg.ID {
		return m.nodes[o.Node].Address
	}
	return ""
}

// desiredLocked is the node that should own p: the one its data center's
// leader assigned, if that node is live and not draining, else "" (nobody
// claims; an owner does not hand off to a node that is gone). Caller holds
// m.mu.
func (m *Member) desiredLocked(p int) string {
	a, ok := m.assign[p]
	if !ok {
		return ""
	}
	if ni, live := m.nodes[a.Node]; !live || ni.Draining {
		return ""
	}
	return a.Node
}

// Settled reports whether, as far as this member sees, placement has
// converged: every partition is owned by the node the assignments want,
// and this member is not handing any partition off.
func (m *Member) Settled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := 0; p < m.meta.Partitions; p++ {
		if o, ok := m.owners[p]; !ok || o.Node != m.desiredLocked(p) {
			return false
		}
	}
	for _, t := range m.owned {
		if t.handoff {
			return false
		}
	}
	return true
}

// Sees reports whether the member's view of the cluster is snap: the same
// registrations, assignments and owners. Tests compare every member's view
// with what etcd holds before they act on "settled": a view lags etcd by
// its watches' delivery.
func (m *Member) Sees(snap Snapshot) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.nodes) != len(snap.Nodes) || len(m.owners) != len(snap.Owners) || len(m.assign) != len(snap.Assign) {
		return false
	}
	for id, ni := range snap.Nodes {
		if m.nodes[id] != ni {
			return false
		}
	}
	for p, o := range snap.Owners {
		if m.owners[p] != o {
			return false
		}
	}
	for p, a := range snap.Assign {
		if m.assign[p] != a {
			return false
		}
	}
	return true
}

// Owned returns the partitions this member owns.
func (m *Member) Owned() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]int, 0, len(m.owned))
	for p := range m.owned {
		out = append(out, p)
	}
	return out
}

// WaitOwning blocks until the member owns at least one partition or ctx
// ends.
func (m *Member) WaitOwning(ctx context.Context) error {
	for {
		m.mu.Lock()
		owning, wait := len(m.owned) > 0, m.changed
		m.mu.Unlock()
		if owning {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Handoffs in flight at once: one while rebalancing (gradual), a few while
// draining (fast shutdown).
const (
	rebalanceHandoffs = 1
	drainHandoffs     = 4
)

// claimParallelism bounds the claims one member runs at once.
const claimParallelism = 16

// reconcile claims the partitions the assignments give this node and hands
// off those they give to others.
func (m *Member) reconcile(ctx context.Context, lease clientv3.LeaseID, handoffs *sync.WaitGroup) {
	if !m.LeaseValid() {
		return
	}
	m.mu.Lock()
	active := 0
	for _, t := range m.owned {
		if t.handoff {
			active++
		}
	}
	limit := rebalanceHandoffs
	if m.draining {
		limit = drainHandoffs
	}
	var claims, moves []int
	for p := 0; p < m.meta.Partitions; p++ {
		want := m.desiredLocked(p)
		t := m.owned[p]
		_, taken := m.owners[p]
		switch {
		case t == nil && want == m.cfg.ID && !taken && !m.draining && !m.stopping:
			claims = append(claims, p)
		case t != nil && !t.handoff && want != "" && want != m.cfg.ID && active < limit:
			t.handoff = true
			active++
			moves = append(moves, p)
		}
	}
	if len(moves) > 0 {
		m.changedLocked()
	}
	host := m.host
	m.mu.Unlock()
	for _, p := range moves {
		handoffs.Go(func() { m.handoff(p) })
	}
	// Claims (a Txn, then a window read each) run side by side: a node
	// taking over a dead node's partitions serves them all after a few
	// round trips, not one per partition.
	var wg sync.WaitGroup
	sem := make(chan struct{}, claimParallelism)
	for _, p := range claims {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			token, _, err := Claim(ctx, m.client, m.keys, p, m.cfg.ID, lease)
			if err != nil {
				if !errors.Is(err, ErrOwned) && ctx.Err() == nil {
					m.log.Warn("claim failed", "partition", p, "err", err)
				}
				return
			}
			m.mu.Lock()
			m.owned[p] = &tenure{token: token}
			m.owners[p] = Owner{Node: m.cfg.ID, Token: token}
			m.changedLocked()
			m.mu.Unlock()
			m.cfg.Metrics.OwnershipChanges.WithLabelValues("gained", "claimed").Inc()
			m.log.Debug("partition claimed", "partition", p, "token", token)
			host.Serve(ctx, p, token)
		})
	}
	wg.Wait()
}

// handoff moves p to another node gracefully: the host quiesces p (no new
// events; in-flight ones finish and commit), then owner/p is released for
// the new owner to claim.
func (m *Member) handoff(p int) {
	start := time.Now()
	m.mu.Lock()
	t, host := m.owned[p], m.host
	m.mu.Unlock()
	if t == nil {
		return
	}
	host.Quiesce(p)
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CommitTimeout)
	err := Release(ctx, m.client, m.keys, p, t.token)
	cancel()
	if err != nil {
		// The lease will free it if the release never lands.
		m.log.Warn("release during handoff failed", "partition", p, "err", err)
	}
	m.mu.Lock()
	if m.owned[p] == t {
		delete(m.owned, p)
	}
	m.changedLocked()
	m.mu.Unlock()
	m.cfg.Metrics.OwnershipChanges.WithLabelValues("released", "handoff").Inc()
	m.log.Debug("partition handed off", "partition", p, "took", time.Since(start))
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Lost ends the tenure of p under token (0: whatever tenure) because a
// fence failed: another node owns p now. The host drops p.
func (m *Member) Lost(p int, token int64, cause error) { m.lose(p, token, cause, "fence_failed") }

// lose ends the tenure of p under token (0: whatever tenure); why names the
// cause in the metrics.
func (m *Member) lose(p int, token int64, cause error, why string) {
	m.mu.Lock()
	t, ok := m.owned[p]
	if !ok || (token != 0 && t.token != token) {
		m.mu.Unlock()
		return
	}
	delete(m.owned, p)
	m.changedLocked()
	host := m.host
	m.mu.Unlock()
	m.partitionsLost.Add(1)
	m.cfg.Metrics.OwnershipChanges.WithLabelValues("lost", why).Inc()
	if host != nil {
		host.Drop(p, t.token, cause)
	}
	m.log.Warn("partition lost", "partition", p, "token", t.token, "cause", cause)
}

// dropAll ends every tenure.
func (m *Member) dropAll(cause error) {
	for _, p := range m.Owned() {
		m.lose(p, 0, cause, "lease_lost")
	}
}

// drainLimit bounds a drain; what is left is released at shutdown and
// claimed by the others without waiting for a lease to expire.
const drainLimit = 30 * time.Second

// Drain marks the node draining and waits (bounded by drainLimit on the
// member's clock) until other nodes own its partitions. With no other live
// node in its data center there is nowhere to go: it returns and Close
// releases the partitions. The member keeps running without partitions.
func (m *Member) Drain() {
	m.mu.Lock()
	m.draining = true
	lease := m.lease
	m.mu.Unlock()
	if lease == 0 {
		return // not registered: it owns nothing
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CommitTimeout)
	err := Register(ctx, m.client, m.keys, m.info(), lease)
	cancel()
	if err != nil {
		m.log.Warn("could not mark the node draining", "err", err)
		return
	}
	m.log.Info("draining")
	// Only nodes serving every required class can take the partitions.
	var required []string
	rctx, rcancel := context.WithTimeout(context.Background(), m.cfg.CommitTimeout)
	if resp, err := m.client.Get(rctx, m.keys.Classes()); err == nil && len(resp.Kvs) > 0 && len(resp.Kvs[0].Value) > 0 {
		required = strings.Split(string(resp.Kvs[0].Value), ",")
	}
	rcancel()
	deadline := m.cfg.Clock.After(drainLimit)
	for {
		m.mu.Lock()
		owned := len(m.owned)
		// Released is not enough: wait until another node owns each
		// partition, so a caller of Drain sees them all placed.
		remaining := 0
		for p := 0; p < m.meta.Partitions; p++ {
			if o, ok := m.owners[p]; !ok || o.Node == m.cfg.ID {
				remaining++
			}
		}
		// Partitions move within the data center; with no other local
		// node they wait for another data center to adopt them.
		others := 0
		for id, ni := range m.nodes {
			if id != m.cfg.ID && !ni.Draining && ni.DC == m.cfg.DC && ni.Serves(required) {
				others++
			}
		}
		wait := m.changed
		m.mu.Unlock()
		switch {
		case remaining == 0:
			m.log.Info("drained")
			return
		case others == 0:
			m.log.Info("no other node in the data center to drain to; partitions are released at shutdown and adopted by another data center after its grace period", "owned", owned)
			return
		}
		select {
		case m.kick <- struct{}{}:
		default:
		}
		select {
		case <-wait:
		case <-deadline:
			m.log.Warn("drain timed out; releasing the rest", "left", remaining)
			return
		}
	}
}

// Close ends the membership after Run has returned and the host has
// stopped serving: unless crashed (a simulated SIGKILL, for tests), the
// remaining partitions are released, so successors need not wait for the
// lease to expire, and the lease is revoked.
func (m *Member) Close(crashed bool) {
	m.mu.Lock()
	m.stopping = true
	owned := m.owned
	m.owned = map[int]*tenure{}
	lease := m.lease
	m.changedLocked()
	m.mu.Unlock()
	if crashed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CommitTimeout)
	defer cancel()
	for p, t := range owned {
		if err := Release(ctx, m.client, m.keys, p, t.token); err != nil {
			m.log.Warn("release partition failed", "partition", p, "err", err)
		}
	}
	if lease != 0 {
		if _, err := m.cfg.Leases.Revoke(ctx, lease); err != nil {
			m.log.Warn("revoke lease failed", "err", err)
		}
	}
}
