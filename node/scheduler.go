package node

import (
	"container/heap"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/durable-run/durable/alarmstore"
)

// scheduler holds the alarms due within the look-ahead window of every owned
// partition in one min-heap, with one timer for the head.
//
// Window invariant: for each loaded partition p, every alarm of p due at or
// before until[p] is in the heap (or is being delivered). It holds because
// (1) extend raises until[p] *before* it range-reads the index, and (2) every
// commit that sets an alarm pushes it if its due time is within until[p] when
// the commit returns. A commit that finished before the read is seen by the
// read; one that finishes after the raise pushes it itself.
//
// Entries may be stale (a later commit moved or deleted the alarm); the object
// compares with its authoritative record before running, so a stale entry
// costs a wake-up, never an early or lost run. Loads insert only when absent,
// so they never replace a fresher entry pushed by a commit.
//
// mu guards every field; deliver is called without it.
type scheduler struct {
	clock   clockwork.Clock
	deliver func(alarmstore.Entry)

	mu    sync.Mutex
	h     entryHeap
	byKey map[objKey]*heapEntry
	until map[int]time.Time // loaded partitions → end of their window
	wake  chan struct{}     // poked when the head may have changed
}

type heapEntry struct {
	alarmstore.Entry
	key   objKey
	index int
}

type entryHeap []*heapEntry

func (h entryHeap) Len() int { return len(h) }
func (h entryHeap) Less(i, j int) bool {
	return h[i].Due.Before(h[j].Due)
}
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *entryHeap) Push(x any) {
	e := x.(*heapEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}

func newScheduler(clock clockwork.Clock, deliver func(alarmstore.Entry)) *scheduler {
	return &scheduler{
		clock: clock, deliver: deliver,
		byKey: map[objKey]*heapEntry{},
		until: map[int]time.Time{},
		wake:  make(chan struct{}, 1),
	}
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// openWindow marks p loaded up to until and returns the previous end (zero if
// p was not loaded). The caller must then read the index up to until. Only a
// claim creates a window (create); an extension of a window that is gone —
// the partition was dropped meanwhile — does nothing and reports ok=false,
// so a load racing a drop cannot leave a window behind for the partition's
// next claim to trust.
func (s *scheduler) openWindow(p int, until time.Time, create bool) (prev time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, ok = s.until[p]
	if ok && until.After(prev) || !ok && create {
		s.until[p] = until
	}
	return prev, ok
}

// loaded reports the partitions with a window.
func (s *scheduler) loaded() map[int]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]time.Time, len(s.until))
	for p, u := range s.until {
		out[p] = u
	}
	return out
}

// committed records that an object's alarm is now due at due (set) or gone
// (due zero). Called after the commit is durable.
func (s *scheduler) committed(key objKey, p int, due time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.until[p]
	if due.IsZero() || !ok || due.After(until) {
		s.removeLocked(key)
		return
	}
	s.upsertLocked(alarmstore.Entry{Partition: p, Due: due, Class: key.class, ID: key.id}, key, true)
}

// retryAt schedules another look at an object's alarm at t, e.g. after a
// failure of the system. It bypasses the window because the object's record
// may already be inside it.
func (s *scheduler) retryAt(key objKey, p int, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.until[p]; !ok {
		return
	}
	s.upsertLocked(alarmstore.Entry{Partition: p, Due: t, Class: key.class, ID: key.id}, key, true)
}

// load inserts an entry read from the index, unless the object has one.
func (s *scheduler) load(e alarmstore.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.until[e.Partition]; !ok {
		return
	}
	s.upsertLocked(e, objKey{class: e.Class, id: e.ID}, false)
}

func (s *scheduler) upsertLocked(e alarmstore.Entry, key objKey, replace bool) {
	if old, ok := s.byKey[key]; ok {
		if !replace {
			return
		}
		old.Entry = e
		heap.Fix(&s.h, old.index)
	} else {
		he := &heapEntry{Entry: e, key: key}
		heap.Push(&s.h, he)
		s.byKey[key] = he
	}
	if s.h[0].key == key {
		s.poke()
	}
}

func (s *scheduler) removeLocked(key objKey) {
	if old, ok := s.byKey[key]; ok {
		heap.Remove(&s.h, old.index)
		delete(s.byKey, key)
	}
}

// dropPartition forgets p's window and entries.
func (s *scheduler) dropPartition(p int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.until, p)
	kept := s.h[:0]
	for _, e := range s.h {
		if e.Partition == p {
			delete(s.byKey, e.key)
			continue
		}
		kept = append(kept, e)
	}
	for i := len(kept); i < len(s.h); i++ {
		s.h[i] = nil
	}
	s.h = kept
	for i, e := range s.h {
		e.index = i
	}
	heap.Init(&s.h)
	s.poke()
}

// size returns the number of entries in memory.
func (s *scheduler) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.h)
}

// popDue removes and returns the entries due at or before now, and the time of
// the next entry (zero if none).
func (s *scheduler) popDue(now time.Time) ([]alarmstore.Entry, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []alarmstore.Entry
	for len(s.h) > 0 && !s.h[0].Due.After(now) {
		e := heap.Pop(&s.h).(*heapEntry)
		delete(s.byKey, e.key)
		due = append(due, e.Entry)
	}
	if len(s.h) == 0 {
		return due, time.Time{}
	}
	return due, s.h[0].Due
}

// run fires due entries until done is closed.
func (s *scheduler) run(done <-chan struct{}) {
	timer := s.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := s.popDue(s.clock.Now())
		for _, e := range due {
			s.deliver(e)
		}
		now := s.clock.Now()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), 0)
		}
		timer.Reset(wait)
		// Reset measures wait from the clock's time when it runs: if the
		// clock moved since now (a process pause, a fake clock's jump), the
		// timer fires late by that much. Look again at once instead.
		if s.clock.Since(now) >= time.Millisecond {
			s.poke()
		}
		select {
		case <-done:
			return
		case <-s.wake:
		case <-timer.Chan():
		}
	}
}

// rollbackWindow undoes openWindow(p, until) after a failed read, if nobody
// moved the window since.
func (s *scheduler) rollbackWindow(p int, until, prev time.Time, had bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.until[p]; !ok || !cur.Equal(until) {
		return
	}
	if had {
		s.until[p] = prev
	} else {
		delete(s.until, p)
	}
}
