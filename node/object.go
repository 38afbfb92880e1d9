package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/tracing"
)

// AlarmNotifier is what objects tell the alarm schedule
// (alarmstore.Schedule implements it).
type AlarmNotifier interface {
	// Committed reports an object's alarm now due at due (zero: none),
	// once durable, in the order of its commits.
	Committed(p int, class string, id durable.ID, due time.Time)
	// RetryAt asks for another look at an object's alarm at t.
	RetryAt(p int, class string, id durable.ID, t time.Time)
	// Release ends the delivery of an alarm to an object.
	Release()
}

// env is what every object of a node shares: its settings, the clock, the
// commit and read paths, the alarm schedule and the node's table. An object
// depends on these, not on the Node.
type env struct {
	node   string
	cfg    *Config
	policy alarmstore.Policy
	clock  clockwork.Clock
	log    *slog.Logger
	m      *metrics.Set
	tracer trace.Tracer // nil: tracing is off
	// retryLog bounds the alarm retry lines (logRetry).
	retryLog        *rate.Limiter
	retriesUnlogged atomic.Int64
	keys            keyspace.Space
	dataKeyBase     int         // len(keys.DataPrefix(p, "", "")): the part of a data prefix every object shares
	kv              clientv3.KV // List's range reads
	commits         Committer
	reads           Reader
	alarms          AlarmNotifier
	records         *alarmstore.Store // builds alarm ops; never reads here
	binary          func() bool       // whether records may be written binary (Membership.BinaryRecords)
	leaseValid      func() bool       // Membership.LeaseValid: no handler starts past the local lease deadline
	unconfirmed     error             // why an event is refused or cancelled past that deadline
	calls           invoker           // the node's call path, for State.Objects
	ctx             context.Context   // the node's: ends at Stop
	tab             *table
}

// call is one invocation waiting for an object.
type call struct {
	ctx     context.Context
	method  string
	payload []byte
	name    string
	rid     string // request id, "" for none
	digest  string // of method and payload, with a request id (handleCall)
	seq     uint64 // arrival number at its object
	reply   chan callResult
	next    *call      // the call behind it in its object's mailbox
	release func()     // ends the call's admission, once replied
	span    trace.Span // the event's span (handleCall), ended with the reply
	// op, when set, is a runtime event run instead of the class's Invoke
	// (RequeueDeadLetter): it changes tx and returns ops to commit with it.
	op func(ctx context.Context, o *object, tx *eventTx) ([]clientv3.Op, error)
}

type callResult struct {
	payload []byte
	err     error
}

// respond delivers the call's one reply and ends its admission.
func (c *call) respond(r callResult) {
	if c.span != nil && c.span.IsRecording() {
		if r.err != nil {
			c.span.SetStatus(otelcodes.Error, r.err.Error())
		}
		c.span.End()
	}
	c.reply <- r
	if c.release != nil {
		c.release()
	}
}

// object is one active durable object: an actor whose events run one at a
// time on its goroutine (run). Its storage state is its pipeline.
type object struct {
	// The fields are ordered so that the 4-byte ones pair up: every byte
	// here is held by every resident object (issue #17).
	env   *env
	class *Class // the table's copy, shared by the class's objects
	id    durable.ID

	// The mailbox: calls waiting, oldest first, at most QueueSize (queued
	// of them), linked through the calls themselves (call.next), so that a
	// resident object holds two pointers for it whatever was queued (a
	// 128-slot channel was 1.1 KB; a slice, 24 B). Under a lock of its own,
	// not pipeline.mu: enqueuers hold table.mu, and must not wait behind a
	// commit being built. Lock order: table.mu, then qmu.
	qmu        sync.Mutex
	head, tail *call
	queued     int32

	// sig holds the signals to the run goroutine (sigAlarm, sigEvict,
	// sigStop), set by whoever then wakes it (under table.mu, as park reads
	// them; end is set before sigStop, under table.mu), and sigInvoked.
	sig flags

	p           int32        // the object's partition (keyspace: five digits)
	sysFailures atomic.Int32 // alarm runs in a row that failed in the system

	end *ending // set by the first stop, under table.mu

	// Owned by the run goroutine.
	instance durable.Object
	reset    *failure // calls that arrived up to reset.at fail with reset.err; nil: none

	idleFrom atomic.Int64 // when the object's idle time starts (touch), Unix ns on the node's clock

	// wait is set while the object's goroutine waits for a handler (see
	// runHandler), for Quiet.
	wait atomic.Pointer[handlerWait]

	// running: a goroutine runs the object's events (run); otherwise it is
	// parked. gone: it left the table (evicted or exited) and never runs
	// again. delivered: the schedule handed it an alarm it has not released
	// yet. redeliver: the schedule offered the alarm again meanwhile (a
	// retry due before the run that set it released its delivery); the
	// object looks at its alarm once more when it releases. Guarded by
	// table.mu.
	running, gone, delivered, redeliver, finished bool

	pl pipeline
}

// The bits of object.sig.
const (
	sigAlarm   uint32 = 1 << iota // an alarm was delivered
	sigEvict                      // the sweeper found the object idle
	sigStop                       // stop asked (object.end says why)
	sigInvoked                    // an invocation ran since activation
)

// flags is a word of bits read and changed atomically: one word, where an
// atomic.Bool each took four bytes of every resident object.
type flags struct{ v atomic.Uint32 }

func (f *flags) has(b uint32) bool { return f.v.Load()&b != 0 }
func (f *flags) set(b uint32)      { f.v.Or(b) }

// take clears b and reports whether it was set.
func (f *flags) take(b uint32) bool { return f.v.And(^b)&b != 0 }

// ending is what a stopped object holds: made by the first stop, since
// few objects are ever stopped (a channel and an error cost every
// resident object 40 B; a made channel, 112 B more).
type ending struct {
	cause error
	// done is closed when the object has finished for good (finished, under
	// table.mu): its run goroutine exited, or it was evicted while parked.
	// Made only by a waiter (stopAndWait).
	done chan struct{}
}

// failure is a failed commit and the number of the last call that arrived
// before it (the calls up to there must fail).
type failure struct {
	err error
	at  uint64
}

func newObject(e *env, class *Class, id durable.ID, p int) *object {
	o := &object{env: e, class: class, id: id, p: int32(p)}
	o.pl.init(o)
	o.touch()
	return o
}

// stop asks the object to exit after the event in progress; queued callers
// get cause. Caller must not hold table.mu.
func (o *object) stop(cause error) {
	t := o.env.tab
	t.mu.Lock()
	o.stopLocked(cause)
	t.mu.Unlock()
}

// stopLocked is stop for a caller holding table.mu. The first cause wins.
func (o *object) stopLocked(cause error) {
	if !o.sig.has(sigStop) {
		o.end = &ending{cause: cause}
		o.sig.set(sigStop)
	}
	o.env.tab.wakeLocked(o)
}

// abort cancels the context of the handler running now, if any, with
// cause: its tenure is over, so nothing it does can commit, and a handler
// that heeds its context stops acting on the world.
func (o *object) abort(cause error) {
	if w := o.wait.Load(); w != nil {
		w.cancel(cause)
	}
}

// stopAndWait stops the object and waits until it has finished.
func (o *object) stopAndWait(cause error) {
	t := o.env.tab
	t.mu.Lock()
	o.stopLocked(cause)
	done := o.doneLocked()
	t.mu.Unlock()
	if done != nil {
		<-done
	}
}

// doneLocked returns a channel closed when the stopped object finishes,
// nil if it has already. Caller holds table.mu.
func (o *object) doneLocked() <-chan struct{} {
	if o.finished {
		return nil
	}
	if o.end.done == nil {
		o.end.done = make(chan struct{})
	}
	return o.end.done
}

// finishLocked records that the object has finished for good and wakes
// whoever waits for it. Caller holds table.mu.
func (o *object) finishLocked() {
	o.finished = true
	if o.end != nil && o.end.done != nil {
		close(o.end.done)
	}
}

// run handles the object's events while it has any, then parks: the
// goroutine ends, and the next enqueuer starts another (wakeLocked). An
// idle object holds no goroutine, so tens of thousands of them cost the
// garbage collector no stacks to scan. It also ends, for good, when the
// object stops or leaves memory.
func (o *object) run() {
	for {
		// A delivered alarm goes first: it is delivered again only after
		// it ran, so neither it nor the calls can starve the other.
		switch {
		case o.sig.has(sigStop):
			o.exit(o.end.cause)
			return
		case o.sig.take(sigAlarm):
			o.touchUntil(o.handleAlarm())
		case o.handleNextCall():
			o.touch()
		case o.sig.take(sigEvict):
			if o.tryEvict() {
				return
			}
		case o.park():
			return
		}
	}
}

// park ends the run goroutine if nothing waits. Enqueuers put their work in
// and then wake the object under table.mu, so nothing is left behind.
func (o *object) park() bool {
	t := o.env.tab
	t.mu.Lock()
	defer t.mu.Unlock()
	if o.sig.has(sigStop|sigAlarm|sigEvict) || o.queuedCalls() > 0 {
		return false
	}
	o.running = false
	return true
}

// push queues c unless QueueSize calls wait already. Caller holds
// table.mu.
func (o *object) push(c *call) bool {
	o.qmu.Lock()
	defer o.qmu.Unlock()
	if int(o.queued) >= min(o.env.cfg.QueueSize, math.MaxInt32) {
		return false
	}
	if o.tail == nil {
		o.head = c
	} else {
		o.tail.next = c
	}
	o.tail = c
	o.queued++
	return true
}

// pop takes the oldest queued call, or nil.
func (o *object) pop() *call {
	o.qmu.Lock()
	defer o.qmu.Unlock()
	c := o.head
	if c == nil {
		return nil
	}
	if o.head, c.next = c.next, nil; o.head == nil {
		o.tail = nil
	}
	o.queued--
	return c
}

// queuedCalls returns how many calls wait.
func (o *object) queuedCalls() int {
	o.qmu.Lock()
	defer o.qmu.Unlock()
	return int(o.queued)
}

// handleNextCall handles the oldest queued call, if any.
func (o *object) handleNextCall() bool {
	c := o.pop()
	if c == nil {
		return false
	}
	o.sig.set(sigInvoked)
	o.handleCall(c)
	return true
}

// alarmOnlyIdle is how long an object that has only run alarms since its
// activation stays in memory after its last event, unless its next alarm
// is due within the idle timeout (touchUntil): alarms of many objects due
// at once would otherwise keep all of them for the whole idle timeout.
const alarmOnlyIdle = time.Second

// touch records the end of an event: the object's idle time starts.
func (o *object) touch() { o.idleFrom.Store(o.env.clock.Now().UnixNano()) }

// touchUntil records the end of an alarm run after which the object's
// next alarm is due at next (zero: none). An object that has only run
// alarms starts its idle time at next when that is within the idle
// timeout: it stays parked, and runs that alarm on the instance it has,
// where it left memory a second after each run before and every periodic
// alarm paid an activation (its factory, its name and alarm reads: 4,600
// activations/s in a soak, issue #17). What it keeps is bounded: a parked
// object is 282 B besides its class's state, and a crowded table lets
// such objects go at once (idle).
func (o *object) touchUntil(next time.Time) {
	now := o.env.clock.Now()
	if o.sig.has(sigInvoked) || !next.After(now) || next.Sub(now) > o.env.cfg.IdleTimeout {
		o.touch()
		return
	}
	o.idleFrom.Store(next.UnixNano())
}

// idle reports whether the object may leave memory: it has had no event
// for its idle timeout, alarmOnlyIdle if it has only run alarms since its
// activation. While the table is crowded (table.sweep) room for
// activations comes first: an object that has only run alarms may leave at
// once (sparing its next alarm an activation counts for less), and any
// other after alarmOnlyIdle: otherwise activations for calls and alarms
// were refused, or waited, while the table was full of objects invoked
// once and idle for less than the idle timeout. Caller holds table.mu.
func (o *object) idle(now time.Time) bool {
	timeout := o.env.cfg.IdleTimeout
	crowded, invoked := o.env.tab.crowded, o.sig.has(sigInvoked)
	switch {
	case crowded && !invoked:
		return true
	case crowded || !invoked:
		timeout = min(timeout, alarmOnlyIdle)
	}
	return now.UnixNano()-o.idleFrom.Load() >= int64(timeout)
}

// tryEvict leaves the table if the object is idle and nothing is queued or
// pending, and reports whether it did; the run goroutine then ends.
func (o *object) tryEvict() bool {
	t := o.env.tab
	t.mu.Lock()
	defer t.mu.Unlock()
	if !o.evictLocked() {
		return false
	}
	o.finishLocked()
	return true
}

// evictParkedLocked evicts a parked object (no goroutine runs it, so the
// caller may act for it) if it is idle and nothing is queued or pending.
// Caller holds table.mu.
func (o *object) evictParkedLocked() {
	if o.evictLocked() {
		o.finishLocked()
	}
}

// evictLocked removes the object from the table and forgets its state if
// nothing is queued or pending. Enqueuers hold table.mu, so nothing can
// arrive between the check and the removal. Caller holds table.mu.
func (o *object) evictLocked() bool {
	if o.pl.pending() || o.queuedCalls() > 0 || o.sig.has(sigAlarm) || !o.idle(o.env.clock.Now()) {
		return false
	}
	if o.sig.has(sigStop) {
		return false // exit fails the queued calls with the stop's cause
	}
	o.env.tab.forgetLocked(o)
	o.forget()
	o.env.m.Evictions.Inc()
	return true
}

// exit waits for the pending commits (they settle under the tenure they were
// made in), leaves the table, fails every queued call with cause and
// finishes.
func (o *object) exit(cause error) {
	o.pl.waitDurable()
	t := o.env.tab
	t.mu.Lock()
	t.forgetLocked(o)
	t.mu.Unlock()
	o.forget()
	o.failQueued(cause)
	o.releaseDelivery()
	t.mu.Lock()
	o.finishLocked()
	t.mu.Unlock()
}

// resetInstance throws the instance away: its memory may hold state of a
// failed event. Storage handles of the old generation fail from now on. What
// the object knows of its committed state and its pending commits stay:
// they are independent of the instance.
func (o *object) resetInstance() {
	o.instance = nil
	o.pl.resetGeneration()
}

// forget resets the instance and drops everything the object knew of its
// committed state, which is read from etcd again when needed.
func (o *object) forget() {
	o.instance = nil
	o.pl.forget()
}

// recoverIfFailed handles a failed commit (the pipeline already dropped
// what the object knew): the instance goes, and the calls that arrived
// before the failure will fail as they come up (see behindFailure).
func (o *object) recoverIfFailed() {
	if err, at := o.pl.takeFailure(); err != nil {
		o.instance = nil
		o.reset = &failure{err: err, at: at}
	}
}

// behindFailure fails c if it arrived before a failure the object recovered
// from, and reports whether it did.
func (o *object) behindFailure(c *call) bool {
	o.recoverIfFailed()
	if o.reset == nil || c.seq > o.reset.at {
		return false
	}
	c.respond(callResult{err: resetError(o.reset.err)})
	return true
}

// resetAndFailQueued resets the instance and fails the calls queued behind
// the event that broke it (the contract of BlockConcurrencyWhile: waiting
// callers get an error).
func (o *object) resetAndFailQueued(cause error) {
	o.resetInstance()
	o.reset = &failure{err: cause, at: o.pl.arrivals.Load()}
}

// failQueued fails every call in the mailbox with err.
func (o *object) failQueued(err error) {
	for c := o.pop(); c != nil; c = o.pop() {
		c.respond(callResult{err: err})
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
// left running with a cancelled context and an outdated generation; it is
// the one goroutine of the node nobody waits for, because user code that
// ignores its context cannot be stopped.
func (o *object) runHandler(ctx context.Context, timeout time.Duration, fn func(ctx context.Context) ([]byte, error)) ([]byte, error, outcome) {
	ei := EventInfo{Node: o.env.node, Partition: int(o.p), Token: o.pl.eventToken()}
	hctx, cancel := context.WithCancelCause(context.WithValue(ctx, eventInfoKey{}, ei))
	defer cancel(nil)
	type result struct {
		out []byte
		err error
		how outcome
	}
	done := make(chan result, 1)
	var expired <-chan time.Time
	if timeout > 0 {
		t := o.env.clock.NewTimer(timeout)
		defer t.Stop()
		expired = t.Chan()
	}
	// Only the outermost run registers: a BlockConcurrencyWhile inside a
	// handler runs here again, and must not unregister the handler that is
	// still running when it returns (Drop could no longer cancel it). Its
	// context derives from the handler's, so cancelling that ends both.
	outermost := o.wait.CompareAndSwap(nil, &handlerWait{ctx: ctx, expired: expired, done: func() bool { return len(done) > 0 }, cancel: cancel})
	if outermost {
		defer o.wait.Store(nil)
	}
	// The lease was valid when the event was admitted, but the event may
	// have waited since (a queue, a read, a starved process): past the
	// local deadline another node may run this object, so no handler code
	// starts. Checked after the registration, so that a lease guard walk
	// (leaseGuard) either sees this run or happened before this check.
	if !o.env.leaseValid() {
		return nil, o.env.unconfirmed, outcomeError
	}
	go func() {
		defer func() {
			if r := recover(); r != nil {
				o.env.log.Error("handler panicked", "class", o.class.Name, "id", o.id, "panic", r, "stack", string(debug.Stack()))
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
	// abandon detaches an abandoned handler from its event before the
	// deferred cancel wakes it: nothing it does once its context ends (a
	// write, SetAlarm) may reach the event, whose outcome (the alarm's
	// retry, say) is decided without it. A BlockConcurrencyWhile inside
	// the handler breaks the event instead (its caller does that).
	abandon := func() {
		if outermost {
			o.pl.endEvent()
		}
	}
	select {
	case r := <-done:
		if r.how != outcomeOK && hctx.Err() != nil && ctx.Err() == nil {
			// Aborted: the tenure ended (see abort). The failure is the
			// system's, and callers follow the partition.
			return nil, fmt.Errorf("%w (the handler returned: %v)", context.Cause(hctx), r.err), outcomeError
		}
		return r.out, r.err, r.how
	case <-expired:
		abandon()
		return nil, fmt.Errorf("handler ran past its %s limit", timeout), outcomeAbandoned
	case <-ctx.Done():
		abandon()
		// hctx is ctx's child: the context package closes ctx's Done before
		// it ends the children, so wait for hctx to end with ctx's error
		// (a deadline stays a deadline for the handler's own calls) before
		// the deferred cancel could end it as merely cancelled.
		<-hctx.Done()
		return nil, ctx.Err(), outcomeAbandoned
	}
}

// handlerWait is what the object's goroutine waits on while a handler runs.
type handlerWait struct {
	ctx     context.Context
	expired <-chan time.Time
	done    func() bool             // the handler has returned
	cancel  context.CancelCauseFunc // ends the handler's context
}

// idle reports whether nothing would wake the waiting goroutine: the
// handler still runs, its limit has not expired and its caller is still
// there. The object then waits on user code only.
func (w *handlerWait) idle() bool {
	return !w.done() && len(w.expired) == 0 && w.ctx.Err() == nil
}

// ensureInstance runs the factory if the object has no instance. It must run
// inside an event: the factory's writes belong to it.
func (o *object) ensureInstance(ctx context.Context) error {
	if o.instance != nil {
		return nil
	}
	if err := o.pl.loadName(ctx); err != nil {
		return err
	}
	st := &state{o: o, h: &storageHandle{o: o, gen: o.pl.generation()}}
	// inst is written by the factory's goroutine and read here only after
	// it returned in time (runHandler's reply orders the two); an
	// abandoned factory's instance is never installed.
	var inst durable.Object
	_, err, how := o.runHandler(ctx, 0, func(ctx context.Context) ([]byte, error) {
		made, err := o.class.Factory(ctx, st)
		if err != nil {
			return nil, err
		}
		if made == nil {
			return nil, errors.New("factory returned a nil object")
		}
		if _, ok := made.(durable.Alarmer); o.class.HasAlarm && !ok {
			return nil, fmt.Errorf("class %q was registered with an alarm handler but %T has no Alarm method", o.class.Name, made)
		}
		inst = made
		return nil, nil
	})
	if how != outcomeOK {
		return classifyHandlerErr(fmt.Errorf("factory of %s: %w", o.class.Name, err), how)
	}
	if err := o.pl.broken(); err != nil {
		return err
	}
	o.instance = inst
	o.env.m.Activations.Inc()
	return nil
}

// classifyHandlerErr turns a handler's failure into the caller's error: system
// errors raised by our own storage and the runtime's refusals of bad input
// (an oversized key, SetAlarm without a handler, a typed method's unknown
// name or undecodable payload) keep their identity;
// anything else is the object's own error.
func classifyHandlerErr(err error, how outcome) error {
	if how == outcomeAbandoned || isSystemErr(err) ||
		errors.Is(err, durable.ErrInvalidArgument) || errors.Is(err, durable.ErrNoAlarmHandler) ||
		errors.Is(err, durable.ErrUnknownMethod) {
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
		durable.ErrCommitUnknown, durable.ErrStorageFull, context.Canceled, context.DeadlineExceeded,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var se *storageError
	return errors.As(err, &se)
}

// begin starts an event under p's current token, or fails c (and returns
// nil) if p is not served here or a commit failed before c arrived.
func (o *object) begin(c *call) *eventTx {
	token := o.env.tab.token(int(o.p))
	if token == 0 {
		c.respond(callResult{err: fmt.Errorf("%w: partition %d is not owned here", durable.ErrOwnershipLost, int(o.p))})
		return nil
	}
	for {
		if o.behindFailure(c) {
			return nil
		}
		if tx := o.pl.beginEvent(token, false); tx != nil {
			return tx
		}
		// A commit failed since the check above: recover and look again.
	}
}

// handleCall runs one invocation: a replay if its request id already ran,
// otherwise the handler, whose writes are staged; the reply leaves once
// they are durable.
func (o *object) handleCall(c *call) {
	if err := c.ctx.Err(); err != nil {
		c.respond(callResult{err: err})
		return
	}
	c.ctx, c.span = tracing.Start(c.ctx, o.env.tracer, "durable.event")
	if c.span.IsRecording() {
		c.span.SetAttributes(attribute.String("durable.class", o.class.Name), attribute.String("durable.method", o.env.m.Method(o.class.Name, c.method)),
			attribute.String("durable.object", o.id.String()), attribute.Int("durable.partition", int(o.p)))
	}
	o.pl.learnName(c.name)
	if c.rid != "" {
		c.digest = callDigest(c.method, c.payload)
	}
	if o.behindFailure(c) || c.rid != "" && o.replay(c) {
		return
	}
	tx := o.begin(c)
	if tx == nil {
		return
	}
	if c.rid != "" {
		tx.origin = callOrigin{kind: "invoke", rid: c.rid}
	}
	defer o.pl.endEvent()
	if c.op != nil {
		o.runOp(c, tx)
		return
	}
	if err := o.ensureInstance(c.ctx); err != nil {
		o.failEvent(tx)
		c.respond(callResult{err: err})
		return
	}
	inst := o.instance
	out, err, how := o.runHandler(c.ctx, 0, func(ctx context.Context) ([]byte, error) {
		return inst.Invoke(ctx, c.method, c.payload)
	})
	if how == outcomeOK {
		err = o.pl.broken()
	}
	if how == outcomeOK && err == nil && len(out) > o.env.cfg.MaxReplyBytes {
		// The caller could not receive it: the event must not commit.
		err = durable.Invalidf("the reply of %s.%s is %d bytes, over the limit of %d; nothing was written", o.class.Name, truncate(c.method), len(out), o.env.cfg.MaxReplyBytes)
	}
	if how != outcomeOK || err != nil {
		o.failEvent(tx)
		c.respond(callResult{err: classifyHandlerErr(err, how)})
		return
	}
	// The reply leaves once the event's writes, and the earlier ones it may
	// have read, are durable; meanwhile the object goes on with its next
	// event.
	ec := eventCommit{tx: tx, alarm: o.pl.alarmAfter(tx), rid: c.rid, digest: c.digest, reply: out, span: c.span.SpanContext()}
	o.pl.stage(ec, func(err error) {
		if err != nil {
			c.respond(callResult{err: err})
			return
		}
		c.respond(callResult{payload: out})
	})
}

// runOp runs a runtime event (c.op) on tx and stages its outcome like an
// invocation's: nothing of it is written if it fails.
func (o *object) runOp(c *call, tx *eventTx) {
	extra, err := c.op(c.ctx, o, tx)
	if err != nil {
		o.pl.discardWrites(tx)
		c.respond(callResult{err: err})
		return
	}
	o.pl.stage(eventCommit{tx: tx, alarm: o.pl.alarmAfter(tx), extra: extra}, func(err error) { c.respond(callResult{err: err}) })
}

// failEvent discards a failed event: it writes nothing, and its instance
// may hold state that was never committed, so it goes. If
// BlockConcurrencyWhile broke the event, the calls queued behind it fail
// too (the contract: waiting callers get an error).
func (o *object) failEvent(tx *eventTx) {
	if broken := o.pl.txBroken(tx); broken != nil {
		o.resetAndFailQueued(broken)
	}
	o.resetInstance()
}

// replay answers a retry of a request the object already ran, with the
// reply recorded with its writes once they are durable. It reports whether
// it answered c.
func (o *object) replay(c *call) bool {
	answer := func(e reqEntry) {
		out, err := replayReply(e, c.digest)
		c.respond(callResult{payload: out, err: err})
	}
	if o.pl.waitStagedRequest(c.rid, func(e reqEntry, err error) {
		if err != nil {
			c.respond(callResult{err: err})
			return
		}
		answer(e)
	}) {
		return true
	}
	// Not pending (or it settled meanwhile; if it failed, c fails below).
	if o.behindFailure(c) {
		return true
	}
	e, seen, err := o.pl.seenRequest(c.ctx, c.rid)
	if err != nil {
		c.respond(callResult{err: err})
		return true
	}
	if seen {
		answer(e)
	}
	return seen
}

// releaseDelivery tells the schedule the object is done with the alarm it
// was handed, if any.
func (o *object) releaseDelivery() {
	t := o.env.tab
	t.mu.Lock()
	had := o.delivered
	o.delivered = false
	if had && o.redeliver && !o.sig.has(sigStop) && !o.gone {
		// Offered again while it ran: it keeps the running slot and looks
		// at its alarm once more (handleAlarm reads the record and runs
		// it only if due). A stopping object's alarm is the next owner's.
		o.delivered = true
		o.sig.set(sigAlarm)
		t.wakeLocked(o)
		had = false
	}
	o.redeliver = false
	t.mu.Unlock()
	if had {
		o.env.alarms.Release()
	}
}

// retryAlarmAt asks the schedule to look at the object's alarm again at t.
func (o *object) retryAlarmAt(t time.Time) {
	o.env.alarms.RetryAt(int(o.p), o.class.Name, o.id, t)
}

// handleAlarm runs the object's alarm if it is due: the authoritative
// record is read first (the schedule's entry may be stale), and the run's
// outcome goes through the alarm policy. It returns when the object's
// alarm is next due as far as it knows (zero: none, or unknown).
func (o *object) handleAlarm() (next time.Time) {
	defer o.releaseDelivery()
	e := o.env
	token := e.tab.token(int(o.p))
	if token == 0 {
		return
	}
	// An alarm handler acts on the world (it delivers, it calls out): it
	// runs only on durable state, never on writes whose commit may still
	// fail.
	o.pl.waitDurable()
	o.recoverIfFailed()
	// The node's context, which ends when it stops. Not a child of it per
	// run: every alarm in flight was an entry in that context's children
	// map, and a burst of 100,000 made the map's inserts a third of the
	// run's own CPU (bench alarms, same instant).
	ctx := e.ctx
	rec, err := o.pl.loadAlarm(ctx)
	if err != nil {
		e.log.Warn("alarm record read failed; will retry", "class", o.class.Name, "id", o.id, "err", err, "at", o.systemRetry())
		return
	}
	if rec == nil {
		return
	}
	// The record carries the object's name, which its first commit stored:
	// no need to read it.
	o.pl.learnStoredName(rec.Name)
	if rec.Due.After(e.clock.Now()) {
		// A stale index entry or an early wake-up: never run early.
		e.alarms.Committed(int(o.p), o.class.Name, o.id, rec.Due)
		return rec.Due
	}
	r := *rec // the handler's run must not change what the pipeline knows
	rec = &r
	ctx, span := tracing.Start(ctx, e.tracer, "durable.alarm", trace.WithNewRoot())
	if span.IsRecording() {
		span.SetAttributes(attribute.String("durable.class", o.class.Name), attribute.String("durable.object", o.id.String()),
			attribute.Int("durable.partition", int(o.p)), attribute.Int("durable.alarm.retry_count", rec.RetryCount),
			attribute.Int64("durable.alarm.lateness_ms", e.clock.Since(rec.Due).Milliseconds()))
	}
	// The span ends once the outcome is committed, or here if none is.
	staged := false
	defer func() {
		if !staged {
			span.End()
		}
	}()
	tx := o.pl.beginEvent(token, true)
	if tx == nil {
		// A commit failed just now: what was read may be stale.
		o.recoverIfFailed()
		o.retryAlarmAt(e.clock.Now())
		return
	}
	defer o.pl.endEvent()
	// Retries of the run share the scheduled time, not the due time.
	tx.origin = callOrigin{kind: "alarm", scheduled: rec.Scheduled.UnixMilli()}

	var runErr error
	how := outcomeError
	if err := o.ensureInstance(ctx); err != nil {
		runErr = err
	} else {
		alarmer := o.instance.(durable.Alarmer)
		info := durable.AlarmInfo{RetryCount: rec.RetryCount, IsRetry: rec.RetryCount > 0, ScheduledTime: rec.Scheduled}
		started := e.clock.Now()
		if e.m.Enabled() {
			e.m.AlarmLateness.WithLabelValues(o.class.Name).Observe(started.Sub(rec.Due).Seconds())
		}
		_, runErr, how = o.runHandler(ctx, e.cfg.AlarmHandlerTimeout, func(ctx context.Context) ([]byte, error) {
			return nil, alarmer.Alarm(ctx, info)
		})
		if e.m.Enabled() {
			e.m.AlarmHandlerSeconds.WithLabelValues(o.class.Name).Observe(e.clock.Since(started).Seconds())
		}
		if how == outcomeOK {
			if runErr = o.pl.broken(); runErr != nil {
				how = outcomeError
			}
		}
	}
	touched, replacement := o.pl.alarmTouched(tx)
	d := e.policy.Next(*rec, alarmstore.Outcome{
		Failed: how != outcomeOK,
		// An abandoned run is the handler's failure (its time limit) unless
		// the node itself is stopping; an error is the system's if our own
		// storage or the node raised it.
		System:  how != outcomeOK && (e.ctx.Err() != nil || how != outcomeAbandoned && isSystemErr(runErr)),
		Touched: touched, Replacement: replacement, Err: runErr, SystemFailures: int(o.sysFailures.Load()),
	}, e.clock.Now())
	ec := eventCommit{tx: tx, span: span.SpanContext()}
	outcome := "success"
	switch {
	case d.Action == alarmstore.RunAgain:
		outcome = "system_failure"
	case how != outcomeOK:
		outcome = "failure"
	}
	if e.m.Enabled() {
		e.m.AlarmRuns.WithLabelValues(o.class.Name, outcome).Inc()
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("durable.alarm.outcome", outcome))
		if runErr != nil {
			span.SetStatus(otelcodes.Error, runErr.Error())
		}
	}
	switch d.Action {
	case alarmstore.RunAgain:
		e.log.Warn("alarm run failed in the system; retrying", "class", o.class.Name, "id", o.id, "err", runErr, "at", d.At)
		o.sysFailures.Add(1)
		o.resetAndFailQueued(runErr)
		o.retryAlarmAt(d.At)
		return
	case alarmstore.Delete:
		ec.alarm = alarmChange{set: true}
	case alarmstore.Replace:
		ec.alarm = alarmChange{set: true, record: d.Next}
		next = dueOf(d.Next) // nil: the handler deleted it
	case alarmstore.Retry:
		ec.alarm = alarmChange{set: true, record: d.Next}
		next = dueOf(d.Next)
		e.m.AlarmRetries.WithLabelValues(o.class.Name).Inc()
		o.logRetry(d.Next, runErr)
	case alarmstore.Abandon:
		ec.alarm = alarmChange{set: true}
		ec.extra = []clientv3.Op{e.records.DeadLetterOp(*d.Dead, e.clock.Now())}
		e.m.AlarmDeadLetters.WithLabelValues(o.class.Name).Inc()
		e.log.Warn("alarm abandoned after its last retry", "class", o.class.Name, "id", o.id,
			"scheduled", rec.Scheduled, "retries", rec.RetryCount, "err", runErr)
	}
	if !d.CommitWrites {
		o.pl.discardWrites(tx)
	}
	staged = true
	o.pl.stage(ec, func(err error) {
		o.alarmSettled(err)
		span.End()
	})
	// After the outcome is staged: the reset starts a new generation, and
	// the outcome must commit in this one.
	if how != outcomeOK {
		o.failEvent(tx)
	}
	return next
}

// logRetry logs a failed run that will run again: one line per retry, at
// most retryLogRate lines a second per node (a failing class must not
// flood the log); the next line says how many were left out.
func (o *object) logRetry(next *alarmstore.Record, err error) {
	e := o.env
	if !e.retryLog.Allow() {
		e.retriesUnlogged.Add(1)
		return
	}
	args := []any{"class", o.class.Name, "id", o.id, "retry", next.RetryCount, "at", next.Due, "err", err}
	if n := e.retriesUnlogged.Swap(0); n > 0 {
		args = append(args, "retries_not_logged", n)
	}
	e.log.Info("alarm run failed; retrying", args...)
}

// retryLogRate bounds the retry lines a node logs per second (burst of as
// many).
const retryLogRate = 10

// alarmSettled is the outcome of an alarm run's commit. A failure is the
// system's: the alarm is looked at again, with the same retry count.
func (o *object) alarmSettled(err error) {
	if err == nil {
		o.sysFailures.Store(0)
		return
	}
	o.env.log.Warn("alarm outcome not committed; retrying", "class", o.class.Name, "id", o.id, "err", err, "at", o.systemRetry())
}

// systemRetry has the object's alarm looked at again after a failure of the
// system, later with each failure in a row, and returns when.
func (o *object) systemRetry() time.Time {
	at := o.env.clock.Now().Add(o.env.policy.SystemBackoff(int(o.sysFailures.Add(1) - 1)))
	o.retryAlarmAt(at)
	return at
}
