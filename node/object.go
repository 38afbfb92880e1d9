package node

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
)

// MaxAlarmRetries is the number of retries after a failed alarm run (7 runs).
const MaxAlarmRetries = 6

// call is one invocation waiting for an object.
type call struct {
	ctx     context.Context
	method  string
	payload []byte
	name    string
	rid     string // request id, "" for none
	seq     uint64 // arrival number at its object
	reply   chan callResult
}

type callResult struct {
	payload []byte
	err     error
}

type cacheEntry struct {
	val []byte
	ok  bool
}

// maxCacheEntries bounds an object's read cache; past it the cache is cleared.
const maxCacheEntries = 4096

// object is one active durable object. Its fields below smu are touched by
// its run goroutine and, through storage handles, by the handler goroutine of
// the event in progress; smu guards them because a handler abandoned after a
// timeout may still call storage while the next event runs (it then finds its
// generation outdated and gets ErrObjectReset).
type object struct {
	n     *Node
	key   objKey
	class Class
	id    durable.ID
	p     int

	mailbox  chan *call
	alarmSig chan struct{}
	evictSig chan struct{} // the node's sweeper found the object idle
	stopCh   chan struct{}
	stopOnce sync.Once
	stopErr  error // set before stopCh is closed
	done     chan struct{}

	// Owned by the run goroutine.
	instance durable.Object

	invoked    atomic.Bool  // an invocation ran since activation
	lastActive atomic.Int64 // end of the last event, Unix ns on the node's clock

	// running: a goroutine runs the object's events (run); otherwise it is
	// parked. gone: it left the node's map (evicted or exited) and never
	// runs again. Guarded by n.mu.
	running, gone bool

	// delivered: the scheduler handed the object an alarm that it has not
	// looked at yet; it releases the delivery when done. Guarded by n.mu.
	delivered bool

	smu         sync.Mutex
	gen         uint64 // bumped on every reset
	cur         *eventTx
	name        string
	nameStored  bool
	cache       map[string]cacheEntry
	alarm       *alarmstore.Record // committed alarm, valid when alarmLoaded
	alarmLoaded bool

	// Pending commits (see stage.go).
	flight   *stage
	next     *stage
	stageCh  chan struct{} // closed and replaced whenever flight settles
	failed   error         // a commit failed; the goroutine recovers before its next event
	failedAt uint64        // arrivals when it failed

	// Calls are numbered as they arrive (under n.mu); those numbered up to
	// resetBelow fail with resetCause when they come up. Owned by the run
	// goroutine, except arrivals.
	arrivals   atomic.Uint64
	resetBelow uint64
	resetCause error

	// reqs are the remembered request ids (see dedup.go) including those of
	// pending stages, valid when reqsLoaded; only the object's goroutine
	// uses them.
	reqs       []reqEntry
	reqsLoaded bool
}

func newObject(n *Node, class Class, id durable.ID, p int) *object {
	o := &object{
		n: n, key: objKey{class: class.Name, id: id.String()}, class: class, id: id, p: p,
		mailbox:  make(chan *call, n.cfg.QueueSize),
		alarmSig: make(chan struct{}, 1),
		evictSig: make(chan struct{}, 1),
		stopCh:   make(chan struct{}),
		done:     make(chan struct{}),
		cache:    map[string]cacheEntry{},
		stageCh:  make(chan struct{}),
	}
	o.touch()
	return o
}

// signalAlarm asks the object to look at its alarm. Caller holds n.mu.
func (o *object) signalAlarm() {
	select {
	case o.alarmSig <- struct{}{}:
	default:
	}
	o.n.wakeLocked(o)
}

// stop asks the object to exit after the event in progress; queued callers
// get cause. Caller must not hold n.mu.
func (o *object) stop(cause error) {
	o.stopOnce.Do(func() {
		o.stopErr = cause
		close(o.stopCh)
	})
	o.n.mu.Lock()
	o.n.wakeLocked(o)
	o.n.mu.Unlock()
}

func (o *object) stopAndWait(cause error) {
	o.stop(cause)
	<-o.done
}

// run handles the object's events while it has any, then parks: the
// goroutine ends, and the next enqueuer starts another (wakeLocked). An
// idle object holds no goroutine, so tens of thousands of them cost the
// garbage collector no stacks to scan. It also ends, for good, when the
// object stops or leaves memory.
func (o *object) run() {
	for {
		select {
		case <-o.stopCh:
			o.exit(o.stopErr)
			close(o.done)
			return
		default:
		}
		select {
		case c := <-o.mailbox:
			o.invoked.Store(true)
			o.handleCall(c)
			o.touch()
			continue
		case <-o.alarmSig:
			o.handleAlarm()
			o.touch()
			continue
		case <-o.evictSig:
			if o.tryEvict() {
				close(o.done)
				return
			}
			continue
		default:
		}
		if o.park() {
			return
		}
	}
}

// park ends the run goroutine if nothing waits. Enqueuers put their work in
// and then wake the object under n.mu, so nothing is left behind.
func (o *object) park() bool {
	o.n.mu.Lock()
	defer o.n.mu.Unlock()
	select {
	case <-o.stopCh:
		return false
	default:
	}
	if len(o.mailbox) > 0 || len(o.alarmSig) > 0 || len(o.evictSig) > 0 {
		return false
	}
	o.running = false
	return true
}

// alarmOnlyIdle is how long an object that has only run alarms since its
// activation stays in memory: alarms of many objects due at once would
// otherwise keep all of them for the whole idle timeout.
const alarmOnlyIdle = time.Second

// touch records the end of an event: the object's idle time starts.
func (o *object) touch() { o.lastActive.Store(o.n.now().UnixNano()) }

// idle reports whether the object has had no event for its idle timeout.
func (o *object) idle(now time.Time) bool {
	timeout := o.n.cfg.IdleTimeout
	if !o.invoked.Load() {
		timeout = min(timeout, alarmOnlyIdle)
	}
	return now.UnixNano()-o.lastActive.Load() >= int64(timeout)
}

// tryEvict leaves the node's map if the object is idle and nothing is
// queued or pending, and reports whether it did; the run goroutine then
// ends.
func (o *object) tryEvict() bool {
	o.n.mu.Lock()
	defer o.n.mu.Unlock()
	return o.evictLocked()
}

// evictParkedLocked evicts a parked object (no goroutine runs it, so the
// caller may act for it) if it is idle and nothing is queued or pending.
// Caller holds n.mu.
func (o *object) evictParkedLocked() {
	if o.evictLocked() {
		close(o.done)
	}
}

// evictLocked removes the object from the node's map and forgets its state
// if nothing is queued or pending. Enqueuers hold n.mu, so nothing can
// arrive between the check and the removal. Caller holds n.mu.
func (o *object) evictLocked() bool {
	o.smu.Lock()
	pending := o.pendingLocked()
	o.smu.Unlock()
	if pending || len(o.mailbox) > 0 || len(o.alarmSig) > 0 || !o.idle(o.n.now()) {
		return false
	}
	select {
	case <-o.stopCh:
		return false // exit fails the queued calls with the stop's cause
	default:
	}
	o.n.forgetLocked(o)
	o.forget()
	return true
}

// exit waits for the pending commits (they settle under the tenure they were
// made in), leaves the map and fails every queued call with cause.
func (o *object) exit(cause error) {
	defer o.releaseDelivery()
	o.waitDurable()
	o.n.mu.Lock()
	o.n.forgetLocked(o)
	o.n.mu.Unlock()
	o.forget()
	o.failQueued(cause)
}

// resetInstance throws the instance away: its memory may hold state of a
// failed event. Storage handles of the old generation fail from now on. What
// the object knows of its committed state (cache, alarm, request ids) and
// its pending commits stay: they are independent of the instance.
func (o *object) resetInstance() {
	o.instance = nil
	o.smu.Lock()
	o.gen++
	o.cur = nil
	o.smu.Unlock()
}

// forget resets the instance and drops everything the object knew of its
// committed state, which is read from etcd again when needed.
func (o *object) forget() {
	o.resetInstance()
	o.smu.Lock()
	o.cache = map[string]cacheEntry{}
	o.alarm, o.alarmLoaded = nil, false
	o.smu.Unlock()
	o.reqsLoaded = false
}

// recoverIfFailed handles a failed commit (settle already dropped what the
// object knew): the instance goes, and the calls that arrived before the
// failure will fail as they come up (see behindFailure).
func (o *object) recoverIfFailed() {
	if err, at := o.takeFailure(); err != nil {
		o.instance = nil
		o.reqsLoaded = false
		o.failBelow(at, err)
	}
}

// failBelow makes every call that arrived up to arrival number at fail with
// ErrObjectReset(cause) when it comes up: they were queued behind a failure
// and may depend on state that never became durable. Calls arriving later
// run normally.
func (o *object) failBelow(at uint64, cause error) {
	o.resetBelow, o.resetCause = at, cause
}

// behindFailure fails c if it arrived before a failure the object recovered
// from, and reports whether it did.
func (o *object) behindFailure(c *call) bool {
	o.recoverIfFailed()
	if c.seq > o.resetBelow {
		return false
	}
	c.reply <- callResult{err: resetError(o.resetCause)}
	return true
}

// resetAndFailQueued resets the instance and fails the calls queued behind
// the event that broke it (the contract of BlockConcurrencyWhile: waiting
// callers get an error).
func (o *object) resetAndFailQueued(cause error) {
	o.resetInstance()
	o.failBelow(o.arrivals.Load(), cause)
}

// failQueued fails every call in the mailbox with err.
func (o *object) failQueued(err error) {
	for {
		select {
		case c := <-o.mailbox:
			c.reply <- callResult{err: err}
		default:
			return
		}
	}
}

// EventInfo describes where an event runs: the node, the partition and the
// fencing token of the node's tenure. Handlers read it with EventInfoFrom;
// tests use it to prove that an object never runs on two nodes at once.
type EventInfo struct {
	Node      string
	Partition int
	Token     int64
}

type eventInfoKey struct{}

// EventInfoFrom returns the EventInfo of the event whose context ctx is.
func EventInfoFrom(ctx context.Context) (EventInfo, bool) {
	ei, ok := ctx.Value(eventInfoKey{}).(EventInfo)
	return ei, ok
}

func (o *object) eventInfo() EventInfo {
	o.smu.Lock()
	defer o.smu.Unlock()
	ei := EventInfo{Node: o.n.cfg.ID, Partition: o.p}
	if o.cur != nil {
		ei.Token = o.cur.token
	}
	return ei
}

// outcome is how a handler run ended.
type outcome int

const (
	outcomeOK        outcome = iota
	outcomeError             // the handler returned an error
	outcomePanic             // the handler panicked
	outcomeAbandoned         // the deadline or caller's ctx ended first
)

// runHandler runs fn on its own goroutine so that a handler that ignores its
// context cannot hold the object forever. timeout (0 = none) is measured on
// the node's clock; ctx's end also abandons the run. An abandoned handler is
// left running with a cancelled context and an outdated generation.
func (o *object) runHandler(ctx context.Context, timeout time.Duration, fn func(ctx context.Context) ([]byte, error)) ([]byte, error, outcome) {
	hctx, cancel := context.WithCancel(context.WithValue(ctx, eventInfoKey{}, o.eventInfo()))
	defer cancel()
	type result struct {
		out []byte
		err error
		how outcome
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				o.n.log.Error("handler panicked", "class", o.key.class, "id", o.key.id, "panic", r, "stack", string(debug.Stack()))
				done <- result{err: &durable.ObjectError{Message: fmt.Sprintf("panic: %v", r)}, how: outcomePanic}
			}
		}()
		out, err := fn(hctx)
		if err != nil {
			done <- result{out: out, err: err, how: outcomeError}
			return
		}
		done <- result{out: out, how: outcomeOK}
	}()
	var expired <-chan time.Time
	if timeout > 0 {
		t := o.n.cfg.Clock.NewTimer(timeout)
		defer t.Stop()
		expired = t.Chan()
	}
	select {
	case r := <-done:
		return r.out, r.err, r.how
	case <-expired:
		return nil, fmt.Errorf("handler ran past its %s limit", timeout), outcomeAbandoned
	case <-ctx.Done():
		return nil, ctx.Err(), outcomeAbandoned
	}
}

// beginEvent starts buffering the writes of an event. It returns nil if a
// commit failed since the object last looked: the caller recovers first.
// Checking under smu, where settle records a failure, means that a failure
// either is seen here or outdates the event's generation, failing its
// staging.
func (o *object) beginEvent(token int64, inAlarm bool) *eventTx {
	o.smu.Lock()
	defer o.smu.Unlock()
	if o.failed != nil {
		return nil
	}
	tx := &eventTx{gen: o.gen, token: token, inAlarm: inAlarm, writes: map[string]write{}}
	o.cur = tx
	return tx
}

func (o *object) endEvent() {
	o.smu.Lock()
	o.cur = nil
	o.smu.Unlock()
}

// ensureInstance runs the factory if the object has no instance. It must run
// inside an event: the factory's writes belong to it.
func (o *object) ensureInstance(ctx context.Context) error {
	if o.instance != nil {
		return nil
	}
	if err := o.loadName(ctx); err != nil {
		return err
	}
	st := &state{o: o, h: &storageHandle{o: o, gen: o.currentGen()}}
	_, err, how := o.runHandler(ctx, 0, func(ctx context.Context) ([]byte, error) {
		inst, err := o.class.Factory(ctx, st)
		if err != nil {
			return nil, err
		}
		if inst == nil {
			return nil, errors.New("factory returned a nil object")
		}
		if _, ok := inst.(durable.Alarmer); o.class.HasAlarm && !ok {
			return nil, fmt.Errorf("class %q was registered with an alarm handler but %T has no Alarm method", o.class.Name, inst)
		}
		o.instance = inst
		return nil, nil
	})
	if how != outcomeOK {
		o.instance = nil
		return o.classifyHandlerErr(fmt.Errorf("factory of %s: %w", o.class.Name, err), how)
	}
	if err := o.txBroken(); err != nil {
		o.instance = nil
		return err
	}
	return nil
}

func (o *object) currentGen() uint64 {
	o.smu.Lock()
	defer o.smu.Unlock()
	return o.gen
}

// txBroken returns the error that broke the current event (a failed
// BlockConcurrencyWhile), if any.
func (o *object) txBroken() error {
	o.smu.Lock()
	defer o.smu.Unlock()
	if o.cur != nil && o.cur.broken != nil {
		return o.cur.broken
	}
	return nil
}

// classifyHandlerErr turns a handler's failure into the caller's error: system
// errors raised by our own storage and the runtime's refusals of bad input
// (an oversized key, SetAlarm without a handler) keep their identity;
// anything else is the object's own error.
func (o *object) classifyHandlerErr(err error, how outcome) error {
	if how == outcomeAbandoned || isSystemErr(err) ||
		errors.Is(err, durable.ErrInvalidArgument) || errors.Is(err, durable.ErrNoAlarmHandler) {
		return err
	}
	var oe *durable.ObjectError
	if errors.As(err, &oe) {
		return err
	}
	return &durable.ObjectError{Message: err.Error()}
}

// isSystemErr reports errors of the runtime (as opposed to the handler's own):
// they do not count against alarm retries.
func isSystemErr(err error) bool {
	for _, target := range []error{
		durable.ErrUnavailable, durable.ErrOwnershipLost, durable.ErrObjectReset,
		durable.ErrCommitUnknown, context.Canceled, context.DeadlineExceeded,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var se *storageError
	return errors.As(err, &se)
}

func (o *object) handleCall(c *call) {
	if err := c.ctx.Err(); err != nil {
		c.reply <- callResult{err: err}
		return
	}
	token := o.n.token(o.p)
	if token == 0 {
		c.reply <- callResult{err: fmt.Errorf("%w: partition %d is not owned here", durable.ErrOwnershipLost, o.p)}
		return
	}
	o.smu.Lock()
	if o.name == "" && c.name != "" {
		o.name = c.name
	}
	o.smu.Unlock()
	if o.behindFailure(c) || c.rid != "" && o.replay(c) {
		return
	}
	tx := o.beginEvent(token, false)
	for tx == nil {
		// A commit failed since the checks above.
		if o.behindFailure(c) {
			return
		}
		tx = o.beginEvent(token, false)
	}
	defer o.endEvent()
	if err := o.ensureInstance(c.ctx); err != nil {
		o.resetAndFailQueuedIfBroken(tx)
		o.resetInstance()
		c.reply <- callResult{err: err}
		return
	}
	inst := o.instance
	out, err, how := o.runHandler(c.ctx, 0, func(ctx context.Context) ([]byte, error) {
		return inst.Invoke(ctx, c.method, c.payload)
	})
	if how == outcomeOK {
		err = o.txBroken()
	}
	if how != outcomeOK || err != nil {
		// A failed event writes nothing, and its instance may hold state that
		// was never committed: throw it away.
		o.resetAndFailQueuedIfBroken(tx)
		o.resetInstance()
		c.reply <- callResult{err: o.classifyHandlerErr(err, how)}
		return
	}
	// The reply leaves once the event's writes, and the earlier ones it may
	// have read, are durable; meanwhile the object goes on with its next
	// event.
	o.stage(eventCommit{tx: tx, alarm: o.desiredAlarm(tx, nil), rid: c.rid, reply: out}, func(err error) {
		if err != nil {
			c.reply <- callResult{err: err}
			return
		}
		c.reply <- callResult{payload: out}
	})
}

// replay answers a retry of a request the object already ran, with the
// reply recorded with its writes once they are durable. It reports whether
// it answered c.
func (o *object) replay(c *call) bool {
	if s, e, ok := o.stagedRequest(c.rid); ok {
		answered := o.waitFor(s, func(err error) {
			if err != nil {
				c.reply <- callResult{err: err}
				return
			}
			out, err := replayReply(e)
			c.reply <- callResult{payload: out, err: err}
		})
		if answered {
			return true
		}
		// It settled meanwhile; if it failed, c fails below.
	}
	if o.behindFailure(c) {
		return true
	}
	if err := o.loadRequests(c.ctx); err != nil {
		c.reply <- callResult{err: err}
		return true
	}
	if e, ok := o.seenRequest(c.rid); ok {
		out, err := replayReply(e)
		c.reply <- callResult{payload: out, err: err}
		return true
	}
	return false
}

// resetAndFailQueuedIfBroken fails queued callers when BlockConcurrencyWhile
// broke the event (the contract: waiting callers get an error).
func (o *object) resetAndFailQueuedIfBroken(tx *eventTx) {
	o.smu.Lock()
	broken := tx.broken
	o.smu.Unlock()
	if broken != nil {
		o.resetAndFailQueued(broken)
	}
}

// alarmState is the alarm an event leaves behind.
type alarmState struct {
	keep   bool // leave the committed alarm as it is
	record *alarmstore.Record
}

// desiredAlarm computes the alarm after a successful event. inAlarmRec is the
// record being delivered when the event is an alarm run.
func (o *object) desiredAlarm(tx *eventTx, inAlarmRec *alarmstore.Record) alarmState {
	o.smu.Lock()
	defer o.smu.Unlock()
	if tx.alarmTouched {
		return alarmState{record: o.freshRecordLocked(tx.alarmDue)}
	}
	if inAlarmRec != nil {
		return alarmState{} // success deletes the alarm
	}
	return alarmState{keep: true}
}

func (o *object) freshRecordLocked(due time.Time) *alarmstore.Record {
	if due.IsZero() {
		return nil
	}
	return &alarmstore.Record{
		Class: o.key.class, ID: o.key.id, Name: o.name, Partition: o.p,
		Due: due, Scheduled: due,
	}
}

// releaseDelivery tells the scheduler the object is done with the alarm it
// was handed, if any.
func (o *object) releaseDelivery() {
	o.n.mu.Lock()
	had := o.delivered
	o.delivered = false
	o.n.mu.Unlock()
	if had {
		o.n.sched.release()
	}
}

func (o *object) handleAlarm() {
	defer o.releaseDelivery()
	token := o.n.token(o.p)
	if token == 0 {
		return
	}
	// An alarm handler acts on the world (it delivers, it calls out): it
	// runs only on durable state, never on writes whose commit may still
	// fail.
	o.waitDurable()
	o.recoverIfFailed()
	ctx, cancel := context.WithCancel(o.n.ctx)
	defer cancel()
	rec, err := o.loadAlarm(ctx)
	if err != nil {
		o.n.log.Warn("alarm record read failed; will retry", "class", o.key.class, "id", o.key.id, "err", err)
		o.n.sched.retryAt(o.key, o.p, o.n.now().Add(o.n.cfg.SystemRetryDelay))
		return
	}
	if rec == nil {
		return
	}
	o.smu.Lock()
	if o.name == "" && rec.Name != "" {
		// The record carries the object's name, which its first commit
		// stored: no need to read it.
		o.name, o.nameStored = rec.Name, true
	}
	o.smu.Unlock()
	if now := o.n.now(); rec.Due.After(now) {
		// A stale index entry or an early wake-up: never run early.
		o.n.sched.committed(o.key, o.p, rec.Due)
		return
	}
	rec = cloneRecord(rec)
	tx := o.beginEvent(token, true)
	if tx == nil {
		// A commit failed just now: what was read may be stale.
		o.recoverIfFailed()
		o.n.sched.retryAt(o.key, o.p, o.n.now())
		return
	}
	defer o.endEvent()

	var runErr error
	how := outcomeError
	if err := o.ensureInstance(ctx); err != nil {
		runErr = err
	} else {
		alarmer := o.instance.(durable.Alarmer)
		info := durable.AlarmInfo{RetryCount: rec.RetryCount, IsRetry: rec.RetryCount > 0, ScheduledTime: rec.Scheduled}
		_, runErr, how = o.runHandler(ctx, o.n.cfg.AlarmHandlerTimeout, func(ctx context.Context) ([]byte, error) {
			return nil, alarmer.Alarm(ctx, info)
		})
		if how == outcomeAbandoned {
			// The abandoned handler may still run: detach it from the event
			// so that nothing it does from now on (a write, SetAlarm) reaches
			// the commit that records its failure.
			o.endEvent()
		}
		if how == outcomeOK {
			runErr = o.txBroken()
			if runErr != nil {
				how = outcomeError
			}
		}
	}

	if how == outcomeOK {
		o.stage(eventCommit{tx: tx, alarm: o.desiredAlarm(tx, rec)}, o.alarmSettled)
		return
	}
	o.resetAndFailQueuedIfBroken(tx)
	// An abandoned run is the handler's failure (its time limit) unless the
	// node itself is stopping; an error is the system's if our own storage or
	// the node raised it.
	system := o.n.ctx.Err() != nil || (how != outcomeAbandoned && isSystemErr(runErr))
	if system {
		// The system failed, not the handler: the alarm runs again with the
		// same retry count.
		o.systemRetry(runErr)
		return
	}
	// The handler failed: its storage writes are discarded; an alarm it set
	// or deleted stands, otherwise it is retried or abandoned.
	o.smu.Lock()
	touched, due := tx.alarmTouched, tx.alarmDue
	tx.writes, tx.cleared = map[string]write{}, false
	o.smu.Unlock()
	ec := eventCommit{tx: tx}
	switch {
	case touched:
		o.smu.Lock()
		ec.alarm.record = o.freshRecordLocked(due)
		o.smu.Unlock()
	case rec.RetryCount >= MaxAlarmRetries:
		dead := *rec
		dead.LastError = errString(runErr)
		ec.extra = []clientv3.Op{o.n.alarms.DeadLetterOp(dead, o.n.now())}
		o.n.log.Warn("alarm abandoned after its last retry", "class", o.key.class, "id", o.key.id,
			"scheduled", rec.Scheduled, "retries", rec.RetryCount, "err", runErr)
	default:
		r := *rec
		r.RetryCount++
		r.LastError = errString(runErr)
		r.Due = ceilMillis(o.n.now().Add(o.backoff(rec.RetryCount)))
		ec.alarm.record = &r
	}
	o.stage(ec, o.alarmSettled)
	o.resetInstance()
}

// alarmSettled is the outcome of an alarm run's commit. A failure is the
// system's: the alarm is looked at again, with the same retry count.
func (o *object) alarmSettled(err error) {
	if err != nil {
		o.n.log.Warn("alarm outcome not committed; retrying", "class", o.key.class, "id", o.key.id, "err", err)
		o.n.sched.retryAt(o.key, o.p, o.n.now().Add(o.n.cfg.SystemRetryDelay))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// backoff returns the delay before retry number retry+1: 2 s · 2^retry plus
// 0–25 % jitter.
func (o *object) backoff(retry int) time.Duration {
	base := 2 * time.Second << retry
	return base + time.Duration(float64(base)*0.25*o.n.cfg.Jitter())
}

// systemRetry resets the object after a failure of the system and looks at
// the alarm again later; the retry count is untouched.
func (o *object) systemRetry(cause error) {
	o.n.log.Warn("alarm run failed in the system; retrying", "class", o.key.class, "id", o.key.id, "err", cause)
	o.resetAndFailQueued(cause)
	o.n.sched.retryAt(o.key, o.p, o.n.now().Add(o.n.cfg.SystemRetryDelay))
}

func cloneRecord(r *alarmstore.Record) *alarmstore.Record {
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

// ceilMillis rounds t up to a whole millisecond: alarm times are stored in
// milliseconds, and rounding down could fire an alarm early.
func ceilMillis(t time.Time) time.Time {
	tr := t.Truncate(time.Millisecond)
	if tr.Before(t) {
		tr = tr.Add(time.Millisecond)
	}
	return tr
}
