// Package chaos proves under faults that durable loses nothing: a workload
// sets alarms at known times and runs counter operations on Witness objects
// while faults are injected into real processes (or containers); a checker
// then reads what every event reported and what every client saw, and
// proves — or refutes — that no acknowledged alarm was lost, none fired
// early, no object ran twice at once, and the counters are linearizable.
package chaos

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/durable-run/durable/examples"
)

// Outcome is what a client learned of an operation.
type Outcome int

const (
	// OK: the operation took effect and returned its output.
	OK Outcome = iota
	// Failed: the operation certainly did not take effect (the server said
	// so: a retryable refusal, a bad request).
	Failed
	// Unknown: it may or may not have taken effect (deadline, commit
	// outcome unknown, connection lost mid-call).
	Unknown
)

func (o Outcome) String() string { return [...]string{"ok", "failed", "unknown"}[o] }

// AlarmSet is one alarm the workload asked for.
type AlarmSet struct {
	Object string
	Due    time.Time
	Flaky  int     // the handler fails on purpose this many times first
	Result Outcome // OK means acknowledged: the alarm must fire
	Call   time.Time
	Return time.Time
}

// Op is one counter operation of the workload: "add" with Arg, or "read".
type Op struct {
	Object string
	Kind   string
	Arg    int64
	Out    int64 // the value returned, when Result is OK
	Result Outcome
	Call   time.Time
	Return time.Time
}

// Fault is one injected fault and when it was active.
type Fault struct {
	Name        string // e.g. "kill-node", "kill-leader", "pause-node"
	Target      string
	Start, Heal time.Time
	// Frozen is the id of the node the fault froze (SIGSTOP, docker pause)
	// from Start to Thawed: it executed nothing meanwhile. Thawed is taken
	// before the resume is sent (the node may run as soon as it is), Heal
	// once the resume returned.
	Frozen string    `json:",omitempty"`
	Thawed time.Time `json:",omitzero"`
}

// History is everything a chaos run recorded.
type History struct {
	Alarms []AlarmSet
	Ops    []Op
	Events []examples.WitnessEvent // what the objects reported
	Faults []Fault
}

// Violation is one broken guarantee.
type Violation struct {
	Kind   string // "lost-alarm", "early-alarm", "overlap", "not-linearizable", "unknown-alarm"
	Object string
	Detail string
}

func (v Violation) String() string { return fmt.Sprintf("%s %s: %s", v.Kind, v.Object, v.Detail) }

// Lateness summarises how late first attempts of alarms fired.
type Lateness struct {
	N                  int
	P50, P99, Max      time.Duration
	WorstObject        string
	WorstDue, WorstRan time.Time
}

// Report is the checker's verdict with the figures of the run.
type Report struct {
	Violations []Violation

	AlarmsAcked         int
	AlarmsFired         int // distinct acknowledged alarms that succeeded
	DuplicateRuns       int // successful runs of an alarm beyond its first
	FailedOnPurposeRuns int
	Ops, OpsUnknown     int

	Calm, DuringFaults Lateness
	// Failover is, per fault name, the worst lateness of the alarms due
	// while that fault was active.
	Failover map[string]time.Duration
	// SlowestCall is, per fault name, the longest a successful counter call
	// that began while that fault was in effect took (retries and
	// forwards included): how long a caller waits through the fault.
	// CalmCall is the same outside faults.
	SlowestCall map[string]time.Duration
	CalmCall    time.Duration
}

// OK reports whether no guarantee was broken.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// Check examines h. settle is how long after a fault healed alarm lateness
// still counts as "during faults".
func Check(h History, settle time.Duration) Report {
	r := Report{Failover: map[string]time.Duration{}, SlowestCall: map[string]time.Duration{}}
	r.checkAlarms(h, settle)
	r.checkCalls(h)
	r.checkOverlap(h)
	r.checkLinearizable(h)
	sort.Slice(r.Violations, func(i, j int) bool {
		a, b := r.Violations[i], r.Violations[j]
		return a.Kind < b.Kind || (a.Kind == b.Kind && a.Object < b.Object)
	})
	return r
}

type alarmKey struct {
	object string
	due    int64 // Unix ms
}

func (r *Report) checkAlarms(h History, settle time.Duration) {
	set := map[alarmKey]AlarmSet{}
	for _, a := range h.Alarms {
		k := alarmKey{a.Object, a.Due.UnixMilli()}
		if prev, ok := set[k]; !ok || a.Result == OK || prev.Result != OK {
			set[k] = a
		}
	}
	successes := map[alarmKey]int{}
	first := map[alarmKey]time.Time{}
	for _, ev := range h.Events {
		if ev.Kind != "alarm" {
			continue
		}
		k := alarmKey{ev.Object, ev.Scheduled.UnixMilli()}
		if _, ok := set[k]; !ok {
			r.Violations = append(r.Violations, Violation{"unknown-alarm", ev.Object,
				fmt.Sprintf("ran for %s, which no one set", ev.Scheduled.Format(time.RFC3339Nano))})
			continue
		}
		if ev.Start.Before(ev.Scheduled) {
			r.Violations = append(r.Violations, Violation{"early-alarm", ev.Object,
				fmt.Sprintf("ran at %s, %s before its time %s on %s", ev.Start.Format(time.RFC3339Nano),
					ev.Scheduled.Sub(ev.Start), ev.Scheduled.Format(time.RFC3339Nano), ev.Node)})
		}
		if ev.Failed {
			r.FailedOnPurposeRuns++
			continue
		}
		successes[k]++
		if f, ok := first[k]; !ok || ev.Start.Before(f) {
			first[k] = ev.Start
		}
	}
	var calm, during []lateSample
	for k, a := range set {
		if a.Result != OK {
			continue
		}
		r.AlarmsAcked++
		n := successes[k]
		if n == 0 {
			r.Violations = append(r.Violations, Violation{"lost-alarm", a.Object,
				fmt.Sprintf("acknowledged for %s, never completed", a.Due.Format(time.RFC3339Nano))})
			continue
		}
		r.AlarmsFired++
		r.DuplicateRuns += n - 1
		if a.Flaky > 0 {
			continue // its success comes after deliberate retries
		}
		// An alarm acknowledged after its time (a slow call) is due from
		// its acknowledgement: a time in the past fires at once.
		due := a.Due
		if a.Return.After(due) {
			due = a.Return
		}
		s := lateSample{object: a.Object, due: due, ran: first[k]}
		if f := faultAt(h.Faults, a.Due, settle); f != nil {
			during = append(during, s)
			r.Failover[f.Name] = max(r.Failover[f.Name], s.late())
		} else {
			calm = append(calm, s)
		}
	}
	r.Calm, r.DuringFaults = summarise(calm), summarise(during)
}

// checkCalls finds the slowest successful call per fault in effect when
// it began (none: calm).
func (r *Report) checkCalls(h History) {
	for _, op := range h.Ops {
		if op.Result != OK {
			continue
		}
		took := op.Return.Sub(op.Call)
		if f := faultAt(h.Faults, op.Call, 0); f != nil {
			r.SlowestCall[f.Name] = max(r.SlowestCall[f.Name], took)
		} else {
			r.CalmCall = max(r.CalmCall, took)
		}
	}
}

// faultAt returns the fault active at t (or healed less than settle
// before) that began last.
func faultAt(faults []Fault, t time.Time, settle time.Duration) *Fault {
	// Faults follow each other closely and their settle periods overlap:
	// the one that matters is the one in effect at t, or else the latest
	// that began before it.
	var at *Fault
	for i, f := range faults {
		if !t.Before(f.Start) && t.Before(f.Heal.Add(settle)) && (at == nil || f.Start.After(at.Start)) {
			at = &faults[i]
		}
	}
	return at
}

type lateSample struct {
	object   string
	due, ran time.Time
}

func (s lateSample) late() time.Duration { return max(s.ran.Sub(s.due), 0) }

func summarise(xs []lateSample) Lateness {
	if len(xs) == 0 {
		return Lateness{}
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].late() < xs[j].late() })
	q := func(p float64) time.Duration { return xs[min(len(xs)-1, int(p*float64(len(xs))))].late() }
	w := xs[len(xs)-1]
	return Lateness{N: len(xs), P50: q(0.5), P99: q(0.99), Max: w.late(), WorstObject: w.object, WorstDue: w.due, WorstRan: w.ran}
}

// checkOverlap flags two events of one object that executed at the same
// time. An event executes from its start to its end, except while its node
// was frozen (a SIGSTOPped process runs nothing): a handler frozen mid-run
// and resumed after another node took the object over overlaps that run
// only if the two executed at once.
func (r *Report) checkOverlap(h History) {
	frozen := map[string][]Fault{}
	for _, f := range h.Faults {
		if f.Frozen != "" {
			frozen[f.Frozen] = append(frozen[f.Frozen], f)
		}
	}
	type piece struct {
		start, end time.Time
		ev         int
	}
	by := map[string][]piece{}
	for i, ev := range h.Events {
		for _, iv := range executing(ev.Start, ev.End, frozen[ev.Node]) {
			by[ev.Object] = append(by[ev.Object], piece{iv[0], iv[1], i})
		}
	}
	for obj, ps := range by {
		sort.Slice(ps, func(i, j int) bool { return ps[i].start.Before(ps[j].start) })
		last := ps[0]
		for _, p := range ps[1:] {
			if p.ev != last.ev && p.start.Before(last.end) {
				ev, prev := h.Events[p.ev], h.Events[last.ev]
				r.Violations = append(r.Violations, Violation{"overlap", obj,
					fmt.Sprintf("%s on %s (token %d) started at %s while %s on %s (token %d) ran until %s",
						ev.Kind, ev.Node, ev.Token, p.start.Format(time.RFC3339Nano),
						prev.Kind, prev.Node, prev.Token, last.end.Format(time.RFC3339Nano))})
			}
			if p.end.After(last.end) {
				last = p
			}
		}
	}
}

// executing returns [start, end] without the times its node was frozen.
func executing(start, end time.Time, frozen []Fault) [][2]time.Time {
	out := [][2]time.Time{{start, end}}
	for _, f := range frozen {
		var next [][2]time.Time
		for _, iv := range out {
			if !f.Start.Before(iv[1]) || !f.Thawed.After(iv[0]) {
				next = append(next, iv) // disjoint
				continue
			}
			if iv[0].Before(f.Start) {
				next = append(next, [2]time.Time{iv[0], f.Start})
			}
			if f.Thawed.Before(iv[1]) {
				next = append(next, [2]time.Time{f.Thawed, iv[1]})
			}
		}
		out = next
	}
	return out
}

type counterIn struct {
	add   bool
	delta int64
}

type counterOut struct {
	value   int64
	unknown bool
}

// counterModel is a register of an integer with add (returns the new value)
// and read. An add of unknown outcome took effect, or did not: from a state
// it leads to both (a nondeterministic step), so it may be left open only
// as long as it could take effect (unknownEffectBound) and still never have
// happened.
var counterModel = (&porcupine.NondeterministicModel{
	Init: func() []any { return []any{int64(0)} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(int64), input.(counterIn), output.(counterOut)
		switch {
		case !in.add && out.value == s:
			return []any{s}
		case !in.add:
			return nil
		case out.unknown:
			return []any{s, s + in.delta}
		case out.value == s+in.delta:
			return []any{s + in.delta}
		}
		return nil
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(counterIn), output.(counterOut)
		res := fmt.Sprint(out.value)
		if out.unknown {
			res = "?"
		}
		if in.add {
			return fmt.Sprintf("add(%d) -> %s", in.delta, res)
		}
		return "read() -> " + res
	},
}).ToModel()

// checkLinearizable checks each object's counter history with porcupine.
// Failed operations are left out (they took no effect); unknown ones may
// have taken effect at any time after their call.
func (r *Report) checkLinearizable(h History) {
	by := map[string][]porcupine.Operation{}
	var end int64
	for _, op := range h.Ops {
		end = max(end, op.Return.UnixNano())
	}
	for _, op := range h.Ops {
		r.Ops++
		if op.Result == Failed {
			continue
		}
		ret := op.Return.UnixNano()
		out := counterOut{value: op.Out}
		if op.Result == Unknown {
			r.OpsUnknown++
			if op.Kind != "add" {
				continue // a read of unknown outcome constrains nothing
			}
			// It took effect, or not; if it did, possibly after its caller
			// gave up — but not long after: a node runs a call only while
			// its caller's deadline holds and commits it within its commit
			// timeout. Left open to the end of the run, a few hundred such
			// adds make the check undecidable in any time.
			ret, out = min(op.Return.Add(unknownEffectBound).UnixNano(), end+1), counterOut{unknown: true}
		}
		by[op.Object] = append(by[op.Object], porcupine.Operation{
			Input: counterIn{add: op.Kind == "add", delta: op.Arg}, Call: op.Call.UnixNano(), Output: out, Return: ret,
		})
	}
	objs := make([]string, 0, len(by))
	for o := range by {
		objs = append(objs, o)
	}
	slices.Sort(objs)
	results := make([]porcupine.CheckResult, len(objs))
	var wg sync.WaitGroup
	for i, o := range objs {
		wg.Go(func() { results[i] = porcupine.CheckOperationsTimeout(counterModel, by[o], linearizableTimeout) })
	}
	wg.Wait()
	for i, o := range objs {
		switch results[i] {
		case porcupine.Illegal:
			r.Violations = append(r.Violations, Violation{"not-linearizable", o, fmt.Sprintf("%d operations", len(by[o]))})
		case porcupine.Unknown:
			r.Violations = append(r.Violations, Violation{"not-linearizable", o, "check timed out (undecided)"})
		}
	}
}

const (
	// unknownEffectBound is how long after its caller gave up an add of
	// unknown outcome may still take effect: the caller's deadline has
	// passed by then, and a node's commit is bounded by its commit timeout
	// (10 s); a minute leaves room for a commit queued behind others.
	unknownEffectBound = time.Minute
	// linearizableTimeout bounds the check of one object's history.
	linearizableTimeout = time.Minute
)

// String prints the report for people.
func (r Report) String() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.OK() {
		verdict = fmt.Sprintf("FAIL (%d violations)", len(r.Violations))
	}
	fmt.Fprintf(&b, "chaos check: %s\n", verdict)
	fmt.Fprintf(&b, "  alarms acknowledged %d, completed %d, duplicate runs %d (%.2f%%), deliberate failures %d\n",
		r.AlarmsAcked, r.AlarmsFired, r.DuplicateRuns, pct(r.DuplicateRuns, r.AlarmsFired), r.FailedOnPurposeRuns)
	fmt.Fprintf(&b, "  counter operations %d (%d of unknown outcome), linearizability checked per object\n", r.Ops, r.OpsUnknown)
	line := func(name string, l Lateness) {
		if l.N == 0 {
			fmt.Fprintf(&b, "  lateness %-13s none\n", name)
			return
		}
		fmt.Fprintf(&b, "  lateness %-13s n=%d p50=%s p99=%s max=%s (%s)\n", name, l.N,
			l.P50.Round(time.Millisecond), l.P99.Round(time.Millisecond), l.Max.Round(time.Millisecond), l.WorstObject)
	}
	line("outside faults", r.Calm)
	line("during faults", r.DuringFaults)
	fmt.Fprintf(&b, "  slowest call outside faults %s\n", r.CalmCall.Round(time.Millisecond))
	names := slices.Sorted(maps.Keys(r.Failover))
	for n := range r.SlowestCall {
		if _, ok := r.Failover[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  failover %-14s worst alarm lateness %s, slowest call begun during it %s\n", n,
			r.Failover[n].Round(time.Millisecond), r.SlowestCall[n].Round(time.Millisecond))
	}
	for i, v := range r.Violations {
		if i == 20 {
			fmt.Fprintf(&b, "  … %d more\n", len(r.Violations)-20)
			break
		}
		fmt.Fprintf(&b, "  VIOLATION %s\n", v)
	}
	return b.String()
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
