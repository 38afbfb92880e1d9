package chaos

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/examples"
)

var base = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }

func alarmRun(obj string, due, start, end int, node string, failed bool) examples.WitnessEvent {
	return examples.WitnessEvent{Object: obj, Kind: "alarm", Node: node, Token: 1, Start: at(start), End: at(end), Scheduled: at(due), Failed: failed}
}

// clean is a history that breaks nothing: two alarms (one flaky, retried),
// a counter with concurrent adds and reads, and an add of unknown outcome
// that did take effect.
func clean() History {
	return History{
		Alarms: []AlarmSet{
			{Object: "a", Due: at(1000), Result: OK, Call: at(0), Return: at(10)},
			{Object: "b", Due: at(1000), Flaky: 1, Result: OK, Call: at(0), Return: at(10)},
			{Object: "c", Due: at(1000), Result: Unknown, Call: at(0), Return: at(10)}, // may never fire
		},
		Events: []examples.WitnessEvent{
			alarmRun("a", 1000, 1003, 1005, "n1", false),
			alarmRun("b", 1000, 1002, 1004, "n1", true),
			alarmRun("b", 1000, 3004, 3006, "n2", false),
			{Object: "x", Kind: "invoke:add", Start: at(1), End: at(2)},
			{Object: "x", Kind: "invoke:add", Start: at(3), End: at(4)},
		},
		Ops: []Op{
			{Object: "x", Kind: "add", Arg: 1, Out: 1, Result: OK, Call: at(0), Return: at(5)},
			{Object: "x", Kind: "add", Arg: 2, Result: Unknown, Call: at(1), Return: at(6)},
			{Object: "x", Kind: "read", Out: 3, Result: OK, Call: at(7), Return: at(8)},
			{Object: "x", Kind: "add", Arg: 5, Result: Failed, Call: at(9), Return: at(10)},
			{Object: "x", Kind: "read", Out: 3, Result: OK, Call: at(11), Return: at(12)},
		},
		Faults: []Fault{{Name: "kill-node", Start: at(2000), Heal: at(2500)}},
	}
}

func TestCleanHistoryPasses(t *testing.T) {
	r := Check(clean(), time.Second)
	require.True(t, r.OK(), r.String())
	require.Equal(t, 2, r.AlarmsAcked)
	require.Equal(t, 2, r.AlarmsFired)
	require.Equal(t, 1, r.FailedOnPurposeRuns)
	require.Equal(t, 1, r.Calm.N, "the flaky alarm is not counted for lateness")
	require.Equal(t, 3*time.Millisecond, r.Calm.Max)
	require.Contains(t, r.String(), "PASS")
}

func TestCheckerFlagsEachViolation(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(h *History)
		kind   string
		object string
	}{
		{"lost alarm", func(h *History) { h.Events = h.Events[1:] }, "lost-alarm", "a"},
		{"lost after failures only", func(h *History) { h.Events = append(h.Events[:2], h.Events[3:]...) }, "lost-alarm", "b"},
		{"early fire", func(h *History) { h.Events[0] = alarmRun("a", 1000, 999, 1001, "n1", false) }, "early-alarm", "a"},
		{"fire nobody set", func(h *History) { h.Events = append(h.Events, alarmRun("z", 5, 6, 7, "n1", false)) }, "unknown-alarm", "z"},
		{"overlap on two nodes", func(h *History) {
			h.Events = append(h.Events, examples.WitnessEvent{Object: "a", Kind: "invoke:read", Node: "n2", Token: 2, Start: at(1004), End: at(1010)})
		}, "overlap", "a"},
		{"stale read", func(h *History) { h.Ops[4].Out = 1 }, "not-linearizable", "x"},
		{"lost acknowledged write", func(h *History) { h.Ops[2].Out = 0 }, "not-linearizable", "x"},
		{"failed write applied", func(h *History) { h.Ops[4].Out = 8 }, "not-linearizable", "x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := clean()
			tc.mutate(&h)
			r := Check(h, time.Second)
			require.False(t, r.OK())
			require.Len(t, r.Violations, 1, r.String())
			require.Equal(t, tc.kind, r.Violations[0].Kind)
			require.Equal(t, tc.object, r.Violations[0].Object)
			require.True(t, strings.Contains(r.String(), "VIOLATION "+tc.kind), r.String())
		})
	}
}

// TestOverlapExcludesTimeFrozen: an alarm handler frozen mid-run (its node
// SIGSTOPped) and resumed after another node ran the alarm executed nothing
// while frozen; it overlaps that run only if the two executed at once.
func TestOverlapExcludesTimeFrozen(t *testing.T) {
	zombie := alarmRun("a", 1000, 1001, 5001, "n1", false) // frozen 1002..5000
	pause := Fault{Name: "pause-node", Target: "0", Frozen: "n1", Start: at(1002), Thawed: at(5000), Heal: at(5050)}
	for _, tc := range []struct {
		name       string
		other      examples.WitnessEvent
		violations int
	}{
		{"the other ran while it was frozen", alarmRun("a", 1000, 3000, 3100, "n2", false), 0},
		{"the other still ran when it resumed", alarmRun("a", 1000, 3000, 5000, "n2", false), 0},
		{"the other ran past its resume", alarmRun("a", 1000, 3000, 5001, "n2", false), 1},
		{"the other ran before it froze", alarmRun("a", 1000, 1001, 1003, "n2", false), 1},
		{"the other ran between thaw and heal", alarmRun("a", 1000, 3000, 5020, "n2", false), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := History{
				Alarms: []AlarmSet{{Object: "a", Due: at(1000), Result: OK}},
				Events: []examples.WitnessEvent{zombie, tc.other},
				Faults: []Fault{pause},
			}
			r := Check(h, time.Second)
			require.Len(t, r.Violations, tc.violations, r.String())
			if tc.violations > 0 {
				require.Equal(t, "overlap", r.Violations[0].Kind)
			}
			// Without the freeze on record, every case overlaps.
			h.Faults[0].Frozen = ""
			require.Len(t, Check(h, time.Second).Violations, 1)
		})
	}
	t.Run("the freeze of another node", func(t *testing.T) {
		h := History{
			Alarms: []AlarmSet{{Object: "a", Due: at(1000), Result: OK}},
			Events: []examples.WitnessEvent{alarmRun("a", 1000, 2000, 3000, "n2", false), alarmRun("a", 1000, 2500, 3500, "n3", false)},
			Faults: []Fault{pause},
		}
		r := Check(h, time.Second)
		require.Len(t, r.Violations, 1, r.String())
		require.Equal(t, "overlap", r.Violations[0].Kind)
	})
}

func TestLatenessIsSplitByFaults(t *testing.T) {
	h := History{
		Alarms: []AlarmSet{
			{Object: "calm", Due: at(1000), Result: OK},
			{Object: "hit", Due: at(2100), Result: OK},
			{Object: "dup", Due: at(4000), Result: OK},
		},
		Events: []examples.WitnessEvent{
			alarmRun("calm", 1000, 1002, 1003, "n1", false),
			alarmRun("hit", 2100, 5100, 5101, "n2", false),
			alarmRun("dup", 4000, 4001, 4002, "n1", false),
			alarmRun("dup", 4000, 4010, 4011, "n2", false),
		},
		Faults: []Fault{{Name: "kill-node", Target: "n3", Start: at(2000), Heal: at(2200)}},
	}
	r := Check(h, time.Second)
	require.True(t, r.OK(), r.String())
	require.Equal(t, 2, r.Calm.N)
	require.Equal(t, 1, r.DuringFaults.N)
	require.Equal(t, 3*time.Second, r.DuringFaults.Max)
	require.Equal(t, 3*time.Second, r.Failover["kill-node"])
	require.Equal(t, 1, r.DuplicateRuns)
}

// TestFailoverIsAttributedToTheFaultInEffect: faults follow each other
// closely and their settle periods overlap; an alarm due during the second
// counts against the second, not the first whose settle period still ran.
func TestFailoverIsAttributedToTheFaultInEffect(t *testing.T) {
	h := History{
		Alarms: []AlarmSet{{Object: "a", Due: at(2100), Result: OK}},
		Events: []examples.WitnessEvent{alarmRun("a", 2100, 4100, 4101, "n2", false)},
		Faults: []Fault{
			{Name: "kill-dc", Start: at(0), Heal: at(1000)},
			{Name: "kill-etcd", Start: at(2000), Heal: at(2500)},
		},
	}
	r := Check(h, 5*time.Second)
	require.True(t, r.OK(), r.String())
	require.Equal(t, 2*time.Second, r.Failover["kill-etcd"])
	_, blamed := r.Failover["kill-dc"]
	require.False(t, blamed, "the lateness was blamed on an earlier fault: %v", r.Failover)
}

// TestSlowestCallIsCountedAgainstTheFaultItBeganIn: a successful call is
// charged to the fault in effect when it began (its wait through the
// fault), calls outside faults to the calm figure; failed or unknown calls
// measure nothing.
func TestSlowestCallIsCountedAgainstTheFaultItBeganIn(t *testing.T) {
	h := History{
		Ops: []Op{
			{Object: "c", Kind: "add", Arg: 1, Out: 1, Result: OK, Call: at(100), Return: at(150)},
			{Object: "c", Kind: "read", Out: 1, Result: OK, Call: at(2100), Return: at(4600)},
			{Object: "c", Kind: "read", Out: 1, Result: OK, Call: at(2200), Return: at(2300)},
			{Object: "c", Kind: "add", Arg: 1, Result: Unknown, Call: at(2300), Return: at(12300)},
		},
		Faults: []Fault{{Name: "pause-node", Start: at(2000), Heal: at(3000)}},
	}
	r := Check(h, time.Second)
	require.True(t, r.OK(), r.String())
	require.Equal(t, 2500*time.Millisecond, r.SlowestCall["pause-node"])
	require.Equal(t, 50*time.Millisecond, r.CalmCall)
	require.Contains(t, r.String(), "slowest call begun during it 2.5s")
}

// TestUnknownAddTookEffectOrNot: an add of unknown outcome either took
// effect (within a bounded time after its caller gave up) or never did; a
// history where it never did is linearizable, one where it shows up long
// after it could have is not.
func TestUnknownAddTookEffectOrNot(t *testing.T) {
	sec := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	history := func(firstRead, secondRead int64) History {
		return History{Ops: []Op{
			{Object: "x", Kind: "add", Arg: 5, Result: Unknown, Call: sec(0), Return: sec(1)},
			{Object: "x", Kind: "read", Out: firstRead, Result: OK, Call: sec(30), Return: sec(31)},
			{Object: "x", Kind: "read", Out: secondRead, Result: OK, Call: sec(100), Return: sec(101)},
		}}
	}
	require.True(t, Check(history(0, 0), time.Second).OK(), "it never took effect")
	require.True(t, Check(history(5, 5), time.Second).OK(), "it took effect early")
	require.True(t, Check(history(0, 5), time.Second).OK(), "it took effect between 31 s and 61 s")
	h := history(0, 5)
	h.Ops = append(h.Ops, Op{Object: "x", Kind: "read", Out: 0, Result: OK, Call: sec(70), Return: sec(71)})
	require.False(t, Check(h, time.Second).OK(), "it showed up at 100 s but not at 70 s, after it could take effect")
}
