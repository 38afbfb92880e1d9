// Package leader elects one leader per data center and runs its duties: it
// assigns the data center's partitions to live local nodes (balanced,
// sticky, away from draining nodes), reassigns a dead node's partitions as
// soon as its lease is gone, adopts the partitions of a data center that has
// had no live node for a grace period and hands them back once their home
// has been healthy for a stabilisation period.
//
// The leader keeps no state of its own beyond how long it has seen each data
// center up or down: everything else is read from etcd every round, so a new
// leader carries on where the last one stopped. Every write is a Txn that
// compares the leader's election key create revision (its term) and the mod
// revision of each assignment it replaces, so a deposed leader never writes
// and two leaders racing for one partition settle on one winner.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/placement"
)

// ErrAbandon, as the cause of Run's context, stops the leader as if its
// process had died: no resignation, its session lease left to expire.
var ErrAbandon = errors.New("leader: abandoned")

// Config configures a campaigner.
type Config struct {
	Node      string // this node's id, the value of the election key
	DC        string // the data center it campaigns in
	Meta      placement.Meta
	TTL       time.Duration // session TTL, whole seconds
	Grace     time.Duration // a data center without live nodes this long is adopted
	Stabilise time.Duration // adopted partitions go home after their home is up this long
	MaxMoves  int           // balancing moves in flight at once (default 2)
	// Gate blocks while the process is frozen (tests simulate SIGSTOP with
	// it): keep-alives and writes wait on it. Nil means never frozen.
	Gate func(ctx context.Context) error
	// Clock is what the leader reads the time from for every decision
	// (how long a data center has been down or up). Its rounds are also
	// triggered by watches and a real-time ticker, which only makes it look
	// again. The session's lease is etcd's and runs on real time.
	Clock  clockwork.Clock
	Logger *slog.Logger
	// Metrics receives the elections won and the reassignments written;
	// nil: metrics.Discard().
	Metrics *metrics.Set
}

// Leader campaigns in its data center and leads when elected.
type Leader struct {
	cfg    Config
	client *clientv3.Client
	keys   keyspace.Space
	log    *slog.Logger

	mu     sync.Mutex
	term   int64 // election key create revision while leading, else 0
	number int64 // the term's number once published, else 0

	keptOut map[string]string // node → the classes it serves, once warned (lead's goroutine only)
}

// New returns a campaigner over client.
func New(cfg Config, client *clientv3.Client, keys keyspace.Space) *Leader {
	if cfg.MaxMoves <= 0 {
		cfg.MaxMoves = 2
	}
	if cfg.Gate == nil {
		cfg.Gate = func(context.Context) error { return nil }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	return &Leader{cfg: cfg, client: client, keys: keys, log: cfg.Logger.With("component", "leader", "dc", cfg.DC), keptOut: map[string]string{}}
}

// Term returns the election revision while this node leads, else 0.
func (l *Leader) Term() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.term
}

// Number returns the term's number (1 for the data center's first leader)
// while this node leads and has published it, else 0.
func (l *Leader) Number() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.number
}

func (l *Leader) setTerm(t int64) {
	l.mu.Lock()
	l.term, l.number = t, 0
	l.mu.Unlock()
}

// Run campaigns until ctx ends, leading whenever elected. Leadership is
// edge-triggered: the leader's loop runs under a context that ends the
// moment its session ends or its key disappears, before anything else.
func (l *Leader) Run(ctx context.Context) {
	for backoff := 100 * time.Millisecond; ctx.Err() == nil; {
		err := l.campaignAndLead(ctx)
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("leadership or campaign ended; campaigning again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, l.cfg.TTL)
	}
}

func (l *Leader) campaignAndLead(ctx context.Context) error {
	if err := l.cfg.Gate(ctx); err != nil {
		return err
	}
	// Every goroutine started here ends once cctx ends and is waited for
	// before returning: the deferred calls run in reverse, so cancel comes
	// first, then the waits.
	var wg sync.WaitGroup
	defer wg.Wait()
	// The session's lease is kept alive through the gate, so a frozen
	// process loses its leadership exactly as a stopped one would.
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	cc := clientv3.NewCtxClient(cctx)
	cc.KV, cc.Watcher = l.client.KV, l.client.Watcher
	cc.Lease = &gatedLease{Lease: l.client.Lease, gate: l.cfg.Gate, every: l.cfg.TTL / 3, wg: &wg}
	gctx, gcancel := context.WithTimeout(ctx, l.cfg.TTL)
	lease, err := cc.Grant(gctx, int64(l.cfg.TTL/time.Second))
	gcancel()
	if err != nil {
		return fmt.Errorf("grant session lease: %w", err)
	}
	// The session outlives ctx so that Close can still revoke its lease.
	s, err := concurrency.NewSession(cc, concurrency.WithLease(lease.ID), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer func() {
		if errors.Is(context.Cause(ctx), ErrAbandon) {
			s.Orphan()
			return
		}
		_ = s.Close() // revokes the lease: the next leader need not wait for it
	}()
	lctx, cancel := context.WithCancelCause(cctx)
	defer cancel(nil)
	wg.Go(func() {
		select {
		case <-s.Done():
			cancel(errors.New("session ended"))
		case <-lctx.Done():
		}
	})
	e := concurrency.NewElection(s, l.keys.Election(l.cfg.DC))
	if err := e.Campaign(lctx, l.cfg.Node); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	// Campaign can return after the session expired: the key must still
	// be ours.
	resp, err := l.client.Get(lctx, e.Key())
	if err != nil {
		return fmt.Errorf("verify leadership: %w", err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != e.Rev() {
		return errors.New("elected, but the election key is gone")
	}
	wg.Go(func() { l.watchKey(lctx, cancel, e.Key(), resp.Header.Revision) })

	term := e.Rev()
	l.setTerm(term)
	l.cfg.Metrics.Elections.Inc()
	defer l.setTerm(0)
	l.log.Info("elected leader", "term", term)
	l.lead(lctx, e.Key(), term)
	l.log.Info("leadership ended", "term", term, "cause", context.Cause(lctx))
	return context.Cause(lctx)
}

// watchKey ends the leadership when the election key is deleted.
func (l *Leader) watchKey(ctx context.Context, cancel context.CancelCauseFunc, key string, rev int64) {
	for wr := range l.client.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(rev+1)) {
		if wr.Err() != nil {
			cancel(fmt.Errorf("election key watch: %w", wr.Err()))
			return
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				cancel(errors.New("election key deleted"))
				return
			}
		}
	}
}

// errDeposed means a fenced write found the election key changed.
var errDeposed = errors.New("leader: deposed")

// lead runs the leader's rounds until ctx ends: read the cluster, plan,
// write; again after every change and at least every tick.
func (l *Leader) lead(ctx context.Context, key string, term int64) {
	wctx := clientv3.WithRequireLeader(ctx)
	watches := []clientv3.WatchChan{
		l.client.Watch(wctx, l.keys.NodesPrefix(), clientv3.WithPrefix()),
		l.client.Watch(wctx, l.keys.AssignPrefix(), clientv3.WithPrefix()),
		l.client.Watch(wctx, l.keys.OwnerPrefix(), clientv3.WithPrefix()),
	}
	changed := make(chan struct{}, 1)
	// The watch channels close once ctx ends; their readers are waited for.
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, w := range watches {
		wg.Go(func() {
			for wr := range w {
				if wr.Err() != nil {
					return
				}
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		})
	}
	tick := time.NewTicker(max(min(l.cfg.Grace, l.cfg.Stabilise, l.cfg.TTL)/4, 50*time.Millisecond))
	defer tick.Stop()
	down, up := map[string]time.Time{}, map[string]time.Time{}
	var rec Record // as published; Term is 0 until the first publication
	for {
		if err := l.cfg.Gate(ctx); err != nil {
			return
		}
		err := l.round(ctx, key, term, down, up, &rec)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errDeposed):
			l.log.Warn("deposed: a fenced write found the election key changed", "term", term)
			return
		case err != nil:
			l.log.Warn("leader round failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// round reads the cluster, updates the up/down clocks (and publishes
// them in rec when they changed), plans and writes.
func (l *Leader) round(ctx context.Context, key string, term int64, down, up map[string]time.Time, rec *Record) error {
	snap, err := placement.Read(ctx, l.client, l.keys, l.cfg.Meta)
	if err != nil {
		return err
	}
	if want := RequiredClasses(snap, l.cfg.Node); want != nil && !slices.Equal(want, snap.Classes) {
		if err := l.requireClasses(ctx, key, term, snap.ClassesRev, want); err != nil {
			return err
		}
		snap.Classes = want
	}
	l.warnKeptOut(snap)
	v := View{Snapshot: snap}
	now := l.cfg.Clock.Now()
	live := map[string]bool{}
	for id, ni := range v.Nodes {
		if v.Eligible(id) {
			live[ni.DC] = true
		}
	}
	dcs := map[string]bool{}
	for _, dc := range l.cfg.Meta.HomeDCs {
		dcs[dc] = true
	}
	for _, a := range v.Assign {
		dcs[a.DC], dcs[a.Home] = true, true
	}
	for _, ni := range v.Nodes {
		dcs[ni.DC] = true
	}
	for dc := range dcs {
		if live[dc] {
			delete(down, dc)
			if _, ok := up[dc]; !ok {
				up[dc] = now
			}
		} else {
			delete(up, dc)
			if _, ok := down[dc]; !ok {
				down[dc] = now
			}
		}
	}
	next := *rec
	if next.Term != term {
		if next, err = l.elected(ctx, term); err != nil {
			return err
		}
	}
	if next, changed := withHealth(next, down, up); changed || rec.Term != term {
		if err := l.publish(ctx, key, term, next); err != nil {
			return err
		}
		*rec = next
		l.mu.Lock()
		if l.term == term {
			l.number = next.Number
		}
		l.mu.Unlock()
	}
	v.DC, v.Now, v.DownSince, v.UpSince = l.cfg.DC, now, down, up
	v.Grace, v.Stabilise, v.MaxMoves = l.cfg.Grace, l.cfg.Stabilise, l.cfg.MaxMoves
	changes := Plan(v)
	if len(changes) == 0 {
		return nil
	}
	if err := l.cfg.Gate(ctx); err != nil {
		return err
	}
	written, err := l.write(ctx, key, term, changes)
	if err != nil {
		return err
	}
	return l.recordLosses(ctx, key, term, Losses(v, written, l.cfg.Node))
}

// requireClasses writes the cluster's required classes, fenced by term and
// by the mod revision they were read at.
func (l *Leader) requireClasses(ctx context.Context, key string, term, rev int64, classes []string) error {
	ck := l.keys.Classes()
	resp, err := l.client.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(key), "=", term),
		clientv3.Compare(clientv3.ModRevision(ck), "=", rev),
	).Then(clientv3.OpPut(ck, strings.Join(classes, ","))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("write required classes: %w", err)
	}
	if !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].CreateRevision != term {
			return errDeposed
		}
		return nil // another leader wrote them first: the next round reads them
	}
	l.log.Info("classes every node must serve to own partitions", "classes", strings.Join(classes, ","))
	return nil
}

// warnKeptOut logs, once per node and class set, a live node that gets no
// partition because it lacks a required class.
func (l *Leader) warnKeptOut(snap placement.Snapshot) {
	for id, ni := range snap.Nodes {
		missing := ni.Missing(snap.Classes)
		if ni.DC != l.cfg.DC || len(missing) == 0 {
			delete(l.keptOut, id)
			continue
		}
		if l.keptOut[id] != ni.Classes {
			l.keptOut[id] = ni.Classes
			l.log.Warn("node kept out of assignment: it does not serve every class the cluster requires",
				"kept_out", id, "missing", strings.Join(missing, ","), "serves", ni.Classes)
		}
	}
}

// maxOpsPerTxn stays under etcd's default --max-txn-ops (128), counting
// one compare and one put per change.
const maxOpsPerTxn = 60

// write applies changes in fenced Txns: each compares the election key's
// create revision with term and every replaced assignment's mod revision.
// It returns the changes written: up to the first Txn that found an
// assignment changed meanwhile.
func (l *Leader) write(ctx context.Context, key string, term int64, changes []Change) (written []Change, err error) {
	for len(changes) > 0 {
		batch := changes[:min(len(changes), maxOpsPerTxn)]
		changes = changes[len(batch):]
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", term)}
		var ops []clientv3.Op
		for _, c := range batch {
			k := l.keys.Assign(c.P)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", c.Prev))
			c.Next.By, c.Next.Term = l.cfg.Node, term
			ops = append(ops, clientv3.OpPut(k, c.Next.Encode()))
		}
		resp, err := l.client.Txn(ctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return written, fmt.Errorf("write assignments: %w", err)
		}
		if !resp.Succeeded {
			kvs := resp.Responses[0].GetResponseRange().Kvs
			if len(kvs) == 0 || kvs[0].CreateRevision != term {
				return written, errDeposed
			}
			// Another leader moved first (an adoption race) or our read
			// was stale: the watch brings the news; plan again.
			return written, nil
		}
		for _, c := range batch {
			l.cfg.Metrics.Reassignments.WithLabelValues(string(c.Why)).Inc()
			// One line per node lost (recordLosses) or data center adopted,
			// not per partition.
			l.log.Debug("partition assigned", "partition", c.P, "to", c.Next.Node, "from", c.From, "managed_by", c.Next.DC, "home", c.Next.Home, "why", c.Why)
		}
		if len(batch) > 0 {
			l.log.Info("partitions assigned", "count", len(batch), "why", summarize(batch))
		}
		written = append(written, batch...)
	}
	return written, nil
}

// summarize counts changes by reason: "node_gone: 42, rebalance: 1".
func summarize(changes []Change) string {
	counts := map[Reason]int{}
	for _, c := range changes {
		counts[c.Why]++
	}
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s: %d", r, counts[r]))
	}
	return strings.Join(parts, ", ")
}

// Info is a data center's current leader.
type Info struct {
	DC   string
	Node string
	Term int64 // create revision of its election key
}

// Leaders returns the leader of every data center that has one, sorted by
// data center: in each election the key with the lowest create revision.
func Leaders(ctx context.Context, kv clientv3.KV, keys keyspace.Space) ([]Info, error) {
	resp, err := kv.Get(ctx, keys.ElectionsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	best := map[string]Info{}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), keys.ElectionsPrefix())
		dc, _, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		if b, seen := best[dc]; !seen || kv.CreateRevision < b.Term {
			best[dc] = Info{DC: dc, Node: string(kv.Value), Term: kv.CreateRevision}
		}
	}
	out := make([]Info, 0, len(best))
	for _, i := range best {
		out = append(out, i)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DC < out[j].DC })
	return out, nil
}

// gatedLease keeps the session's lease alive with placement.KeepAlive
// instead of the client's background keep-alive stream: a frozen process
// then stops renewing, as a stopped one does. Its goroutine ends with the
// context the session passes (the campaign's) and is counted in wg.
type gatedLease struct {
	clientv3.Lease
	gate  func(context.Context) error
	every time.Duration
	wg    *sync.WaitGroup
}

func (g *gatedLease) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	ch := make(chan *clientv3.LeaseKeepAliveResponse, 1)
	g.wg.Go(func() {
		defer close(ch)
		_ = placement.KeepAlive(ctx, g.Lease, id, g.every, g.gate, func(_ time.Time, ttl int64, _ time.Duration) {
			select {
			case ch <- &clientv3.LeaseKeepAliveResponse{ID: id, TTL: ttl}:
			default:
			}
		}, func(error) {}) // etcd unreachable: try again; the lease may still live
	})
	return ch, nil
}
