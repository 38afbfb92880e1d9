package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/keyspace"
)

// Pipelining: an object does not wait for its commit before it starts its
// next event. A finished event's writes are *staged*: merged into the
// object's pending commits, which go to the node's committer one at a time:
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
//     theirs applied). The object forgets everything it knew (instance,
//     cache, alarm, request ids) before its next event.
//   - Reads of an event see its own buffer, then next, then flight, then the
//     committed cache, then etcd.
//   - One request per object in the committer at a time, so an object's
//     commits apply in order and a batch never holds two writes of one key.
//   - An alarm runs only once nothing is pending (see handleAlarm): its
//     handler's side effects never rest on writes that may still fail.
//
// The stage fields of object are guarded by smu; settle runs on the
// committer's goroutine.

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

	storeName bool
	waiters   []waiter

	estOps, estBytes int
}

// waiter is a reply waiting for a stage. own: the stage holds the waiter's
// writes (its commit's error is the waiter's); otherwise the waiter only read
// the stage's writes and gets ErrObjectReset if it fails.
type waiter struct {
	fn  func(error)
	own bool
}

// eventCommit is what a finished event leaves to commit.
type eventCommit struct {
	tx    *eventTx
	alarm alarmState    // keep, or the alarm after the event
	extra []clientv3.Op // e.g. a dead letter
	rid   string        // request id to remember with the writes ("" none)
	reply []byte        // the reply remembered with rid
}

func (ec *eventCommit) writes() bool {
	return len(ec.tx.writes) > 0 || ec.tx.cleared || !ec.alarm.keep || len(ec.extra) > 0
}

// estimate bounds the ops and bytes ec adds to a stage.
func (o *object) estimate(ec *eventCommit) (ops, bytes int) {
	prefix := len(o.n.keys.DataPrefix(o.p, o.key.class, o.key.id))
	for k, w := range ec.tx.writes {
		ops++
		bytes += prefix + len(k) + len(w.val) + 16
	}
	if ec.tx.cleared {
		ops += len(ec.tx.writes) + 1
		bytes += (len(ec.tx.writes) + 1) * (2*prefix + 32)
	}
	if !ec.alarm.keep {
		ops += 3
		bytes += 3*(prefix+64) + 256
	}
	for _, op := range ec.extra {
		ops++
		bytes += opBytes(op)
	}
	if ec.rid != "" {
		ops++
		bytes += requestRing * (MaxRequestIDBytes + 32)
		bytes += len(ec.reply)
	}
	return ops + 1, bytes + prefix // + the object's name, once
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

// stage hands a finished event's writes to the object's pending commits and
// returns without waiting for them (unless the pending commits are full);
// done receives the outcome once the event's reply may be released. It runs
// on the object's goroutine or, for Sync, the handler's.
func (o *object) stage(ec eventCommit, done func(error)) {
	if ec.writes() && !ec.alarm.keep {
		// The alarm's ops replace the current record: know it first.
		if _, err := o.loadAlarm(o.n.ctx); err != nil {
			done(err)
			return
		}
	}
	ops, bytes := o.estimate(&ec)
	maxOps, maxBytes := o.n.committer.limits()
	for {
		o.smu.Lock()
		if o.gen != ec.tx.gen {
			o.smu.Unlock()
			done(fmt.Errorf("%w: before commit", durable.ErrObjectReset))
			return
		}
		if !ec.writes() {
			last := o.next
			if last == nil {
				last = o.flight
			}
			if last == nil {
				o.smu.Unlock()
				done(nil)
				return
			}
			last.waiters = append(last.waiters, waiter{fn: done})
			o.smu.Unlock()
			return
		}
		var req *commitReq
		switch {
		case o.flight == nil:
			o.flight = o.newStageLocked(&ec)
			o.flight.waiters = append(o.flight.waiters, waiter{fn: done, own: true})
			req = o.requestLocked(o.flight)
		case o.next == nil:
			o.next = o.newStageLocked(&ec)
			o.next.waiters = append(o.next.waiters, waiter{fn: done, own: true})
		case o.next.token != ec.tx.token:
			o.smu.Unlock()
			done(fmt.Errorf("%w: partition %d changed owner", durable.ErrOwnershipLost, o.p))
			return
		case o.next.estOps+ops > maxOps || o.next.estBytes+bytes > maxBytes:
			// next is full: wait for flight to land and next to take off.
			wait := o.stageCh
			o.smu.Unlock()
			<-wait
			continue
		default:
			o.mergeLocked(o.next, &ec)
			o.next.waiters = append(o.next.waiters, waiter{fn: done, own: true})
		}
		if req == nil {
			o.next.estOps += ops
			o.next.estBytes += bytes
		}
		o.smu.Unlock()
		if req != nil {
			o.n.committer.submit(req)
		}
		return
	}
}

// newStageLocked starts a stage with ec. The stage takes over the event's
// write map: the event is over (or, for Sync, gets a new one).
func (o *object) newStageLocked(ec *eventCommit) *stage {
	s := &stage{token: ec.tx.token, writes: ec.tx.writes, cleared: ec.tx.cleared}
	o.addLocked(s, ec)
	return s
}

// mergeLocked adds ec's writes to s; later writes of a key replace earlier
// ones, and a DeleteAll drops what s wrote before it.
func (o *object) mergeLocked(s *stage, ec *eventCommit) {
	if ec.tx.cleared {
		s.cleared = true
		s.writes = map[string]write{}
	}
	for k, w := range ec.tx.writes {
		s.writes[k] = w
	}
	o.addLocked(s, ec)
}

// addLocked adds what ec holds besides storage writes to s.
func (o *object) addLocked(s *stage, ec *eventCommit) {
	if !ec.alarm.keep {
		s.alarmTouched, s.alarm = true, ec.alarm.record
	}
	s.extra = append(s.extra, ec.extra...)
	if ec.rid != "" {
		e := reqEntry{ID: ec.rid, Reply: ec.reply}
		if len(ec.reply) > maxKeptReply {
			e = reqEntry{ID: ec.rid, Dropped: true}
		}
		ring := append(append([]reqEntry(nil), o.reqs...), e)
		if len(ring) > requestRing {
			ring = ring[len(ring)-requestRing:]
		}
		o.reqs = ring
		s.ring, s.ringSet = ring, true
		s.rids = append(s.rids, e)
	}
	if o.name != "" && !o.nameStored {
		s.storeName = true
	}
}

// requestLocked turns s into the committer's request. The alarm's ops are
// computed against the committed record, which every earlier stage has
// updated by now.
func (o *object) requestLocked(s *stage) *commitReq {
	ops := o.storageOps(s.writes, s.cleared)
	if s.alarmTouched {
		ops = append(ops, o.alarmOpsLocked(s.alarm)...)
	}
	ops = append(ops, s.extra...)
	if s.ringSet {
		b, _ := json.Marshal(s.ring)
		ops = append(ops, clientv3.OpPut(o.n.keys.Requests(o.p, o.key.class, o.key.id), string(b)))
	}
	if s.storeName {
		ops = append(ops, clientv3.OpPut(o.n.keys.Object(o.p, o.key.class, o.key.id), o.name))
	}
	bytes := 0
	for _, op := range ops {
		bytes += opBytes(op)
	}
	return &commitReq{p: o.p, token: s.token, ops: ops, bytes: bytes, done: func(err error) { o.settle(s, err) }}
}

// settle takes the outcome of flight s: on success its writes become the
// committed state and next takes off; on failure the object forgets
// everything, and next fails unsent.
func (o *object) settle(s *stage, err error) {
	o.smu.Lock()
	o.flight = nil
	var req *commitReq
	var dropped *stage
	if err == nil {
		if s.cleared || len(o.cache)+len(s.writes) > maxCacheEntries {
			o.cache = map[string]cacheEntry{}
		}
		for k, w := range s.writes {
			o.cache[k] = cacheEntry{val: w.val, ok: !w.del}
		}
		if s.alarmTouched {
			o.alarm, o.alarmLoaded = s.alarm, true
		}
		if s.storeName {
			o.nameStored = true
		}
		if o.next != nil {
			o.flight, o.next = o.next, nil
			req = o.requestLocked(o.flight)
		}
	} else {
		dropped, o.next = o.next, nil
		// The commit may or may not have applied: what the object knew is
		// unreliable, and so is any event running now (its handle's
		// generation is outdated from here on).
		o.gen++
		o.cache = map[string]cacheEntry{}
		o.alarm, o.alarmLoaded = nil, false
		o.failed, o.failedAt = err, o.arrivals.Load()
	}
	close(o.stageCh)
	o.stageCh = make(chan struct{})
	o.smu.Unlock()

	// The scheduler learns of an alarm change before the next commit of the
	// object can, so its view follows the commits' order.
	switch {
	case err == nil && s.alarmTouched:
		o.n.sched.committed(o.key, o.p, dueOf(s.alarm))
	case err != nil && (s.alarmTouched || dropped != nil && dropped.alarmTouched):
		// An alarm change of unknown outcome: look at the stored alarm soon,
		// since the window may already have passed its time.
		o.n.sched.retryAt(o.key, o.p, o.n.now().Add(o.n.cfg.SystemRetryDelay))
	}
	if req != nil {
		o.n.committer.submit(req)
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

// pendingLocked reports whether the object has writes not yet durable.
func (o *object) pendingLocked() bool { return o.flight != nil || o.next != nil }

// waitDurable blocks until every staged write of the object is durable or
// has failed.
func (o *object) waitDurable() {
	for {
		o.smu.Lock()
		if !o.pendingLocked() {
			o.smu.Unlock()
			return
		}
		wait := o.stageCh
		o.smu.Unlock()
		<-wait
	}
}

// takeFailure returns the error of a failed commit the object has not
// recovered from yet, with the number of the last call that arrived before
// it, and clears it. The object goroutine recovers (recoverIfFailed).
func (o *object) takeFailure() (error, uint64) {
	o.smu.Lock()
	defer o.smu.Unlock()
	err := o.failed
	o.failed = nil
	return err, o.failedAt
}

// stagedRequest finds a request id recorded by a pending stage.
func (o *object) stagedRequest(id string) (*stage, reqEntry, bool) {
	o.smu.Lock()
	defer o.smu.Unlock()
	for _, s := range []*stage{o.next, o.flight} {
		if s == nil {
			continue
		}
		for _, e := range s.rids {
			if e.ID == id {
				return s, e, true
			}
		}
	}
	return nil, reqEntry{}, false
}

// waitFor adds done as a waiter of s if s is still pending; otherwise it
// reports false (s settled: its outcome is in the committed state).
func (o *object) waitFor(s *stage, done func(error)) bool {
	o.smu.Lock()
	defer o.smu.Unlock()
	if s != o.flight && s != o.next {
		return false
	}
	s.waiters = append(s.waiters, waiter{fn: done, own: true})
	return true
}

// storageOps turns buffered writes into etcd ops. After DeleteAll the
// object's range is deleted around the keys written after it, because etcd
// refuses a Txn whose delete range overlaps a put.
func (o *object) storageOps(writes map[string]write, cleared bool) []clientv3.Op {
	prefix := o.n.keys.DataPrefix(o.p, o.key.class, o.key.id)
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

// stageAndWait stages ec and waits until its writes are durable: Sync.
func (o *object) stageAndWait(ec eventCommit) error {
	res := make(chan error, 1)
	o.stage(ec, func(err error) { res <- err })
	return <-res
}
