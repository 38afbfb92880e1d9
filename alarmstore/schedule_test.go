package alarmstore

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
)

// BenchmarkScheduleMemory measures the heap one alarm in the look-ahead
// window costs the schedule (DESIGN §7: ≤ 200 bytes). Run with
//
//	go test -run '^$' -bench ScheduleMemory ./alarmstore/
func BenchmarkScheduleMemory(b *testing.B) {
	const n = 200000
	clock := clockwork.NewFakeClock()
	entries := make([]Entry, n)
	for i := range entries {
		id := durable.IDFromName("Reminder", fmt.Sprint("memory-", i))
		entries[i] = Entry{Partition: i % 256, Due: clock.Now().Add(time.Duration(i) * time.Millisecond), Class: "Reminder", ID: id}
	}
	var perAlarm, afterDrop float64
	for b.Loop() {
		before := liveHeap()
		s := newTestSchedule(clock, 1, func(Entry) bool { return true })
		for p := range 256 {
			s.openWindow(p, clock.Now().Add(time.Hour), true)
		}
		for _, e := range entries {
			s.insert(e)
		}
		perAlarm = float64(liveHeap()-before) / n
		require.Equal(b, n, s.Size())
		// A node that held every partition keeps a quarter of them: what
		// is left must cost about what it would have cost alone.
		for p := 64; p < 256; p++ {
			s.Drop(p)
		}
		afterDrop = float64(liveHeap()-before) / float64(s.Size())
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perAlarm, "bytes/alarm")
	b.ReportMetric(afterDrop, "bytes/alarm-after-drop")
}

// TestScheduleRemakesItsMapWhenMostEntriesLeave: dropping most partitions
// (or firing a burst) leaves byKey made afresh for what is left, which
// still fires.
func TestScheduleRemakesItsMapWhenMostEntriesLeave(t *testing.T) {
	clock := clockwork.NewFakeClock()
	var fired []Entry
	s := newTestSchedule(clock, 1<<20, func(e Entry) bool { fired = append(fired, e); return true })
	const n = 4 * minShrink
	for p := range 256 {
		s.openWindow(p, clock.Now().Add(time.Hour), true)
	}
	for i := range n {
		s.insert(Entry{Partition: i % 256, Due: clock.Now().Add(time.Second), Class: "C", ID: durable.IDFromName("C", fmt.Sprint(i))})
	}
	require.Equal(t, n, s.peak)
	for p := 16; p < 256; p++ {
		s.Drop(p)
	}
	require.Equal(t, n/16, s.Size())
	assert.LessOrEqual(t, s.peak, 2*s.Size(), "the map was not remade after most entries left")

	due, _ := s.popDue(clock.Now().Add(time.Second))
	require.Len(t, due, n/16)
	for _, e := range due {
		require.Less(t, e.Partition, 16)
	}
	assert.Zero(t, s.Size())
}

func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// newTestSchedule is a schedule of 256 partitions without a store: tests
// open windows and insert entries themselves.
func newTestSchedule(clock clockwork.Clock, limit int, deliver func(Entry) bool) *Schedule {
	return NewSchedule(nil, ScheduleConfig{Clock: clock, Window: time.Minute, MaxRunning: limit, Partitions: 256}, deliver)
}

// TestScheduleKeepsOneCurrentEntryPerObject: replacing, removing and
// loading an object's alarm leaves exactly its current due time to fire.
func TestScheduleKeepsOneCurrentEntryPerObject(t *testing.T) {
	clock := clockwork.NewFakeClock()
	var fired []Entry
	s := newTestSchedule(clock, 10, func(e Entry) bool { fired = append(fired, e); return true })
	s.openWindow(0, clock.Now().Add(time.Minute), true)
	a, b := durable.IDFromName("C", "a"), durable.IDFromName("C", "b")
	t0 := clock.Now()
	s.Committed(0, "C", a, t0.Add(3*time.Second))
	s.Committed(0, "C", a, t0.Add(time.Second))   // moved earlier
	s.Committed(0, "C", b, t0.Add(2*time.Second)) // then removed
	s.Committed(0, "C", b, time.Time{})
	s.insert(Entry{Partition: 0, Due: t0.Add(5 * time.Second), Class: "C", ID: a}) // stale load: ignored
	require.Equal(t, 1, s.Size())

	due, next := s.popDue(t0.Add(10 * time.Second))
	require.Len(t, due, 1)
	require.Equal(t, a, due[0].ID)
	require.True(t, t0.Add(time.Second).Equal(due[0].Due), "due %s", due[0].Due)
	require.True(t, next.IsZero(), "stale entries left behind: next %s", next)
	require.Zero(t, s.Size())
	require.Empty(t, fired)
}

// TestScheduleBoundsDeliveries: no more than the limit are handed out until
// released.
func TestScheduleBoundsDeliveries(t *testing.T) {
	clock := clockwork.NewFakeClock()
	s := newTestSchedule(clock, 2, func(Entry) bool { return true })
	s.openWindow(0, clock.Now().Add(time.Minute), true)
	for i := range 5 {
		s.Committed(0, "C", durable.IDFromName("C", fmt.Sprint(i)), clock.Now())
	}
	due, _ := s.popDue(clock.Now())
	require.Len(t, due, 2)
	due, _ = s.popDue(clock.Now())
	require.Empty(t, due, "delivered past the limit")
	s.Release()
	due, _ = s.popDue(clock.Now())
	require.Len(t, due, 1)
	require.Equal(t, 2, s.Size())
}

// TestOverdueCountsTheCurrentAlarmsDueAndNotHandedOut: alarms due by now
// count until they are handed out; later ones and replaced (stale) entries
// do not.
func TestOverdueCountsTheCurrentAlarmsDueAndNotHandedOut(t *testing.T) {
	clock := clockwork.NewFakeClock()
	s := newTestSchedule(clock, 2, func(Entry) bool { return true })
	s.openWindow(0, clock.Now().Add(time.Minute), true)
	t0 := clock.Now()
	for i := range 5 {
		s.Committed(0, "C", durable.IDFromName("C", fmt.Sprint(i)), t0.Add(-time.Duration(i)*time.Second))
	}
	for i := range 3 {
		s.Committed(0, "C", durable.IDFromName("C", fmt.Sprint("later", i)), t0.Add(time.Duration(i+1)*time.Second))
	}
	s.Committed(0, "C", durable.IDFromName("C", "4"), t0.Add(10*time.Second)) // replaced: its due entry is stale
	require.Equal(t, 4, s.Overdue(t0))
	require.Equal(t, 6, s.Overdue(t0.Add(2*time.Second)))
	due, _ := s.popDue(t0)
	require.Len(t, due, 2, "the limit")
	require.Equal(t, 2, s.Overdue(t0), "handed-out alarms are not overdue")
	require.Zero(t, s.Overdue(t0.Add(-time.Hour)))
}

// scheduleOn is a schedule of 4 partitions over a store on a real etcd,
// with a fake clock and a window of a minute.
func scheduleOn(t *testing.T) (*Schedule, *Store, *clientv3.Client, *clockwork.FakeClock) {
	store, c, _ := setup(t)
	clock := clockwork.NewFakeClockAt(time.UnixMilli(1_900_000_000_000))
	s := NewSchedule(store, ScheduleConfig{Clock: clock, Window: time.Minute, MaxRunning: 10, Partitions: 4}, func(Entry) bool { return true })
	return s, store, c, clock
}

// TestClaimIgnoresAStaleWindow: a window left behind by an earlier tenure
// of the partition (an extension that raced with the drop) must not stop
// the next claim from loading the alarms it covers.
func TestClaimIgnoresAStaleWindow(t *testing.T) {
	s, store, c, clock := scheduleOn(t)
	due := clock.Now().Add(10 * time.Second)
	apply(t, c, store.PutOps(nil, Record{Class: "C", ID: idOf("a"), Partition: 1, Due: due, Scheduled: due}))
	s.openWindow(1, clock.Now().Add(time.Minute), true) // stale and empty
	require.Zero(t, s.Size())
	require.NoError(t, s.Claim(context.Background(), 1))
	require.Equal(t, 1, s.Size(), "the claim loaded the alarm")
}

// TestExtensionDoesNotReopenADroppedWindow: a window extension that runs
// after the partition was dropped (the window loop raced the drop) leaves
// no window behind.
func TestExtensionDoesNotReopenADroppedWindow(t *testing.T) {
	s, _, _, _ := scheduleOn(t)
	require.NoError(t, s.Claim(context.Background(), 2))
	s.Drop(2)
	require.NoError(t, s.load(context.Background(), 2, false))
	_, open := s.Windows()[2]
	require.False(t, open, "the extension re-opened the dropped window")
}

// TestScheduleIsQuietOnlyWhenNothingIsDue: Quiet is false while an alarm is
// due and not yet handed out, or a window extension is due; it holds once
// the loop has caught up with the clock.
func TestScheduleIsQuietOnlyWhenNothingIsDue(t *testing.T) {
	s, _, _, clock := scheduleOn(t)
	delivered := make(chan Entry, 10)
	s.deliver = func(e Entry) bool { delivered <- e; return false }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.NoError(t, s.Claim(ctx, 0))
	waitQuiet := func() {
		t.Helper()
		require.Eventually(t, s.Quiet, 10*time.Second, time.Millisecond)
	}
	waitQuiet()
	s.Committed(0, "C", idOf("a"), clock.Now().Add(5*time.Second))
	require.True(t, s.Quiet(), "an alarm due later does not stop quiet")
	require.NoError(t, clock.BlockUntilContext(ctx, 2)) // the fire loop's timer and the window ticker
	clock.Advance(5 * time.Second)
	waitQuiet()
	require.Len(t, delivered, 1, "quiet before the due alarm was handed out")
	clock.Advance(15 * time.Second) // a window extension comes due
	waitQuiet()
	require.True(t, s.Windows()[0].Equal(clock.Now().Add(time.Minute)), "the window was extended before quiet")
}
