package node

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
)

// BenchmarkSchedulerMemory measures the heap one alarm in the look-ahead
// window costs the scheduler (DESIGN §7: ≤ 200 bytes). Run with
//
//	go test -run '^$' -bench SchedulerMemory ./node/
func BenchmarkSchedulerMemory(b *testing.B) {
	const n = 200000
	clock := clockwork.NewFakeClock()
	entries := make([]alarmstore.Entry, n)
	for i := range entries {
		id := durable.IDFromName("Reminder", fmt.Sprint("memory-", i))
		entries[i] = alarmstore.Entry{Partition: i % 256, Due: clock.Now().Add(time.Duration(i) * time.Millisecond), Class: "Reminder", ID: id.String()}
	}
	var perAlarm float64
	for b.Loop() {
		before := liveHeap()
		s := newScheduler(clock, 1, func(alarmstore.Entry) bool { return true })
		for p := range 256 {
			s.openWindow(p, clock.Now().Add(time.Hour), true)
		}
		for _, e := range entries {
			s.load(e)
		}
		perAlarm = float64(liveHeap()-before) / n
		require.Equal(b, n, s.size())
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perAlarm, "bytes/alarm")
}

func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestSchedulerKeepsOneCurrentEntryPerObject: replacing, removing and
// loading an object's alarm leaves exactly its current due time to fire.
func TestSchedulerKeepsOneCurrentEntryPerObject(t *testing.T) {
	clock := clockwork.NewFakeClock()
	var fired []alarmstore.Entry
	s := newScheduler(clock, 10, func(e alarmstore.Entry) bool { fired = append(fired, e); return true })
	s.openWindow(0, clock.Now().Add(time.Minute), true)
	a := objKey{class: "C", id: durable.IDFromName("C", "a").String()}
	b := objKey{class: "C", id: durable.IDFromName("C", "b").String()}
	t0 := clock.Now()
	s.committed(a, 0, t0.Add(3*time.Second))
	s.committed(a, 0, t0.Add(time.Second))   // moved earlier
	s.committed(b, 0, t0.Add(2*time.Second)) // then removed
	s.committed(b, 0, time.Time{})
	s.load(alarmstore.Entry{Partition: 0, Due: t0.Add(5 * time.Second), Class: a.class, ID: a.id}) // stale load: ignored
	require.Equal(t, 1, s.size())

	due, next := s.popDue(t0.Add(10 * time.Second))
	require.Len(t, due, 1)
	require.Equal(t, a.id, due[0].ID)
	require.True(t, t0.Add(time.Second).Equal(due[0].Due), "due %s", due[0].Due)
	require.True(t, next.IsZero(), "stale entries left behind: next %s", next)
	require.Zero(t, s.size())
	require.Empty(t, fired)
}

// TestSchedulerBoundsDeliveries: no more than the limit are handed out until
// released.
func TestSchedulerBoundsDeliveries(t *testing.T) {
	clock := clockwork.NewFakeClock()
	s := newScheduler(clock, 2, func(alarmstore.Entry) bool { return true })
	s.openWindow(0, clock.Now().Add(time.Minute), true)
	for i := range 5 {
		s.committed(objKey{class: "C", id: durable.IDFromName("C", fmt.Sprint(i)).String()}, 0, clock.Now())
	}
	due, _ := s.popDue(clock.Now())
	require.Len(t, due, 2)
	due, _ = s.popDue(clock.Now())
	require.Empty(t, due, "delivered past the limit")
	s.release()
	due, _ = s.popDue(clock.Now())
	require.Len(t, due, 1)
	require.Equal(t, 2, s.size())
}
