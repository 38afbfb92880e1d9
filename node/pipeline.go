package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/commit"
	"github.com/durable-run/durable/keyspace"
)

// pipeline is an object's storage state below its handlers: the write
// buffer of the event in progress, the pending commits, and what the object
// knows of its committed state (a read cache, its alarm record, its name,
// its remembered request ids). mu guards all of it; it is taken by the
// object's goroutine, by handler goroutines through storage handles, and by
// the committer's goroutine when a commit settles.
//
// Pipelining: an object does not wait for its commit before it starts its
// next event. A finished event's writes are *staged*: merged into the
// object's pending commits, which go to the committer one at a time:
//
//	flight  submitted to the committer; outcome pending
//	next    events finished while flight is in the air, merged into one
//	        commit (later writes of a key replace earlier ones); submitted
//	        when flight succeeds
//
// Rules:
//   - Output gate: an event's reply is released only when its writes — and
//     every earlier write of the object, which it may have read — are
//     durable. A read-only event waits for the last pending stage.
//   - A failed commit fails every later reply of the object: the replies of
//     flight get the commit's error, those of next (never sent) and of
//     read-only events behind them ErrObjectReset (retryable, nothing of
//     theirs applied). The object forgets everything it knew before its
//     next event, and the generation moves on, so the event in progress
//     (whose reads may rest on the failed writes) can stage nothing.
//   - Reads of an event see its own buffer, then next, then flight, then the
//     committed cache, then etcd.
//   - One request per object in the committer at a time, so an object's
//     commits apply in order and a batch never holds two writes of one key.
//   - An alarm runs only once nothing is pending (see handleAlarm): its
//     handler's side effects never rest on writes that may still fail.
type pipeline struct {
	o *object // whose pipeline it is: its identity and its node's env

	// arrivals numbers the object's calls as they arrive (under table.mu),
	// so that a failed commit can fail exactly the calls that came before it.
	arrivals atomic.Uint64

	// The fields are ordered so that the flags share one word: every byte
	// here is held by every resident object (issue #17).
	mu          sync.Mutex
	gen         uint64 // bumped on every reset
	cur         *eventTx
	name        string
	nameStored  bool // obj/ holds name
	objStored   bool // obj/ exists, holding name or "" (an object of a unique ID)
	alarmLoaded bool
	cache       *readCache         // nil: nothing cached
	alarm       *alarmstore.Record // committed alarm, valid when alarmLoaded
	reqs        *[]reqEntry        // remembered request ids, including pending stages'; nil: not loaded
	flight      *stage
	next        *stage
	failed      *failure // a commit failed (at: arrivals then); the object recovers before its next event
}

type cacheEntry struct {
	val []byte
	ok  bool
}

// maxCacheEntries bounds an object's read cache; past it the cache is cleared.
const maxCacheEntries = 4096

func (pl *pipeline) init(o *object) { pl.o = o }

// idHex is the ID's hex form, for keys, and dataPrefix the prefix of the
// object's storage keys. Both are built when a read or a commit needs them:
// kept, they cost every resident object 160 B of heap (issue #17), while a
// commit allocates far more than their 64 and 96 B.
func (pl *pipeline) idHex() string { return pl.o.id.String() }
func (pl *pipeline) dataPrefix() string {
	return pl.o.env.keys.DataPrefix(int(pl.o.p), pl.o.class.Name, pl.idHex())
}

// dataPrefixLen is len(pl.dataPrefix()), without building it.
func (pl *pipeline) dataPrefixLen() int {
	return pl.o.env.dataKeyBase + len(pl.o.class.Name) + hex.EncodedLen(len(pl.o.id))
}

// write is a buffered write: a value, or a deletion.
type write struct {
	val []byte
	del bool
}

// eventTx buffers the writes of one event (storage and alarm). Guarded by
// pipeline.mu.
type eventTx struct {
	gen     uint64
	token   int64
	inAlarm bool

	writes  map[string]write // user key → buffered write
	cleared bool             // DeleteAll ran: keys not in writes are gone

	alarmTouched bool      // SetAlarm or DeleteAlarm ran
	alarmDue     time.Time // the alarm set (zero: deleted)

	inTransaction int // Transactions open now (nested ones count)

	broken error // BlockConcurrencyWhile or Sync failed: the event must fail

	// origin says what identifies the event across its retries, callBase
	// is made of it when the event first calls another object, and calls
	// numbers those calls (calls.go).
	origin   callOrigin
	callBase string
	calls    int
}

func (tx *eventTx) snapshot() *eventTx {
	c := *tx
	c.writes = make(map[string]write, len(tx.writes))
	for k, v := range tx.writes {
		c.writes[k] = v
	}
	return &c
}

// stage is a group of an object's finished events committed together.
type stage struct {
	token   int64
	writes  map[string]write
	cleared bool

	alarmTouched bool
	alarm        *alarmstore.Record // the alarm after the stage, when alarmTouched

	extra   []clientv3.Op // e.g. a dead letter
	ring    []reqEntry    // the request ring after the stage, when ringSet
	ringSet bool
	rids    []reqEntry // requests recorded by this stage, for retries arriving before it is durable

	storeName   bool   // the stage writes obj/
	nameWritten string // what it writes there
	waiters     []waiter
	settled     chan struct{} // closed when the stage settles in flight; made by the first waiter (settledLocked)
	links       []trace.Link  // the spans of the events it holds (tracing on)

	estOps, estBytes int
}

// waiter is a reply waiting for a stage. own: the stage holds the waiter's
// writes (its commit's error is the waiter's); otherwise the waiter only read
// the stage's writes and gets ErrObjectReset if it fails.
type waiter struct {
	fn  func(error)
	own bool
}

// alarmChange is what an event does to the object's alarm.
type alarmChange struct {
	set    bool               // the event changes the alarm; otherwise it stays
	record *alarmstore.Record // the alarm after the event; nil: none
}

// eventCommit is what a finished event leaves to commit.
type eventCommit struct {
	tx     *eventTx
	alarm  alarmChange
	extra  []clientv3.Op     // e.g. a dead letter
	rid    string            // request id to remember with the writes ("" none)
	reply  []byte            // the reply remembered with rid
	digest string            // the call's digest, remembered with rid
	span   trace.SpanContext // the event's span, linked from its commit's
}

func (ec *eventCommit) writes() bool {
	return len(ec.tx.writes) > 0 || ec.tx.cleared || ec.alarm.set || len(ec.extra) > 0
}

// resetError is the error of a waiter whose reply rested on a commit that
// failed with cause: nothing of its own applied, so it is safe to retry. A
// lost partition keeps its identity: the router follows it to the next
// owner.
func resetError(cause error) error {
	if errors.Is(cause, durable.ErrOwnershipLost) {
		return fmt.Errorf("%w: %w", durable.ErrObjectReset, cause)
	}
	return fmt.Errorf("%w: %v", durable.ErrObjectReset, cause)
}

// beginEvent starts buffering the writes of an event. It returns nil if a
// commit failed since the object last looked: the caller recovers first.
// Checking under mu, where settle records a failure, means that a failure
// either is seen here or outdates the event's generation, failing its
// staging.
func (pl *pipeline) beginEvent(token int64, inAlarm bool) *eventTx {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.failed != nil {
		return nil
	}
	tx := &eventTx{gen: pl.gen, token: token, inAlarm: inAlarm, writes: map[string]write{}}
	pl.cur = tx
	return tx
}

// endEvent ends the event in progress: storage handles fail from now on.
func (pl *pipeline) endEvent() {
	pl.mu.Lock()
	pl.cur = nil
	pl.mu.Unlock()
}

// eventToken is the fencing token of the event in progress (0: none).
func (pl *pipeline) eventToken() int64 {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.cur != nil {
		return pl.cur.token
	}
	return 0
}

func (pl *pipeline) generation() uint64 {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.gen
}

// broken returns the error that broke the current event (a failed
// BlockConcurrencyWhile or Sync), if any.
func (pl *pipeline) broken() error {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.cur != nil {
		return pl.cur.broken
	}
	return nil
}

// txBroken returns what broke tx, if anything.
func (pl *pipeline) txBroken(tx *eventTx) error {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return tx.broken
}

// breakEvent marks the event of generation gen broken by err, if it is
// still in progress: it must fail.
func (pl *pipeline) breakEvent(gen uint64, err error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.cur != nil && pl.cur.gen == gen && pl.cur.broken == nil {
		pl.cur.broken = err
	}
}

// resetGeneration outdates every storage handle: the instance they belong
// to was thrown away.
func (pl *pipeline) resetGeneration() {
	pl.mu.Lock()
	pl.gen++
	pl.cur = nil
	pl.mu.Unlock()
}

// forget resets the generation and drops everything known of the committed
// state, which is read from etcd again when needed.
func (pl *pipeline) forget() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.gen++
	pl.cur = nil
	pl.cache = nil
	pl.alarm, pl.alarmLoaded = nil, false
	pl.reqs = nil
}

// learnName records the name a call addressed the object by, if none is
// known yet.
func (pl *pipeline) learnName(name string) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.name == "" && name != "" {
		pl.name = name
	}
}

// learnStoredName records a name read from etcd (the alarm record carries
// it), which need not be stored again.
func (pl *pipeline) learnStoredName(name string) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.name == "" && name != "" {
		pl.name, pl.nameStored, pl.objStored = name, true, true
	}
}

func (pl *pipeline) objectName() string {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.name
}

// freshRecordLocked is the alarm record of a new alarm due at due (nil for
// the zero time: none). Caller holds mu.
func (pl *pipeline) freshRecordLocked(due time.Time) *alarmstore.Record {
	if due.IsZero() {
		return nil
	}
	return &alarmstore.Record{Class: pl.o.class.Name, ID: pl.o.id, Name: pl.name, Partition: int(pl.o.p), Due: due, Scheduled: due}
}

// alarmTouched reports whether tx set or deleted the alarm and the alarm it
// left (nil: deleted).
func (pl *pipeline) alarmTouched(tx *eventTx) (bool, *alarmstore.Record) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if !tx.alarmTouched {
		return false, nil
	}
	return true, pl.freshRecordLocked(tx.alarmDue)
}

// alarmAfter is the change a successful invocation makes to the alarm.
func (pl *pipeline) alarmAfter(tx *eventTx) alarmChange {
	touched, rec := pl.alarmTouched(tx)
	return alarmChange{set: touched, record: rec}
}

// discardWrites drops tx's storage writes (a failed run's); its alarm
// change is decided separately.
func (pl *pipeline) discardWrites(tx *eventTx) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	tx.writes, tx.cleared = map[string]write{}, false
}

// estimate bounds the ops and bytes ec adds to a stage.
func (pl *pipeline) estimate(ec *eventCommit) (ops, bytes int) {
	prefix := pl.dataPrefixLen()
	for k, w := range ec.tx.writes {
		ops++
		bytes += prefix + len(k) + len(w.val) + 16
	}
	if ec.tx.cleared {
		ops += len(ec.tx.writes) + 1
		bytes += (len(ec.tx.writes) + 1) * (2*prefix + 32)
	}
	if ec.alarm.set {
		ops += 3
		bytes += 3*(prefix+64) + 256
	}
	for _, op := range ec.extra {
		ops++
		bytes += commit.OpBytes(op)
	}
	if ec.rid != "" {
		ops++
		bytes += requestRing * (MaxRequestIDBytes + 64) // id, digest, framing
		bytes += len(ec.reply)
	}
	return ops + 1, bytes + prefix // + the object's name, once
}

// stage hands a finished event's writes to the pending commits and returns
// without waiting for them (unless the pending commits are full); done
// receives the outcome once the event's reply may be released. It runs on
// the object's goroutine or, for Sync, the handler's.
func (pl *pipeline) stage(ec eventCommit, done func(error)) {
	if ec.writes() && ec.alarm.set {
		// The alarm's ops replace the current record: know it first.
		if _, err := pl.loadAlarm(pl.o.env.ctx); err != nil {
			done(err)
			return
		}
	}
	ops, bytes := pl.estimate(&ec)
	maxOps, maxBytes := pl.o.env.commits.Limits()
	for {
		pl.mu.Lock()
		if pl.gen != ec.tx.gen {
			pl.mu.Unlock()
			done(fmt.Errorf("%w: before commit", durable.ErrObjectReset))
			return
		}
		if !ec.writes() {
			last := pl.next
			if last == nil {
				last = pl.flight
			}
			if last == nil {
				pl.mu.Unlock()
				done(nil)
				return
			}
			last.waiters = append(last.waiters, waiter{fn: done})
			pl.mu.Unlock()
			return
		}
		var req *commit.Request
		switch {
		case pl.flight == nil:
			pl.flight = pl.newStageLocked(&ec)
			pl.flight.waiters = append(pl.flight.waiters, waiter{fn: done, own: true})
			req = pl.requestLocked(pl.flight)
		case pl.next == nil:
			pl.next = pl.newStageLocked(&ec)
			pl.next.waiters = append(pl.next.waiters, waiter{fn: done, own: true})
		case pl.next.token != ec.tx.token:
			pl.mu.Unlock()
			done(fmt.Errorf("%w: partition %d changed owner", durable.ErrOwnershipLost, int(pl.o.p)))
			return
		case pl.next.estOps+ops > maxOps || pl.next.estBytes+bytes > maxBytes:
			// next is full: wait for flight to land and next to take off.
			wait := pl.settledLocked()
			pl.mu.Unlock()
			<-wait
			continue
		default:
			pl.mergeLocked(pl.next, &ec)
			pl.next.waiters = append(pl.next.waiters, waiter{fn: done, own: true})
		}
		if req == nil {
			pl.next.estOps += ops
			pl.next.estBytes += bytes
		}
		pl.mu.Unlock()
		if req != nil {
			pl.o.env.commits.Submit(req)
		}
		return
	}
}

// stageAndWait stages ec and waits until its writes are durable: Sync.
func (pl *pipeline) stageAndWait(ec eventCommit) error {
	res := make(chan error, 1)
	pl.stage(ec, func(err error) { res <- err })
	return <-res
}

// newStageLocked starts a stage with ec. The stage takes over the event's
// write map: the event is over (or, for Sync, gets a new one).
func (pl *pipeline) newStageLocked(ec *eventCommit) *stage {
	s := &stage{token: ec.tx.token, writes: ec.tx.writes, cleared: ec.tx.cleared}
	pl.addLocked(s, ec)
	return s
}

// mergeLocked adds ec's writes to s; later writes of a key replace earlier
// ones, and a DeleteAll drops what s wrote before it.
func (pl *pipeline) mergeLocked(s *stage, ec *eventCommit) {
	if ec.tx.cleared {
		s.cleared = true
		s.writes = map[string]write{}
	}
	for k, w := range ec.tx.writes {
		s.writes[k] = w
	}
	pl.addLocked(s, ec)
}

// addLocked adds what ec holds besides storage writes to s.
func (pl *pipeline) addLocked(s *stage, ec *eventCommit) {
	if ec.span.IsSampled() {
		s.links = append(s.links, trace.Link{SpanContext: ec.span})
	}
	if ec.alarm.set {
		s.alarmTouched, s.alarm = true, ec.alarm.record
	}
	s.extra = append(s.extra, ec.extra...)
	if ec.rid != "" {
		e := reqEntry{ID: ec.rid, Reply: ec.reply, Digest: ec.digest}
		if len(ec.reply) > maxKeptReply {
			e = reqEntry{ID: ec.rid, Dropped: true, Digest: ec.digest}
		}
		// Events that remember a request id read the ring first
		// (seenRequest), and a reset since fails their staging: pl.reqs is
		// loaded here.
		var ring []reqEntry
		if pl.reqs != nil {
			ring = append(ring, *pl.reqs...)
		}
		ring = append(ring, e)
		if len(ring) > requestRing {
			ring = ring[len(ring)-requestRing:]
		}
		pl.reqs = &ring
		s.ring, s.ringSet = ring, true
		s.rids = append(s.rids, e)
	}
	// Every object that commits has an obj/ key, so that objects of unique
	// IDs are listed too (Admin.ListObjects); a named one's holds its name.
	if !pl.nameStored && (pl.name != "" || !pl.objStored) {
		s.storeName = true
	}
}

// requestLocked turns s into the committer's request. The alarm's ops are
// computed against the committed record, which every earlier stage has
// updated by now.
func (pl *pipeline) requestLocked(s *stage) *commit.Request {
	keys := pl.o.env.keys
	ops := pl.storageOps(s.writes, s.cleared)
	if s.alarmTouched {
		ops = append(ops, pl.alarmOpsLocked(s.alarm)...)
	}
	ops = append(ops, s.extra...)
	if s.ringSet {
		ops = append(ops, clientv3.OpPut(keys.Requests(int(pl.o.p), pl.o.class.Name, pl.idHex()), pl.o.env.ringValue(s.ring)))
	}
	if s.storeName {
		s.nameWritten = pl.name
		ops = append(ops, clientv3.OpPut(keys.Object(int(pl.o.p), pl.o.class.Name, pl.idHex()), pl.name))
	}
	bytes := 0
	for _, op := range ops {
		bytes += commit.OpBytes(op)
	}
	return &commit.Request{Partition: int(pl.o.p), Token: s.token, Ops: ops, Bytes: bytes, Links: s.links, Done: func(err error) { pl.settle(s, err) }}
}

// settle takes the outcome of flight s: on success its writes become the
// committed state and next takes off; on failure the object forgets
// everything, and next fails unsent.
func (pl *pipeline) settle(s *stage, err error) {
	pl.mu.Lock()
	pl.flight = nil
	var req *commit.Request
	var dropped *stage
	if err == nil {
		if s.cleared || pl.cache.len()+len(s.writes) > maxCacheEntries {
			pl.cache = nil
		}
		for k, w := range s.writes {
			pl.cacheLocked(k, cacheEntry{val: w.val, ok: !w.del})
		}
		if s.alarmTouched {
			pl.alarm, pl.alarmLoaded = s.alarm, true
		}
		if s.storeName {
			pl.objStored = true
			if s.nameWritten != "" && s.nameWritten == pl.name {
				pl.nameStored = true
			}
		}
		if pl.next != nil {
			pl.flight, pl.next = pl.next, nil
			req = pl.requestLocked(pl.flight)
		}
	} else {
		dropped, pl.next = pl.next, nil
		// The commit may or may not have applied: what the object knew is
		// unreliable, and so is any event running now (its handle's
		// generation is outdated from here on).
		pl.gen++
		pl.cache = nil
		pl.alarm, pl.alarmLoaded = nil, false
		pl.reqs = nil
		pl.failed = &failure{err: err, at: pl.arrivals.Load()}
	}
	if s.settled != nil {
		close(s.settled)
	}
	pl.mu.Unlock()

	// The schedule learns of an alarm change before the next commit of the
	// object can, so its view follows the commits' order.
	switch {
	case err == nil && s.alarmTouched:
		pl.o.env.alarms.Committed(int(pl.o.p), pl.o.class.Name, pl.o.id, dueOf(s.alarm))
	case err != nil && (s.alarmTouched || dropped != nil && dropped.alarmTouched):
		// An alarm change of unknown outcome: look at the stored alarm soon,
		// since the window may already have passed its time.
		pl.o.env.alarms.RetryAt(int(pl.o.p), pl.o.class.Name, pl.o.id, pl.o.env.clock.Now().Add(pl.o.env.cfg.SystemRetryDelay))
	}
	if req != nil {
		pl.o.env.commits.Submit(req)
	}
	for _, w := range s.waiters {
		if err == nil || w.own {
			w.fn(err)
		} else {
			w.fn(resetError(err))
		}
	}
	if dropped != nil {
		rerr := resetError(err)
		for _, w := range dropped.waiters {
			w.fn(rerr)
		}
	}
}

func dueOf(r *alarmstore.Record) (due time.Time) {
	if r != nil {
		due = r.Due
	}
	return due
}

// pending reports whether the object has writes not yet durable.
func (pl *pipeline) pending() bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.flight != nil || pl.next != nil
}

// waitDurable blocks until every staged write of the object is durable or
// has failed.
func (pl *pipeline) waitDurable() {
	for {
		pl.mu.Lock()
		if pl.flight == nil && pl.next == nil {
			pl.mu.Unlock()
			return
		}
		wait := pl.settledLocked()
		pl.mu.Unlock()
		<-wait
	}
}

// settledLocked returns a channel closed when the commit in flight
// settles. Only stages someone waits for hold a channel. Caller holds mu,
// and a commit is in flight.
func (pl *pipeline) settledLocked() <-chan struct{} {
	if pl.flight.settled == nil {
		pl.flight.settled = make(chan struct{})
	}
	return pl.flight.settled
}

// cacheLocked records k's committed value. The cache is made by its first
// entry: a resident object that never read or wrote holds none. Caller
// holds mu.
func (pl *pipeline) cacheLocked(k string, e cacheEntry) {
	if pl.cache == nil {
		pl.cache = &readCache{}
	}
	pl.cache.put(k, e)
}

// takeFailure returns the error of a failed commit the object has not
// recovered from yet, with the number of the last call that arrived before
// it, and clears it. The object goroutine recovers (recoverIfFailed).
func (pl *pipeline) takeFailure() (error, uint64) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	f := pl.failed
	pl.failed = nil
	if f == nil {
		return nil, 0
	}
	return f.err, f.at
}

// waitStagedRequest finds request id among the pending stages; if it is
// there, done gets its entry once the stage is durable (or the error of its
// commit) and it reports true.
func (pl *pipeline) waitStagedRequest(id string, done func(reqEntry, error)) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, s := range []*stage{pl.next, pl.flight} {
		if s == nil {
			continue
		}
		for _, e := range s.rids {
			if e.ID == id {
				s.waiters = append(s.waiters, waiter{fn: func(err error) { done(e, err) }, own: true})
				return true
			}
		}
	}
	return false
}

// storageOps turns buffered writes into etcd ops. After DeleteAll the
// object's range is deleted around the keys written after it, because etcd
// refuses a Txn whose delete range overlaps a put.
func (pl *pipeline) storageOps(writes map[string]write, cleared bool) []clientv3.Op {
	prefix := pl.dataPrefix()
	keys := make([]string, 0, len(writes))
	for k := range writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ops := make([]clientv3.Op, 0, len(keys)+4)
	if cleared {
		from := prefix
		for _, k := range keys {
			if w := writes[k]; !w.del {
				if from < prefix+k {
					ops = append(ops, clientv3.OpDelete(from, clientv3.WithRange(prefix+k)))
				}
				from = prefix + k + "\x00"
			}
		}
		ops = append(ops, clientv3.OpDelete(from, clientv3.WithRange(keyspace.PrefixEnd(prefix))))
	}
	for _, k := range keys {
		w := writes[k]
		switch {
		case !w.del:
			ops = append(ops, clientv3.OpPut(prefix+k, string(w.val)))
		case !cleared:
			ops = append(ops, clientv3.OpDelete(prefix+k))
		}
	}
	return ops
}

// lookupLocked resolves key k from the event's buffer, the pending stages
// (newest first) and the committed cache; decided is false when none of
// them knows k and etcd must be read. Caller holds mu.
func (pl *pipeline) lookupLocked(tx *eventTx, k string) (val []byte, ok, decided bool) {
	if w, hit := tx.writes[k]; hit {
		return w.val, !w.del, true
	}
	if tx.cleared {
		return nil, false, true
	}
	for _, s := range [2]*stage{pl.next, pl.flight} {
		if s == nil {
			continue
		}
		if w, hit := s.writes[k]; hit {
			return w.val, !w.del, true
		}
		if s.cleared {
			return nil, false, true
		}
	}
	if c, hit := pl.cache.get(k); hit {
		return c.val, c.ok, true
	}
	return nil, false, false
}

// loadAlarm returns the object's alarm as its events see it: the last
// staged change, else the committed record, read once per instance. The
// record is authoritative while the node owns the partition.
func (pl *pipeline) loadAlarm(ctx context.Context) (*alarmstore.Record, error) {
	pl.mu.Lock()
	if rec, ok := pl.knownAlarmLocked(); ok {
		pl.mu.Unlock()
		return rec, nil
	}
	gen := pl.gen
	pl.mu.Unlock()
	kvs, err := pl.o.env.reads.Get(ctx, pl.o.env.keys.Alarm(int(pl.o.p), pl.o.class.Name, pl.idHex()))
	if err != nil {
		return nil, &storageError{err}
	}
	var rec *alarmstore.Record
	if kvs[0] != nil {
		if rec, err = alarmstore.Decode(int(pl.o.p), pl.o.class.Name, pl.o.id, kvs[0].Value); err != nil {
			return nil, &storageError{err}
		}
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.gen != gen {
		return nil, fmt.Errorf("%w: while reading the alarm", durable.ErrObjectReset)
	}
	pl.alarm, pl.alarmLoaded = rec, true
	return rec, nil
}

// knownAlarmLocked returns the alarm after the pending stages, if the
// object knows it without reading etcd. Caller holds mu.
func (pl *pipeline) knownAlarmLocked() (*alarmstore.Record, bool) {
	for _, s := range [2]*stage{pl.next, pl.flight} {
		if s != nil && s.alarmTouched {
			return s.alarm, true
		}
	}
	return pl.alarm, pl.alarmLoaded
}

// loadName reads the name the object was created under if it is not known.
func (pl *pipeline) loadName(ctx context.Context) error {
	pl.mu.Lock()
	known := pl.name != "" || pl.nameStored
	pl.mu.Unlock()
	if known {
		return nil
	}
	kvs, err := pl.o.env.reads.Get(ctx, pl.o.env.keys.Object(int(pl.o.p), pl.o.class.Name, pl.idHex()))
	if err != nil {
		return &storageError{err}
	}
	if kvs[0] != nil {
		pl.mu.Lock()
		pl.objStored = true
		pl.mu.Unlock()
		pl.learnStoredName(string(kvs[0].Value))
	}
	return nil
}

// alarmOpsLocked returns the ops that turn the committed alarm into want.
func (pl *pipeline) alarmOpsLocked(want *alarmstore.Record) []clientv3.Op {
	have := pl.alarm
	switch {
	case want == nil && have == nil:
		return nil
	case want == nil:
		return pl.o.env.records.DeleteOps(*have)
	case have != nil && *have == *want:
		return nil
	default:
		return pl.o.env.records.PutOps(have, *want)
	}
}
