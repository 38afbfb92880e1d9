package node_test

// Tests of the alarm rules of DESIGN.md section 1 ("Alarm API" and "Alarm
// execution guarantees"), one rule per test function. Every test drives the
// node's fake clock: it advances the clock and polls for the outcome. A
// negative check ("nothing ran") waits until the node is quiet at the
// clock's current time — anything due by then has run — and then counts.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/node"
)

const (
	probeClass   = "AlarmProbe" // implements durable.Alarmer
	noAlarmClass = "NoAlarm"    // does not

)

// alarmRun is one observed start of the Alarm handler.
type alarmRun struct {
	Name string
	Info durable.AlarmInfo
	At   time.Time // the node's clock when the handler started
}

// alarmScript decides what the n-th run (0-based, counted over every object
// of the test) of the Alarm handler does.
type alarmScript func(ctx context.Context, st durable.State, run alarmRun, n int) error

// alarmProbe records every alarm run and event of the test class and holds
// the per-test behaviour of its Alarm handler.
type alarmProbe struct {
	clock clockwork.Clock

	mu         sync.Mutex
	runs       []alarmRun
	events     []string
	script     alarmScript
	invokeGate chan struct{} // the "block" method waits on it
}

func (p *alarmProbe) setScript(s alarmScript) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.script = s
}

func (p *alarmProbe) record(r alarmRun) (int, alarmScript) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runs = append(p.runs, r)
	return len(p.runs) - 1, p.script
}

func (p *alarmProbe) event(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, s)
}

func (p *alarmProbe) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.runs)
}

func (p *alarmProbe) runList() []alarmRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]alarmRun(nil), p.runs...)
}

func (p *alarmProbe) eventList() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.events...)
}

func (p *alarmProbe) hasEvent(s string) bool {
	for _, e := range p.eventList() {
		if e == s {
			return true
		}
	}
	return false
}

// probeObject is the test class with an Alarm handler. Its methods:
//
//	set <RFC3339Nano>   SetAlarm, then returns GetAlarm of the same event
//	setms <unix ms>     SetAlarm(time.UnixMilli), then returns GetAlarm
//	get                 GetAlarm ("none" when there is none)
//	delete              DeleteAlarm, then returns GetAlarm of the same event
//	deleteall           DeleteAll, then returns GetAlarm of the same event
//	setzero             SetAlarm(zero time); "invalid" if refused as such
//	put k=v, read k     storage ("<none>" for a missing key)
//	mark                records the event "invoke"
//	block               records "invoke-start", waits for the probe's gate,
//	                    records "invoke-end"
type probeObject struct {
	st durable.State
	p  *alarmProbe
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func getAlarmString(ctx context.Context, s durable.Storage) (string, error) {
	t, ok, err := s.GetAlarm(ctx)
	if err != nil {
		return "", err
	}
	if !ok {
		return "none", nil
	}
	return fmtTime(t), nil
}

func (o *probeObject) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	s := o.st.Storage()
	reply := func(v string, err error) ([]byte, error) {
		if err != nil {
			return nil, err
		}
		return []byte(v), nil
	}
	switch method {
	case "set":
		t, err := time.Parse(time.RFC3339Nano, string(payload))
		if err != nil {
			return nil, err
		}
		if err := s.SetAlarm(ctx, t); err != nil {
			return nil, err
		}
		return reply(getAlarmString(ctx, s))
	case "setms":
		ms, err := strconv.ParseInt(string(payload), 10, 64)
		if err != nil {
			return nil, err
		}
		if err := s.SetAlarm(ctx, time.UnixMilli(ms)); err != nil {
			return nil, err
		}
		return reply(getAlarmString(ctx, s))
	case "get":
		return reply(getAlarmString(ctx, s))
	case "delete":
		if err := s.DeleteAlarm(ctx); err != nil {
			return nil, err
		}
		return reply(getAlarmString(ctx, s))
	case "deleteall":
		if err := s.DeleteAll(ctx); err != nil {
			return nil, err
		}
		return reply(getAlarmString(ctx, s))
	case "setzero":
		err := s.SetAlarm(ctx, time.Time{})
		if !errors.Is(err, durable.ErrInvalidArgument) {
			return nil, fmt.Errorf("SetAlarm(zero) = %v, want ErrInvalidArgument", err)
		}
		return []byte("invalid"), nil
	case "put":
		k, v, _ := strings.Cut(string(payload), "=")
		return nil, s.Put(ctx, k, []byte(v))
	case "read":
		v, ok, err := s.Get(ctx, string(payload))
		if err != nil {
			return nil, err
		}
		if !ok {
			return []byte("<none>"), nil
		}
		return v, nil
	case "mark":
		o.p.event("invoke")
		return nil, nil
	case "block":
		o.p.mu.Lock()
		gate := o.p.invokeGate
		o.p.mu.Unlock()
		o.p.event("invoke-start")
		<-gate
		o.p.event("invoke-end")
		return nil, nil
	}
	return nil, fmt.Errorf("unknown method %q", method)
}

func (o *probeObject) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	run := alarmRun{Name: o.st.Name(), Info: info, At: o.p.clock.Now()}
	n, script := o.p.record(run)
	if script == nil {
		return nil
	}
	return script(ctx, o.st, run, n)
}

// plainObject has no Alarm method. Its "set" method reports whether SetAlarm
// was refused with ErrNoAlarmHandler.
type plainObject struct {
	st    durable.State
	clock clockwork.Clock
}

func (o *plainObject) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	if method != "set" {
		return nil, fmt.Errorf("unknown method %q", method)
	}
	err := o.st.Storage().SetAlarm(ctx, o.clock.Now().Add(time.Minute))
	if !errors.Is(err, durable.ErrNoAlarmHandler) {
		return nil, fmt.Errorf("SetAlarm = %v, want ErrNoAlarmHandler", err)
	}
	return []byte("no-handler"), nil
}

// alarmEnv is a harness with the probe classes registered and a commit hook
// the test can set at any time.
type alarmEnv struct {
	*harness
	probe *alarmProbe
}

func newAlarmEnv(t *testing.T, setup func(cfg *node.Config)) *alarmEnv {
	t.Helper()
	probe := &alarmProbe{}
	h := newHarness(t, func(cfg *node.Config, reg *node.Registry) {
		if setup != nil {
			setup(cfg)
		}
		require.NoError(t, node.RegisterClass(reg, probeClass, func(_ context.Context, st durable.State) (*probeObject, error) {
			return &probeObject{st: st, p: probe}, nil
		}))
		require.NoError(t, node.RegisterClass(reg, noAlarmClass, func(_ context.Context, st durable.State) (*plainObject, error) {
			return &plainObject{st: st, clock: probe.clock}, nil
		}))
	})
	probe.clock = h.Clock
	return &alarmEnv{harness: h, probe: probe}
}

// set sets name's alarm to t and returns what GetAlarm reported in the same
// event.
func (e *alarmEnv) set(name string, t time.Time) string {
	e.t.Helper()
	return e.mustInvoke(probeClass, name, "set", fmtTime(t))
}

func (e *alarmEnv) getAlarm(name string) string {
	e.t.Helper()
	return e.mustInvoke(probeClass, name, "get", "")
}

func (e *alarmEnv) read(name, key string) string {
	e.t.Helper()
	return e.mustInvoke(probeClass, name, "read", key)
}

func (e *alarmEnv) now() time.Time { return e.Clock.Now() }

// advanceTo moves the fake clock to t.
func (e *alarmEnv) advanceTo(t time.Time) {
	e.t.Helper()
	d := t.Sub(e.now())
	require.GreaterOrEqual(e.t, d, time.Duration(0), "advanceTo %s is in the past", t)
	e.advance(d)
}

// waitRuns waits until exactly n alarm runs have started.
func (e *alarmEnv) waitRuns(n int) []alarmRun {
	e.t.Helper()
	e.eventually(func() bool { return e.probe.count() >= n }, "waiting for %d alarm runs", n)
	runs := e.probe.runList()
	require.Len(e.t, runs, n, "more alarm runs than expected: %+v", runs)
	return runs
}

// requireRunsStay checks that n alarm runs have started and no more: it
// waits until the node is quiet at the clock's current time (anything due
// by now has run) and counts.
func (e *alarmEnv) requireRunsStay(n int, why string) {
	e.t.Helper()
	e.WaitQuiet()
	require.Equal(e.t, n, e.probe.count(), "runs: %s (%+v)", why, e.probe.runList())
}

func (e *alarmEnv) objectID(name string) (int, durable.ID) {
	id := durable.IDFromName(probeClass, name)
	return id.Partition(e.n().PartitionCount()), id
}

// record reads name's alarm record from etcd (nil: none).
func (e *alarmEnv) record(name string) *alarmstore.Record {
	e.t.Helper()
	p, id := e.objectID(name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, err := alarmstore.New(e.Client, e.n().Keys()).Get(ctx, p, probeClass, id)
	require.NoError(e.t, err)
	return rec
}

// waitRecord waits until name's alarm record satisfies ok and returns it.
func (e *alarmEnv) waitRecord(name string, ok func(*alarmstore.Record) bool, what string) *alarmstore.Record {
	e.t.Helper()
	// assert, not require: on a miss the message names the last record
	// read, which the message's arguments could not (they are evaluated
	// before the wait). Atomic: the condition runs on its own goroutine.
	var last atomic.Pointer[alarmstore.Record]
	if !assert.Eventually(e.t, func() bool { rec := e.record(name); last.Store(rec); return ok(rec) }, 10*time.Second, 2*time.Millisecond) {
		e.t.Fatalf("alarm record of %s: never %s (last: %+v)", name, what, last.Load())
	}
	return last.Load()
}

func (e *alarmEnv) waitNoRecord(name string) {
	e.t.Helper()
	e.waitRecord(name, func(r *alarmstore.Record) bool { return r == nil }, "deleted")
}

func (e *alarmEnv) waitRetryRecord(name string, retry int) *alarmstore.Record {
	e.t.Helper()
	return e.waitRecord(name, func(r *alarmstore.Record) bool { return r != nil && r.RetryCount == retry },
		fmt.Sprintf("retry count %d", retry))
}

// keyCount counts the etcd keys under the test's prefix + sub.
func (e *alarmEnv) keyCount(sub string) int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.Client.Get(ctx, e.cfg.Prefix+sub, clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(e.t, err)
	return resp.Count
}

func (e *alarmEnv) deadLetters() []alarmstore.DeadLetter {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dl, _, err := alarmstore.New(e.Client, e.n().Keys()).ListDead(ctx, alarmstore.DeadFilter{Class: probeClass, Limit: 1000, Partitions: e.n().PartitionCount()})
	require.NoError(e.t, err)
	return dl
}

// mailbox reports whether name is active, the calls queued for it and
// whether an alarm waits for it.
func (e *alarmEnv) mailbox(name string) (active bool, calls int, alarm bool) {
	return e.n().Mailbox(probeClass, durable.IDFromName(probeClass, name))
}

// waitHandlerLimitArmed waits until the running alarm handler's time limit
// (a timer on the fake clock) is armed, so that advancing the clock counts
// against it. The node's other timers while one object runs its alarm are
// the scheduler's timer, the window ticker and the idle sweeper's ticker.
func (e *alarmEnv) waitHandlerLimitArmed() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(e.t, e.Clock.BlockUntilContext(ctx, 4), "the handler's time limit was never armed")
}

func requireTime(t *testing.T, want time.Time, got string, msgAndArgs ...any) {
	t.Helper()
	g, err := time.Parse(time.RFC3339Nano, got)
	require.NoError(t, err, msgAndArgs...)
	require.True(t, want.Equal(g), "want %s, got %s %v", fmtTime(want), got, fmt.Sprint(msgAndArgs...))
}

func requireRun(t *testing.T, r alarmRun, retry int, scheduled time.Time) {
	t.Helper()
	require.Equal(t, retry, r.Info.RetryCount, "RetryCount of %+v", r)
	require.Equal(t, retry > 0, r.Info.IsRetry, "IsRetry of %+v", r)
	require.True(t, scheduled.Equal(r.Info.ScheduledTime), "ScheduledTime %s, want %s", r.Info.ScheduledTime, scheduled)
}

func failAlways(_ context.Context, _ durable.State, _ alarmRun, n int) error {
	return fmt.Errorf("boom %d", n)
}

// --- Alarm API ---

func TestAlarmSetThenGetReportsItInAndAfterTheEvent(t *testing.T) {
	e := newAlarmEnv(t, nil)
	t0 := e.now()
	T := t0.Add(10 * time.Second)

	requireTime(t, T, e.set("a", T), "GetAlarm in the event that set it")
	requireTime(t, T, e.getAlarm("a"), "GetAlarm in a later event")
	require.Equal(t, "none", e.getAlarm("b"), "an object that never set an alarm")

	rec := e.record("a")
	require.NotNil(t, rec)
	require.True(t, rec.Due.Equal(T) && rec.Scheduled.Equal(T), "record %+v", rec)
	require.Equal(t, 0, rec.RetryCount)
	require.Equal(t, "a", rec.Name)
	require.EqualValues(t, 1, e.keyCount("due/"))

	// Also after the object left memory: the alarm is read back from etcd.
	e.restart()
	requireTime(t, T, e.getAlarm("a"), "GetAlarm after a restart")
}

func TestAlarmSetReplacesTheEarlierTime(t *testing.T) {
	e := newAlarmEnv(t, nil)
	t0 := e.now()

	// Moved later: the old time passes without a run.
	old, moved := t0.Add(10*time.Second), t0.Add(20*time.Second)
	e.set("a", old)
	requireTime(t, moved, e.set("a", moved), "GetAlarm after replacing")
	requireTime(t, moved, e.getAlarm("a"))
	require.EqualValues(t, 1, e.keyCount("alarm/"))
	require.EqualValues(t, 1, e.keyCount("due/"), "the old index entry must be gone")
	e.advanceTo(old.Add(time.Second))
	e.requireRunsStay(0, "the replaced time must not fire")
	e.advanceTo(moved)
	runs := e.waitRuns(1)
	requireRun(t, runs[0], 0, moved)
	e.waitNoRecord("a")

	// Moved earlier: it fires at the new time and not again at the old one.
	old, moved = e.now().Add(60*time.Second), e.now().Add(30*time.Second)
	e.set("b", old)
	e.set("b", moved)
	e.advanceTo(moved.Add(-time.Millisecond))
	e.requireRunsStay(1, "before the new time")
	e.advance(time.Millisecond)
	runs = e.waitRuns(2)
	require.Equal(t, "b", runs[1].Name)
	requireRun(t, runs[1], 0, moved)
	e.waitNoRecord("b")
	e.advanceTo(old.Add(time.Second))
	e.requireRunsStay(2, "the replaced time must not fire")
	require.EqualValues(t, 0, e.keyCount("due/"))
}

func TestAlarmDeleteRemovesItAndItNeverFires(t *testing.T) {
	e := newAlarmEnv(t, nil)
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	require.Equal(t, "none", e.mustInvoke(probeClass, "a", "delete", ""), "GetAlarm in the event that deleted it")
	require.Equal(t, "none", e.getAlarm("a"))
	require.Nil(t, e.record("a"))
	require.EqualValues(t, 0, e.keyCount("alarm/"))
	require.EqualValues(t, 0, e.keyCount("due/"))
	require.Zero(t, e.n().ScheduledAlarms(), "the deleted alarm must leave the heap")
	e.advanceTo(T.Add(time.Minute))
	e.requireRunsStay(0, "a deleted alarm fired")

	// Deleting when there is no alarm is fine.
	require.Equal(t, "none", e.mustInvoke(probeClass, "a", "delete", ""))
}

func TestAlarmDeleteAllDeletesItAndItNeverFires(t *testing.T) {
	// DESIGN §1: DeleteAll deletes the alarm with the keys (Cloudflare's
	// deleteAll since 2026-02-24).
	e := newAlarmEnv(t, nil)
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.mustInvoke(probeClass, "a", "put", "k=v")
	require.Equal(t, "none", e.mustInvoke(probeClass, "a", "deleteall", ""), "GetAlarm in the event that called DeleteAll")
	require.Equal(t, "none", e.getAlarm("a"))
	require.Equal(t, "<none>", e.read("a", "k"))
	require.Nil(t, e.record("a"))
	require.EqualValues(t, 0, e.keyCount("alarm/"))
	require.EqualValues(t, 0, e.keyCount("due/"))
	require.Zero(t, e.n().ScheduledAlarms(), "the deleted alarm must leave the heap")
	e.advanceTo(T.Add(time.Minute))
	e.requireRunsStay(0, "an alarm deleted by DeleteAll fired")

	// After a restart the node knows alarms only from etcd: still none.
	e.restart()
	require.Equal(t, "none", e.getAlarm("a"))
	e.advance(time.Minute)
	e.requireRunsStay(0, "an alarm deleted by DeleteAll fired after a restart")
}

func TestAlarmSetZeroTimeIsInvalidArgument(t *testing.T) {
	e := newAlarmEnv(t, nil)
	require.Equal(t, "invalid", e.mustInvoke(probeClass, "a", "setzero", ""))
	require.Equal(t, "none", e.getAlarm("a"))
	require.EqualValues(t, 0, e.keyCount("alarm/"))
}

func TestAlarmBeyondTheKeyRangeIsInvalidArgumentAndChangesNothing(t *testing.T) {
	e := newAlarmEnv(t, nil)
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	last := keyspace.MaxTime.UnixMilli()
	for _, ms := range []int64{last + 1, 10_000_000_000_000_000, 1<<63 - 1} {
		_, err := e.invoke(probeClass, "a", "setms", strconv.FormatInt(ms, 10))
		require.ErrorIs(t, err, durable.ErrInvalidArgument, "alarm at %d ms", ms)
		require.ErrorContains(t, err, "the latest an alarm can be set for")
	}
	requireTime(t, T, e.getAlarm("a"), "the refused calls left the alarm as it was")
	rec := e.record("a")
	require.NotNil(t, rec)
	require.True(t, rec.Due.Equal(T), "record %+v", rec)
	require.EqualValues(t, 1, e.keyCount("due/"))

	// The last instant the key holds is accepted.
	e.mustInvoke(probeClass, "b", "setms", strconv.FormatInt(last, 10))
	rec = e.record("b")
	require.NotNil(t, rec)
	require.True(t, rec.Due.Equal(keyspace.MaxTime), "record %+v", rec)
	require.EqualValues(t, 2, e.keyCount("due/"))
}

func TestAlarmSetWithoutAlarmHandlerIsRefused(t *testing.T) {
	e := newAlarmEnv(t, nil)
	c, err := e.Registry().Lookup(noAlarmClass)
	require.NoError(t, err)
	require.False(t, c.HasAlarm, "RegisterClass must see that the type has no Alarm method")
	require.Equal(t, "no-handler", e.mustInvoke(noAlarmClass, "x", "set", ""))
	require.EqualValues(t, 0, e.keyCount("alarm/"))
	require.EqualValues(t, 0, e.keyCount("due/"))
}

// --- Guarantee 1: never early ---

func TestAlarmNeverRunsBeforeItsTime(t *testing.T) {
	e := newAlarmEnv(t, nil)
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	// A stale index entry (one read before a commit moved the alarm) may
	// wake the object early; it must check the authoritative record.
	p, id := e.objectID("a")
	e.n().Schedule().RetryAt(p, probeClass, id, T.Add(-time.Millisecond))
	e.advanceTo(T.Add(-time.Millisecond))
	e.requireRunsStay(0, "one millisecond early")
	e.eventually(func() bool { return e.n().ScheduledAlarms() == 1 }, "the alarm waits in the heap")
	e.advance(time.Millisecond)
	runs := e.waitRuns(1)
	requireRun(t, runs[0], 0, T)
	require.False(t, runs[0].At.Before(T), "handler started at %s, before %s", runs[0].At, T)
}

func TestAlarmSubMillisecondTimeIsRoundedUp(t *testing.T) {
	e := newAlarmEnv(t, nil)
	T := e.now().Add(10 * time.Second)
	want := T.Add(500 * time.Microsecond)
	got, err := time.Parse(time.RFC3339Nano, e.set("a", want))
	require.NoError(t, err)
	require.False(t, got.Before(want), "GetAlarm reports %s, earlier than the %s asked for", got, want)
	rec := e.record("a")
	require.False(t, rec.Due.Before(want), "stored due %s is earlier than the %s asked for", rec.Due, want)
	// A new node knows the alarm only from etcd, which keeps milliseconds.
	e.restart()
	got, err = time.Parse(time.RFC3339Nano, e.getAlarm("a"))
	require.NoError(t, err)
	require.False(t, got.Before(want), "after a restart GetAlarm reports %s, earlier than %s", got, want)
	e.advanceTo(T)
	e.requireRunsStay(0, "half a millisecond early")
	e.advance(time.Millisecond)
	runs := e.waitRuns(1)
	require.False(t, runs[0].At.Before(want), "handler started at %s, before %s", runs[0].At, want)
	require.False(t, runs[0].Info.ScheduledTime.Before(want))
}

func TestAlarmInThePastFiresAtOnce(t *testing.T) {
	e := newAlarmEnv(t, nil)
	now := e.now()
	past := now.Add(-time.Hour)
	e.set("a", past)
	runs := e.waitRuns(1) // no clock advance
	requireRun(t, runs[0], 0, past)
	require.True(t, runs[0].At.Equal(now))
	e.waitNoRecord("a")

	// Exactly now counts as due too.
	e.set("b", now)
	runs = e.waitRuns(2)
	require.Equal(t, "b", runs[1].Name)
	requireRun(t, runs[1], 0, now)
}

// --- Guarantee 4: success ---

// commitLog records the ops of every commit the node makes.
type commitLog struct {
	mu      sync.Mutex
	commits [][]opSummary
}

type opSummary struct {
	put, del bool
	key      string
}

func (c *commitLog) hook(ops []clientv3.Op) error {
	s := make([]opSummary, len(ops))
	for i, op := range ops {
		s[i] = opSummary{put: op.IsPut(), del: op.IsDelete(), key: string(op.KeyBytes())}
	}
	c.mu.Lock()
	c.commits = append(c.commits, s)
	c.mu.Unlock()
	return nil
}

// withPut returns the commits holding a put of key.
func (c *commitLog) withPut(key string) [][]opSummary {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]opSummary
	for _, ops := range c.commits {
		for _, op := range ops {
			if op.put && op.key == key {
				out = append(out, ops)
				break
			}
		}
	}
	return out
}

func TestAlarmSuccessDeletesAlarmAtomicallyWithHandlerWrites(t *testing.T) {
	e := newAlarmEnv(t, nil)
	var log commitLog
	e.setCommitHook(log.hook)
	e.probe.setScript(func(ctx context.Context, st durable.State, _ alarmRun, _ int) error {
		return st.Storage().Put(ctx, "done", []byte("yes"))
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	e.waitNoRecord("a")

	require.Equal(t, "none", e.getAlarm("a"))
	require.EqualValues(t, 0, e.keyCount("alarm/"))
	require.EqualValues(t, 0, e.keyCount("due/"))
	require.Equal(t, "yes", e.read("a", "done"))

	// The handler's write and the alarm's deletion are one Txn.
	p, id := e.objectID("a")
	keys := e.n().Keys()
	commits := log.withPut(keys.DataPrefix(p, probeClass, id.String()) + "done")
	require.Len(t, commits, 1)
	var delAlarm, delDue bool
	for _, op := range commits[0] {
		delAlarm = delAlarm || (op.del && op.key == keys.Alarm(p, probeClass, id.String()))
		delDue = delDue || (op.del && op.key == keys.Due(p, T, probeClass, id.String()))
	}
	require.True(t, delAlarm && delDue, "the commit of the handler's write must delete the alarm and its index entry: %+v", commits[0])
	e.requireRunsStay(1, "a succeeded alarm ran again")
}

func TestAlarmSuccessWithRearmKeepsTheNewAlarm(t *testing.T) {
	e := newAlarmEnv(t, nil)
	e.probe.setScript(func(ctx context.Context, st durable.State, run alarmRun, n int) error {
		switch n {
		case 0, 2: // the first run and a retry re-arm and succeed
			return st.Storage().SetAlarm(ctx, run.At.Add(30*time.Second))
		case 1:
			return errors.New("boom")
		}
		return nil
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	next := T.Add(30 * time.Second)
	rec := e.waitRecord("a", func(r *alarmstore.Record) bool { return r != nil && r.Due.Equal(next) }, "re-armed")
	require.Equal(t, 0, rec.RetryCount)
	require.True(t, rec.Scheduled.Equal(next))
	requireTime(t, next, e.getAlarm("a"))
	require.EqualValues(t, 1, e.keyCount("due/"), "the old index entry must be gone")

	e.advanceTo(next.Add(-time.Millisecond))
	e.requireRunsStay(1, "before the re-armed time")
	e.advance(time.Millisecond)
	runs := e.waitRuns(2)
	requireRun(t, runs[1], 0, next)

	// Run 1 failed; its retry (RetryCount 1) re-arms: the new alarm starts
	// over at RetryCount 0.
	e.waitRetryRecord("a", 1)
	e.advance(2 * time.Second)
	runs = e.waitRuns(3)
	requireRun(t, runs[2], 1, next)
	next2 := runs[2].At.Add(30 * time.Second)
	rec = e.waitRecord("a", func(r *alarmstore.Record) bool { return r != nil && r.Due.Equal(next2) }, "re-armed by the retry")
	require.Equal(t, 0, rec.RetryCount)
	require.Empty(t, rec.LastError)
	e.advanceTo(next2)
	runs = e.waitRuns(4)
	requireRun(t, runs[3], 0, next2)
	e.waitNoRecord("a")
}

func TestAlarmGetAlarmInsideHandlerReportsNoneUnlessSet(t *testing.T) {
	e := newAlarmEnv(t, nil)
	e.probe.setScript(func(ctx context.Context, st durable.State, run alarmRun, n int) error {
		s := st.Storage()
		before, err := getAlarmString(ctx, s)
		if err != nil {
			return err
		}
		e.probe.event(fmt.Sprintf("run%d before=%s", n, before))
		switch n {
		case 0:
			if err := s.SetAlarm(ctx, run.At.Add(10*time.Second)); err != nil {
				return err
			}
			after, err := getAlarmString(ctx, s)
			if err != nil {
				return err
			}
			e.probe.event(fmt.Sprintf("run%d after=%s", n, after))
		case 1:
			return errors.New("fail so that run 2 is a retry")
		}
		return nil
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	e.waitRecord("a", func(r *alarmstore.Record) bool { return r != nil && r.Due.Equal(T.Add(10*time.Second)) }, "re-armed")
	e.advanceTo(T.Add(10 * time.Second))
	e.waitRuns(2)
	e.waitRetryRecord("a", 1)
	e.advance(2 * time.Second)
	runs := e.waitRuns(3)
	require.True(t, runs[2].Info.IsRetry)
	e.waitNoRecord("a")
	require.Equal(t, []string{
		"run0 before=none",
		"run0 after=" + fmtTime(T.Add(10*time.Second)),
		"run1 before=none",
		"run2 before=none",
	}, e.probe.eventList())
}

// --- Guarantee 5: failure and retries ---

func TestAlarmFailureRetriesWithExponentialBackoffAndStoredCount(t *testing.T) {
	e := newAlarmEnv(t, nil)
	const maxRetries = 6 // the rule; alarmstore.MaxRetries must agree
	require.Equal(t, maxRetries, alarmstore.MaxRetries)
	e.probe.setScript(func(_ context.Context, _ durable.State, _ alarmRun, n int) error {
		if n < maxRetries {
			return fmt.Errorf("boom %d", n)
		}
		return nil // the last retry succeeds
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	runs := e.waitRuns(1)
	requireRun(t, runs[0], 0, T)

	for retry, delay := range []time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 3: 8 * time.Second,
		4: 16 * time.Second, 5: 32 * time.Second, 6: 64 * time.Second} {
		if retry == 0 {
			continue
		}
		rec := e.waitRetryRecord("a", retry)
		failedAt := e.now() // the clock stands still while the handler runs
		require.True(t, rec.Due.Equal(failedAt.Add(delay)), "retry %d due %s, want %s after %s", retry, rec.Due, delay, failedAt)
		require.True(t, rec.Scheduled.Equal(T))
		require.Contains(t, rec.LastError, fmt.Sprintf("boom %d", retry-1))
		require.Equal(t, "a", rec.Name)
		if retry == 3 {
			// The count lives in etcd: a new node carries it on.
			e.restart()
			require.Equal(t, 3, e.record("a").RetryCount)
		}
		e.advanceTo(failedAt.Add(delay - time.Millisecond))
		e.requireRunsStay(retry, fmt.Sprintf("retry %d early", retry))
		e.advance(time.Millisecond)
		runs = e.waitRuns(retry + 1)
		requireRun(t, runs[retry], retry, T)
		require.False(t, runs[retry].At.Before(rec.Due))
	}
	e.waitNoRecord("a")
	require.Empty(t, e.deadLetters())
}

// TestAlarmMetricsCountRunsRetriesAndLateness: an alarm that fails twice
// and then succeeds counts two failed runs, two retries, one success and
// three lateness and handler-time observations; nothing is dead-lettered.
func TestAlarmMetricsCountRunsRetriesAndLateness(t *testing.T) {
	e := newAlarmEnv(t, nil)
	e.probe.setScript(func(_ context.Context, _ durable.State, _ alarmRun, n int) error {
		if n < 2 {
			return fmt.Errorf("boom %d", n)
		}
		return nil
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	for retry := 1; retry <= 2; retry++ {
		rec := e.waitRetryRecord("a", retry)
		e.advanceTo(rec.Due)
		e.waitRuns(retry + 1)
	}
	e.waitNoRecord("a")
	m := e.n().Config().Metrics
	require.Equal(t, 2.0, metrics.Value(m.AlarmRuns.WithLabelValues(probeClass, "failure")))
	require.Equal(t, 1.0, metrics.Value(m.AlarmRuns.WithLabelValues(probeClass, "success")))
	require.Equal(t, 2.0, metrics.Value(m.AlarmRetries.WithLabelValues(probeClass)))
	require.Equal(t, 3.0, metrics.Value(m.AlarmLateness))
	require.Equal(t, 3.0, metrics.Value(m.AlarmHandlerSeconds))
	require.Zero(t, metrics.Value(m.AlarmDeadLetters))
	require.Zero(t, metrics.Value(m.AlarmRuns.WithLabelValues(probeClass, "system_failure")))
}

// TestAlarmFailureAfterAFailedBlockConcurrencyWhileCounts: a handler whose
// BlockConcurrencyWhile failed, and which then fails, is the handler's
// failure like any other: the retry is counted and stored with its error.
// (Before: the object was reset before the outcome was staged, its commit
// failed as a reset, and the alarm was retried as a system failure forever
// without counting.)
func TestAlarmFailureAfterAFailedBlockConcurrencyWhileCounts(t *testing.T) {
	e := newAlarmEnv(t, nil)
	e.probe.setScript(func(ctx context.Context, st durable.State, _ alarmRun, n int) error {
		if n > 0 {
			return nil
		}
		_ = st.BlockConcurrencyWhile(ctx, func(context.Context) error { return errors.New("bcw failed") })
		return errors.New("mine")
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	rec := e.waitRetryRecord("a", 1)
	require.Contains(t, rec.LastError, "mine")
	require.True(t, rec.Due.Equal(T.Add(2*time.Second)), "retry due %s", rec.Due)
	e.advanceTo(rec.Due)
	runs := e.waitRuns(2)
	requireRun(t, runs[1], 1, T)
	e.waitNoRecord("a")
}

func TestAlarmRetryJitterAddsAtMostAQuarter(t *testing.T) {
	e := newAlarmEnv(t, func(cfg *node.Config) { cfg.Jitter = func() float64 { return 0.999 } })
	const failures = 3
	e.probe.setScript(func(_ context.Context, _ durable.State, _ alarmRun, n int) error {
		if n < failures {
			return fmt.Errorf("boom %d", n)
		}
		return nil
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	for retry := 1; retry <= failures; retry++ {
		delay := 2 * time.Second << (retry - 1)
		rec := e.waitRetryRecord("a", retry)
		failedAt := e.now()
		got := rec.Due.Sub(failedAt)
		require.GreaterOrEqual(t, got, delay, "retry %d: jitter must never shorten the backoff", retry)
		require.LessOrEqual(t, got, delay+delay/4, "retry %d: jitter adds at most 25%%", retry)
		require.Greater(t, got, delay+delay/5, "retry %d: jitter 0.999 was not applied", retry)
		e.advanceTo(rec.Due.Add(-time.Millisecond))
		e.requireRunsStay(retry, "before the jittered retry time")
		e.advanceTo(failedAt.Add(delay + delay/4))
		runs := e.waitRuns(retry + 1)
		requireRun(t, runs[retry], retry, T)
		require.False(t, runs[retry].At.Before(failedAt.Add(delay)))
	}
	e.waitNoRecord("a")
}

func TestAlarmAbandonedAfterSixRetriesIntoDeadLetters(t *testing.T) {
	e := newAlarmEnv(t, nil)
	e.probe.setScript(failAlways)
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	for retry := 1; retry <= 6; retry++ {
		rec := e.waitRetryRecord("a", retry)
		e.advanceTo(rec.Due)
		runs := e.waitRuns(retry + 1)
		requireRun(t, runs[retry], retry, T)
	}
	// The 7th run (RetryCount 6) failed: abandoned.
	e.waitNoRecord("a")
	require.EqualValues(t, 0, e.keyCount("due/"))
	require.Equal(t, "none", e.getAlarm("a"))
	dead := e.deadLetters()
	require.Len(t, dead, 1)
	_, id := e.objectID("a")
	require.Equal(t, id, dead[0].ID)
	require.Equal(t, "a", dead[0].Name)
	require.Equal(t, 6, dead[0].RetryCount)
	require.True(t, dead[0].Scheduled.Equal(T))
	require.Contains(t, dead[0].LastError, "boom 6")
	require.Equal(t, 1.0, metrics.Value(e.n().Config().Metrics.AlarmDeadLetters.WithLabelValues(probeClass)))
	for i := 0; i < 8; i++ { // 2 minutes, past any further backoff
		e.advance(15 * time.Second)
	}
	e.requireRunsStay(7, "an abandoned alarm ran again")

	// Requeued, it runs again at once from retry 0, and its dead letter
	// is gone; a second requeue finds none.
	e.probe.setScript(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.n().RequeueDeadLetter(ctx, probeClass, node.Ref{Name: "a"}, time.Time{}))
	require.Empty(t, e.deadLetters(), "the dead letter stays")
	runs := e.waitRuns(8)
	require.Equal(t, 0, runs[7].Info.RetryCount)
	e.waitNoRecord("a")
	err := e.n().RequeueDeadLetter(ctx, probeClass, node.Ref{Name: "a"}, time.Time{})
	require.ErrorIs(t, err, durable.ErrInvalidArgument, "requeued twice")
}

func TestAlarmFailureDiscardsHandlerWrites(t *testing.T) {
	e := newAlarmEnv(t, nil)
	e.probe.setScript(func(ctx context.Context, st durable.State, _ alarmRun, n int) error {
		s := st.Storage()
		v, _, err := s.Get(ctx, "k")
		if err != nil {
			return err
		}
		e.probe.event(fmt.Sprintf("run%d saw k=%s", n, v))
		if n > 0 {
			return s.Put(ctx, "k2", []byte("from the retry"))
		}
		if err := s.Put(ctx, "k", []byte("from the failed run")); err != nil {
			return err
		}
		if _, err := s.Delete(ctx, "keep"); err != nil {
			return err
		}
		if v, _, _ := s.Get(ctx, "k"); string(v) != "from the failed run" {
			return fmt.Errorf("own write not visible: %q", v)
		}
		return errors.New("boom")
	})
	e.mustInvoke(probeClass, "a", "put", "k=orig")
	e.mustInvoke(probeClass, "a", "put", "keep=1")
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	e.waitRetryRecord("a", 1)
	require.Equal(t, "orig", e.read("a", "k"))
	require.Equal(t, "1", e.read("a", "keep"))
	e.advance(2 * time.Second)
	e.waitRuns(2)
	e.waitNoRecord("a")
	require.Equal(t, []string{"run0 saw k=orig", "run1 saw k=orig"}, e.probe.eventList())
	require.Equal(t, "orig", e.read("a", "k"))
	require.Equal(t, "1", e.read("a", "keep"))
	require.Equal(t, "from the retry", e.read("a", "k2"))
}

// --- Guarantee 6: set or delete, then fail ---

func TestAlarmSetThenFailKeepsNewAlarmWithoutRetry(t *testing.T) {
	e := newAlarmEnv(t, nil)
	T := e.now().Add(10 * time.Second)
	next := T.Add(time.Minute)
	e.probe.setScript(func(ctx context.Context, st durable.State, _ alarmRun, n int) error {
		if n > 0 {
			return nil
		}
		if err := st.Storage().SetAlarm(ctx, next); err != nil {
			return err
		}
		if err := st.Storage().Put(ctx, "x", []byte("1")); err != nil {
			return err
		}
		return errors.New("boom")
	})
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	rec := e.waitRecord("a", func(r *alarmstore.Record) bool { return r != nil && r.Due.Equal(next) }, "the new alarm")
	require.Equal(t, 0, rec.RetryCount)
	require.True(t, rec.Scheduled.Equal(next))
	require.EqualValues(t, 1, e.keyCount("due/"))
	require.Equal(t, "<none>", e.read("a", "x"), "the failed run's storage write is discarded")

	e.advanceTo(T.Add(2 * time.Second)) // when a retry would run
	e.requireRunsStay(1, "the failed alarm was retried")
	e.advanceTo(next.Add(-time.Millisecond))
	e.requireRunsStay(1, "before the new alarm's time")
	e.advance(time.Millisecond)
	runs := e.waitRuns(2)
	requireRun(t, runs[1], 0, next)
	e.waitNoRecord("a")
	require.Empty(t, e.deadLetters())
}

func TestAlarmDeleteThenFailIsNotRetried(t *testing.T) {
	e := newAlarmEnv(t, nil)
	e.probe.setScript(func(ctx context.Context, st durable.State, _ alarmRun, _ int) error {
		if err := st.Storage().DeleteAlarm(ctx); err != nil {
			return err
		}
		return errors.New("boom")
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	e.waitNoRecord("a")
	require.EqualValues(t, 0, e.keyCount("due/"))
	require.Equal(t, "none", e.getAlarm("a"))
	e.advanceTo(T.Add(2 * time.Second))
	e.requireRunsStay(1, "a deleted-then-failed alarm was retried")
	for i := 0; i < 8; i++ {
		e.advance(15 * time.Second)
	}
	e.requireRunsStay(1, "a deleted-then-failed alarm was retried")
	require.Empty(t, e.deadLetters())
}

func TestAlarmPanicCountsAsFailure(t *testing.T) {
	e := newAlarmEnv(t, nil)
	e.probe.setScript(func(_ context.Context, _ durable.State, _ alarmRun, n int) error {
		if n == 0 {
			panic("kaboom")
		}
		return nil
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	rec := e.waitRetryRecord("a", 1)
	require.Contains(t, rec.LastError, "kaboom")
	require.True(t, rec.Due.Equal(T.Add(2*time.Second)))
	e.advanceTo(rec.Due)
	runs := e.waitRuns(2)
	requireRun(t, runs[1], 1, T)
	e.waitNoRecord("a")
}

func TestAlarmHandlerPastFifteenMinutesIsAbandonedAndRetried(t *testing.T) {
	e := newAlarmEnv(t, nil)
	require.Equal(t, 15*time.Minute, e.cfg.AlarmHandlerTimeout)
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // never leak the stuck goroutine
	type stuckResult struct{ ctxErr, putErr, setErr error }
	stuck := make(chan stuckResult, 1)
	e.probe.setScript(func(ctx context.Context, st durable.State, run alarmRun, n int) error {
		if n > 0 {
			return nil
		}
		<-release // ignores ctx
		r := stuckResult{ctxErr: ctx.Err()}
		r.putErr = st.Storage().Put(ctx, "late", []byte("1"))
		r.setErr = st.Storage().SetAlarm(ctx, run.At.Add(time.Hour))
		stuck <- r
		return nil
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	e.waitHandlerLimitArmed()

	e.advance(15*time.Minute - time.Millisecond)
	e.requireRunsStay(1, "before the limit")
	require.Equal(t, 0, e.record("a").RetryCount, "abandoned before 15 minutes")
	e.advance(time.Millisecond)
	rec := e.waitRetryRecord("a", 1)
	require.True(t, rec.Due.Equal(T.Add(15*time.Minute+2*time.Second)), "retry due %s", rec.Due)
	require.NotEmpty(t, rec.LastError)
	e.advanceTo(rec.Due)
	runs := e.waitRuns(2)
	requireRun(t, runs[1], 1, T)
	e.waitNoRecord("a")

	// Now let the stuck handler go: its context was cancelled and its storage
	// refuses it.
	releaseOnce.Do(func() { close(release) })
	var r stuckResult
	select {
	case r = <-stuck:
	case <-time.After(10 * time.Second):
		t.Fatal("stuck handler did not finish")
	}
	require.Error(t, r.ctxErr)
	require.Error(t, r.putErr)
	require.Error(t, r.setErr)
	require.Equal(t, "<none>", e.read("a", "late"))
	require.Nil(t, e.record("a"))
}

// --- Guarantee 7: failures of the system ---

func TestAlarmSystemFailureIsRetriedWithoutCounting(t *testing.T) {
	e := newAlarmEnv(t, nil)
	require.Equal(t, time.Second, e.cfg.SystemRetryDelay)
	const injected = 2
	var failed atomic.Int32
	p, id := e.objectID("a")
	alarmKey := e.n().Keys().Alarm(p, probeClass, id.String())
	e.setCommitHook(func(ops []clientv3.Op) error {
		for _, op := range ops {
			// The commit that follows a successful run deletes the alarm.
			if op.IsDelete() && string(op.KeyBytes()) == alarmKey && failed.Load() < injected {
				failed.Add(1)
				return errors.New("injected commit failure")
			}
		}
		return nil
	})
	e.probe.setScript(func(ctx context.Context, st durable.State, _ alarmRun, n int) error {
		return st.Storage().Put(ctx, "run", []byte(strconv.Itoa(n)))
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	for i := 1; i <= injected; i++ {
		runs := e.waitRuns(i)
		requireRun(t, runs[i-1], 0, T)
		e.eventually(func() bool { return failed.Load() == int32(i) }, "commit failure %d injected", i)
		// The look again is scheduled relative to the clock when the
		// failure is handled: wait for it before moving the clock.
		e.eventually(func() bool { return e.n().ScheduledAlarms() == 1 }, "system retry scheduled")
		rec := e.record("a")
		require.Equal(t, 0, rec.RetryCount, "a system failure must not count")
		require.True(t, rec.Due.Equal(T))
		require.Empty(t, rec.LastError)
		// System retries back off: 1 s, then 2 s (no jitter here).
		delay := e.cfg.SystemRetryDelay << (i - 1)
		e.advance(delay - time.Millisecond)
		e.requireRunsStay(i, "before the system retry delay")
		e.advance(time.Millisecond)
	}
	runs := e.waitRuns(injected + 1)
	requireRun(t, runs[injected], 0, T)
	e.waitNoRecord("a")
	require.EqualValues(t, 0, e.keyCount("due/"))
	require.Equal(t, strconv.Itoa(injected), e.read("a", "run"), "only the committed run's write is stored")
	require.Empty(t, e.deadLetters())
}

// --- Guarantee 3: one at a time ---

func TestAlarmRunsOneAtATimeWithInvocations(t *testing.T) {
	e := newAlarmEnv(t, nil)
	alarmGate := make(chan struct{})
	invokeGate := make(chan struct{})
	var once1, once2 sync.Once
	open1 := func() { once1.Do(func() { close(alarmGate) }) }
	open2 := func() { once2.Do(func() { close(invokeGate) }) }
	t.Cleanup(open1)
	t.Cleanup(open2)
	e.probe.mu.Lock()
	e.probe.invokeGate = invokeGate
	e.probe.mu.Unlock()
	e.probe.setScript(func(_ context.Context, _ durable.State, _ alarmRun, n int) error {
		e.probe.event(fmt.Sprintf("alarm%d-start", n))
		if n == 0 {
			<-alarmGate
		}
		e.probe.event(fmt.Sprintf("alarm%d-end", n))
		return nil
	})

	// An invocation sent while the handler runs waits for it.
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.eventually(func() bool { return e.probe.hasEvent("alarm0-start") }, "alarm started")
	invoked := make(chan error, 1)
	go func() {
		_, err := e.invoke(probeClass, "a", "mark", "")
		invoked <- err
	}()
	e.eventually(func() bool {
		active, calls, _ := e.mailbox("a")
		return active && calls == 1
	}, "invocation queued behind the alarm")
	require.Equal(t, []string{"alarm0-start"}, e.probe.eventList())
	open1()
	require.NoError(t, <-invoked)
	require.Equal(t, []string{"alarm0-start", "alarm0-end", "invoke"}, e.probe.eventList())
	e.waitNoRecord("a")

	// An alarm that comes due while an invocation runs waits for it.
	T2 := e.now().Add(10 * time.Second)
	e.set("a", T2)
	go func() {
		_, err := e.invoke(probeClass, "a", "block", "")
		invoked <- err
	}()
	e.eventually(func() bool { return e.probe.hasEvent("invoke-start") }, "invocation started")
	e.advanceTo(T2)
	e.eventually(func() bool {
		active, _, alarm := e.mailbox("a")
		return active && alarm
	}, "alarm delivered to the busy object")
	e.requireRunsStay(1, "the alarm ran during an invocation")
	open2()
	require.NoError(t, <-invoked)
	e.waitRuns(2)
	e.eventually(func() bool { return e.probe.hasEvent("alarm1-end") }, "second alarm finished")
	require.Equal(t, []string{
		"alarm0-start", "alarm0-end", "invoke",
		"invoke-start", "invoke-end", "alarm1-start", "alarm1-end",
	}, e.probe.eventList())
}

// --- Guarantee 2: at least once across restarts ---

func TestAlarmPendingAlarmsFireAfterRestart(t *testing.T) {
	e := newAlarmEnv(t, nil)
	e.probe.setScript(func(ctx context.Context, st durable.State, run alarmRun, _ int) error {
		v, _, err := st.Storage().Get(ctx, "k")
		if err != nil {
			return err
		}
		e.probe.event(run.Name + "=" + string(v))
		return nil
	})
	t0 := e.now()
	overdue, future := t0.Add(10*time.Second), t0.Add(5*time.Minute)
	e.mustInvoke(probeClass, "a", "put", "k=va")
	e.mustInvoke(probeClass, "b", "put", "k=vb")
	e.set("a", overdue)
	e.set("b", future)

	e.stop()
	e.advance(time.Minute) // a is overdue while no node runs
	e.start()
	runs := e.waitRuns(1) // at once, without moving the clock
	require.Equal(t, "a", runs[0].Name)
	requireRun(t, runs[0], 0, overdue)
	require.True(t, runs[0].At.Equal(t0.Add(time.Minute)))
	e.waitNoRecord("a")

	e.advanceTo(future.Add(-time.Millisecond))
	e.requireRunsStay(1, "the future alarm ran early after the restart")
	e.advance(time.Millisecond)
	runs = e.waitRuns(2)
	require.Equal(t, "b", runs[1].Name)
	requireRun(t, runs[1], 0, future)
	e.waitNoRecord("b")
	require.Equal(t, []string{"a=va", "b=vb"}, e.probe.eventList())
	require.Equal(t, "va", e.read("a", "k"))
	require.Equal(t, "vb", e.read("b", "k"))
}

func TestAlarmBeyondLookAheadWindowFiresOnTime(t *testing.T) {
	const window = 60 * time.Second
	e := newAlarmEnv(t, func(cfg *node.Config) { cfg.AlarmWindow = window })
	T := e.now().Add(10 * time.Minute)
	e.set("a", T)
	require.Zero(t, e.n().ScheduledAlarms(), "SetAlarm beyond the window must not enter the heap")
	e.restart()
	windowsAt := func(now time.Time) bool {
		loaded := e.n().Schedule().Windows()
		if len(loaded) != e.n().PartitionCount() {
			return false
		}
		for _, until := range loaded {
			if until.Before(now.Add(window)) {
				return false
			}
		}
		return true
	}
	e.eventually(func() bool { return windowsAt(e.now()) }, "windows loaded")
	require.Zero(t, e.n().ScheduledAlarms(), "an alarm 10 minutes ahead must not be held in memory")

	// The window loop extends every window/4.
	for e.now().Add(window / 4).Before(T) {
		e.advance(window / 4)
		now := e.now()
		e.eventually(func() bool { return windowsAt(now) }, "windows extended at %s", now)
		if now.Add(window).Before(T) {
			require.Zero(t, e.n().ScheduledAlarms(), "held in memory before entering the window")
		} else {
			e.eventually(func() bool { return e.n().ScheduledAlarms() == 1 }, "alarm loaded once inside the window")
		}
		require.Zero(t, e.probe.count())
	}
	e.advanceTo(T.Add(-time.Millisecond))
	e.requireRunsStay(0, "one millisecond early")
	e.advance(time.Millisecond)
	runs := e.waitRuns(1)
	requireRun(t, runs[0], 0, T)
	require.False(t, runs[0].At.Before(T))
}

func TestAlarmManyObjectsDueAtOnceEachFireOnce(t *testing.T) {
	const objects = 200
	e := newAlarmEnv(t, nil)
	T := e.now().Add(30 * time.Second)
	names := make(chan string)
	var wg sync.WaitGroup
	errs := make(chan error, objects)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				if _, err := e.invoke(probeClass, name, "set", fmtTime(T)); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
				}
			}
		}()
	}
	for i := 0; i < objects; i++ {
		names <- fmt.Sprintf("obj-%03d", i)
	}
	close(names)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, objects, e.keyCount("alarm/"))
	e.eventually(func() bool { return e.n().ScheduledAlarms() == objects }, "all alarms in the heap")

	e.advanceTo(T.Add(-time.Millisecond))
	e.requireRunsStay(0, "early")
	e.advance(time.Millisecond)
	e.waitRuns(objects)
	e.eventually(func() bool { return e.keyCount("alarm/") == 0 }, "every alarm deleted")
	require.EqualValues(t, 0, e.keyCount("due/"))
	for i := 0; i < 8; i++ {
		e.advance(15 * time.Second)
	}
	e.requireRunsStay(objects, "an alarm ran twice")
	seen := map[string]bool{}
	for _, r := range e.probe.runList() {
		require.False(t, seen[r.Name], "%s ran twice", r.Name)
		seen[r.Name] = true
		requireRun(t, r, 0, T)
		require.False(t, r.At.Before(T))
	}
	require.Len(t, seen, objects)
}

// A handler that reacts to the cancellation of its context by writing (e.g.
// saving partial progress) must not get those writes, or an alarm change,
// committed once its time limit abandoned it: the run failed.
func TestAlarmWritesAfterTheTimeLimitAreDiscarded(t *testing.T) {
	e := newAlarmEnv(t, nil)
	type lateResult struct{ putErr, setErr error }
	late := make(chan lateResult, 1)
	e.probe.setScript(func(ctx context.Context, st durable.State, run alarmRun, n int) error {
		if n > 0 {
			return nil
		}
		<-ctx.Done()
		var r lateResult
		r.putErr = st.Storage().Put(context.Background(), "late", []byte("1"))
		r.setErr = st.Storage().SetAlarm(context.Background(), run.At.Add(time.Hour))
		late <- r
		return ctx.Err()
	})
	T := e.now().Add(10 * time.Second)
	e.set("a", T)
	e.advanceTo(T)
	e.waitRuns(1)
	e.waitHandlerLimitArmed()
	e.advance(e.cfg.AlarmHandlerTimeout)
	var r lateResult
	select {
	case r = <-late:
	case <-time.After(10 * time.Second):
		t.Fatal("handler did not see its context cancelled")
	}
	rec := e.waitRetryRecord("a", 1)
	require.True(t, rec.Due.Equal(T.Add(e.cfg.AlarmHandlerTimeout+2*time.Second)), "retry due %s", rec.Due)
	require.Error(t, r.putErr, "a write after the time limit was accepted")
	require.Error(t, r.setErr, "SetAlarm after the time limit was accepted")
	e.advanceTo(rec.Due)
	runs := e.waitRuns(2)
	requireRun(t, runs[1], 1, T)
	e.waitNoRecord("a")
	require.Equal(t, "<none>", e.read("a", "late"))
}

// TestAlarmSetByACommitOfUnknownOutcomeFires: the commit of SetAlarm lands
// in etcd but the node is told it failed (COMMIT_UNKNOWN). The alarm is in
// etcd but was never scheduled; the node looks at it again and it fires on
// time.
func TestAlarmSetByACommitOfUnknownOutcomeFires(t *testing.T) {
	e := newAlarmEnv(t, nil)
	p, id := e.objectID("a")
	alarmKey := e.n().Keys().Alarm(p, probeClass, id.String())
	var lied atomic.Bool
	e.setCommitHook(func(ops []clientv3.Op) error {
		for _, op := range ops {
			if op.IsPut() && string(op.KeyBytes()) == alarmKey && lied.CompareAndSwap(false, true) {
				// Apply the commit, then report a failure, as a connection
				// cut after etcd applied the Txn would.
				_, err := e.Client.Txn(context.Background()).Then(ops...).Commit()
				require.NoError(t, err)
				return errors.New("injected: connection lost after the commit")
			}
		}
		return nil
	})
	T := e.now().Add(10 * time.Second)
	_, err := e.invoke(probeClass, "a", "set", fmtTime(T))
	require.ErrorIs(t, err, durable.ErrCommitUnknown)
	require.NotNil(t, e.record("a"), "the alarm did land")
	e.eventually(func() bool { return e.n().ScheduledAlarms() == 1 }, "the alarm is looked at again")
	e.advance(e.cfg.SystemRetryDelay)
	e.eventually(func() bool { return e.n().ScheduledAlarms() == 1 }, "rescheduled at its time")
	e.advanceTo(T.Add(-time.Millisecond))
	e.requireRunsStay(0, "before its time")
	e.advance(time.Millisecond)
	requireRun(t, e.waitRuns(1)[0], 0, T)
	e.waitNoRecord("a")
}

// TestAlarmOfAClassNotServedWaitsForANodeThatServesIt: an alarm stored for
// a class this node does not serve (its partition came here from a node of
// another program) is not parked silently: it is counted, logged and
// looked at again every 30 s, and stays stored for a node that serves it.
func TestAlarmOfAClassNotServedWaitsForANodeThatServesIt(t *testing.T) {
	e := newAlarmEnv(t, nil)
	const class = "Elsewhere"
	id := durable.IDFromName(class, "x")
	p := id.Partition(e.n().PartitionCount())
	due := e.now().Add(time.Second)
	store := alarmstore.New(e.Client, e.n().Keys())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.Client.Txn(ctx).Then(store.PutOps(nil, alarmstore.Record{Class: class, ID: id, Partition: p, Due: due, Scheduled: due})...).Commit()
	require.NoError(t, err)
	e.restart() // the claim loads it into the window
	unserved := func() float64 { return metrics.Value(e.n().Config().Metrics.AlarmUnserved.WithLabelValues(class)) }
	e.advanceTo(due)
	e.eventually(func() bool { return unserved() == 1 }, "the unserved alarm counted")
	e.advance(29 * time.Second)
	e.WaitQuiet()
	require.Equal(t, 1.0, unserved(), "looked at again before 30 s")
	e.advance(time.Second)
	e.eventually(func() bool { return unserved() == 2 }, "looked at again after 30 s")
	rec, err := store.Get(ctx, p, class, id)
	require.NoError(t, err)
	require.NotNil(t, rec, "the alarm stays stored for a node that serves its class")
}
