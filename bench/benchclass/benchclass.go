// Package benchclass holds the classes `durable bench` measures alarms
// with, apart from the bench so that a node can register them (`durable
// agent`, `durable dev`) without linking the benchmark.
package benchclass

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
)

// AlarmClass is the class the alarm and failover scenarios arm: method
// "arm" (payload: the due time in Unix milliseconds) sets the object's
// alarm; its Alarm handler reports the run to a FireLog, if the nodes run in
// the bench's process (an embedded cluster), and otherwise stores it under
// key "fired", where method "result" reads it (a given cluster, whose nodes
// register the class with Register(reg, nil)); "disarm" deletes the alarm.
const AlarmClass = "BenchAlarm"

// Fire is one run of a BenchAlarm alarm.
type Fire struct {
	Scheduled time.Time `json:"scheduled"`
	Start     time.Time `json:"start"`
	Node      string    `json:"node"`
	Retry     int       `json:"retry"`
}

// FireLog collects the alarm runs of the objects a scenario expects, in
// memory; the handler's cost is a map lookup under a lock.
type FireLog struct {
	mu    sync.Mutex
	idx   map[durable.ID]int
	first []Fire // by expected index; zero Start: not fired yet
	runs  []int
	fired int
	extra int // runs of objects nobody expects
}

// Process receives the runs of BenchAlarm handlers in this process.
var Process = &FireLog{idx: map[durable.ID]int{}}

// Expect starts a new measurement of the objects named names: their runs
// are recorded from now on, earlier records are dropped.
func (l *FireLog) Expect(names []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.idx = make(map[durable.ID]int, len(names))
	for i, n := range names {
		l.idx[durable.IDFromName(AlarmClass, n)] = i
	}
	l.first = make([]Fire, len(names))
	l.runs = make([]int, len(names))
	l.fired, l.extra = 0, 0
}

func (l *FireLog) record(id durable.ID, f Fire) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.idx[id]
	if !ok {
		l.extra++
		return
	}
	if l.runs[i] == 0 {
		l.first[i] = f
		l.fired++
	}
	l.runs[i]++
}

// Count returns how many expected objects have fired.
func (l *FireLog) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fired
}

// Snapshot returns the first run of each expected object (zero Start: not
// fired) and the number of runs beyond the first.
func (l *FireLog) Snapshot() ([]Fire, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	dups := 0
	for _, r := range l.runs {
		dups += max(r-1, 0)
	}
	return append([]Fire(nil), l.first...), dups
}

type alarmObject struct {
	st    durable.State
	log   *FireLog // nil: store runs in storage
	clock func() time.Time
}

// Register adds AlarmClass and SoakClass to reg. AlarmClass's runs go to
// log; with a nil log (nodes the bench measures as a given cluster:
// `durable agent`, `durable dev`) they are stored in the objects, where the
// bench reads them back. SoakClass's runs go to Soaks only when log is
// Process (the bench's own, embedded nodes).
func Register(reg *node.Registry, log *FireLog) error {
	if err := node.RegisterClass(reg, AlarmClass, func(_ context.Context, st durable.State) (*alarmObject, error) {
		return &alarmObject{st: st, log: log, clock: time.Now}, nil
	}); err != nil {
		return err
	}
	var sink *Sink
	if log == Process {
		sink = Soaks
	}
	return node.RegisterClass(reg, SoakClass, func(_ context.Context, st durable.State) (*soakObject, error) {
		return &soakObject{st: st, sink: sink, clock: time.Now}, nil
	})
}

func (o *alarmObject) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	switch method {
	case "arm":
		ms, err := strconv.ParseInt(string(payload), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("arm: payload %q is not a time in Unix milliseconds", payload)
		}
		return nil, o.st.Storage().SetAlarm(ctx, time.UnixMilli(ms))
	case "disarm":
		return nil, o.st.Storage().DeleteAlarm(ctx)
	case "result":
		v, _, err := o.st.Storage().Get(ctx, "fired")
		return v, err
	default:
		return nil, fmt.Errorf("unknown method %q (want arm, disarm or result)", method)
	}
}

func (o *alarmObject) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	f := Fire{Scheduled: info.ScheduledTime, Start: o.clock(), Retry: info.RetryCount}
	if ei, ok := node.EventInfoFrom(ctx); ok {
		f.Node = ei.Node
	}
	if o.log != nil {
		o.log.record(o.st.ID(), f)
		return nil
	}
	b, _ := json.Marshal(f)
	return o.st.Storage().Put(ctx, "fired", b)
}

// SoakClass is the class the soak scenario arms: method "soak" (payload: a
// Plan in JSON) stores the plan and sets the object's first alarm; its
// Alarm handler reports the run to a Sink and sets the next alarm, one
// period after the run's scheduled time, as long as that is before the
// plan's end. An object thus fires every period for as long as the soak
// lasts, without a call from the bench.
const SoakClass = "BenchSoak"

// Plan is a soak object's schedule: alarms at First, First+Period, … up to
// (not including) End, all in whole milliseconds.
type Plan struct {
	FirstMS  int64 `json:"first_ms"`
	PeriodMS int64 `json:"period_ms"`
	EndMS    int64 `json:"end_ms"`
}

// planKey holds the plan in the object's storage, read back by an
// activation that does not have it in memory (an object evicted between
// two alarms).
const planKey = "plan"

// Sink receives the runs of SoakClass handlers; the handler's cost is an
// atomic load and whatever the function set does.
type Sink struct {
	fn atomic.Pointer[func(durable.ID, Fire)]
}

// Soaks receives the runs of SoakClass handlers in this process.
var Soaks = &Sink{}

// Set makes fn receive every run from now on (nil: none); fn must be safe
// for concurrent use.
func (s *Sink) Set(fn func(durable.ID, Fire)) {
	if fn == nil {
		s.fn.Store(nil)
		return
	}
	s.fn.Store(&fn)
}

func (s *Sink) record(id durable.ID, f Fire) {
	if s == nil {
		return
	}
	if fn := s.fn.Load(); fn != nil {
		(*fn)(id, f)
	}
}

type soakObject struct {
	st    durable.State
	sink  *Sink // nil: runs are not reported
	clock func() time.Time
	plan  *Plan // nil until armed, or read back
}

func (o *soakObject) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	if method != "soak" {
		return nil, fmt.Errorf("unknown method %q (want soak)", method)
	}
	var p Plan
	if err := json.Unmarshal(payload, &p); err != nil || p.PeriodMS <= 0 {
		return nil, fmt.Errorf("soak: payload %q is not a plan with a positive period_ms", payload)
	}
	if err := o.st.Storage().Put(ctx, planKey, payload); err != nil {
		return nil, err
	}
	o.plan = &p
	return nil, o.st.Storage().SetAlarm(ctx, time.UnixMilli(p.FirstMS))
}

func (o *soakObject) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	f := Fire{Scheduled: info.ScheduledTime, Start: o.clock(), Retry: info.RetryCount}
	if ei, ok := node.EventInfoFrom(ctx); ok {
		f.Node = ei.Node
	}
	o.sink.record(o.st.ID(), f)
	if o.plan == nil {
		b, ok, err := o.st.Storage().Get(ctx, planKey)
		if err != nil {
			return err
		}
		if !ok {
			return nil // never armed by the soak: nothing to repeat
		}
		var p Plan
		if err := json.Unmarshal(b, &p); err != nil {
			return fmt.Errorf("soak: stored plan %q: %w", b, err)
		}
		o.plan = &p
	}
	next := info.ScheduledTime.UnixMilli() + o.plan.PeriodMS
	if next >= o.plan.EndMS {
		return nil
	}
	return o.st.Storage().SetAlarm(ctx, time.UnixMilli(next))
}
