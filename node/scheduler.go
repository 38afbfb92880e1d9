package node

import (
	"container/heap"
	"encoding/hex"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/durable-run/durable"
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
// Memory: an alarm in the window costs one heap item and one map slot, about
// 126 bytes (BenchmarkSchedulerMemory). Items are values (no pointer per
// alarm); an object's ID is kept as its 32 bytes and its class as an index
// into the class names seen. A replaced or removed alarm leaves its item in
// the heap until it comes up or the heap is compacted: the map says which
// due time is current.
//
// Deliveries are bounded: at most limit alarms are handed to objects and not
// yet finished (release); the rest wait in the heap, so thousands of alarms
// due at once never start thousands of objects at once.
//
// mu guards every field; deliver is called without it.
type scheduler struct {
	clock   clockwork.Clock
	deliver func(alarmstore.Entry) bool // false: not handed to an object
	limit   int

	mu      sync.Mutex
	h       itemHeap
	byKey   map[schedKey]int64 // key → due (unix ns) of its current item
	until   map[int]time.Time  // loaded partitions → end of their window
	classes map[string]uint16
	names   []string
	running int           // delivered, not yet released
	wake    chan struct{} // poked when the head or the room to deliver may have changed
}

// schedKey identifies an object compactly.
type schedKey struct {
	id    durable.ID
	class uint16
}

// item is one heap entry: an object's alarm said to be due at due.
type item struct {
	due int64 // unix nanoseconds
	key schedKey
	p   int32
}

type itemHeap []item

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h itemHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)        { *h = append(*h, x.(item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func newScheduler(clock clockwork.Clock, limit int, deliver func(alarmstore.Entry) bool) *scheduler {
	return &scheduler{
		clock: clock, deliver: deliver, limit: limit,
		byKey:   map[schedKey]int64{},
		until:   map[int]time.Time{},
		classes: map[string]uint16{},
		wake:    make(chan struct{}, 1),
	}
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// keyLocked returns the compact key of an object. An id that is not 64 hex
// digits (never produced by the node) maps to the zero ID.
func (s *scheduler) keyLocked(k objKey) schedKey {
	c, ok := s.classes[k.class]
	if !ok {
		c = uint16(len(s.names))
		s.classes[k.class] = c
		s.names = append(s.names, k.class)
	}
	key := schedKey{class: c}
	_, _ = hex.Decode(key.id[:], []byte(k.id))
	return key
}

func (s *scheduler) entryLocked(it item) alarmstore.Entry {
	return alarmstore.Entry{
		Partition: int(it.p), Due: time.Unix(0, it.due), Class: s.names[it.key.class], ID: hex.EncodeToString(it.key.id[:]),
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
func (s *scheduler) committed(k objKey, p int, due time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := s.keyLocked(k)
	until, ok := s.until[p]
	if due.IsZero() || !ok || due.After(until) {
		delete(s.byKey, key)
		s.compactLocked()
		return
	}
	s.upsertLocked(item{due: due.UnixNano(), key: key, p: int32(p)}, true)
}

// retryAt schedules another look at an object's alarm at t, e.g. after a
// failure of the system. It bypasses the window because the object's record
// may already be inside it.
func (s *scheduler) retryAt(k objKey, p int, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.until[p]; !ok {
		return
	}
	s.upsertLocked(item{due: t.UnixNano(), key: s.keyLocked(k), p: int32(p)}, true)
}

// load inserts an entry read from the index, unless the object has one.
func (s *scheduler) load(e alarmstore.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.until[e.Partition]; !ok {
		return
	}
	key := s.keyLocked(objKey{class: e.Class, id: e.ID})
	s.upsertLocked(item{due: e.Due.UnixNano(), key: key, p: int32(e.Partition)}, false)
}

func (s *scheduler) upsertLocked(it item, replace bool) {
	if cur, ok := s.byKey[it.key]; ok && (!replace || cur == it.due) {
		return
	}
	s.byKey[it.key] = it.due
	heap.Push(&s.h, it)
	if s.h[0].due == it.due {
		s.poke()
	}
	s.compactLocked()
}

// current reports whether it is the object's current item.
func (s *scheduler) currentLocked(it item) bool {
	due, ok := s.byKey[it.key]
	return ok && due == it.due
}

// compactLocked drops the stale items once they outnumber the current ones.
func (s *scheduler) compactLocked() {
	if len(s.h) < 2*len(s.byKey)+1024 {
		return
	}
	s.filterLocked(s.currentLocked)
}

// filterLocked keeps the items for which keep holds and restores the heap.
func (s *scheduler) filterLocked(keep func(item) bool) {
	kept := s.h[:0]
	for _, it := range s.h {
		if keep(it) {
			kept = append(kept, it)
		}
	}
	s.h = kept
	heap.Init(&s.h)
	if cap(s.h) > 2*len(s.h)+1024 {
		s.h = append(itemHeap(nil), s.h...) // let a burst's backing array go
	}
}

// dropPartition forgets p's window and entries.
func (s *scheduler) dropPartition(p int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.until, p)
	s.filterLocked(func(it item) bool {
		if it.p == int32(p) {
			if s.currentLocked(it) {
				delete(s.byKey, it.key)
			}
			return false
		}
		return true
	})
	s.poke()
}

// size returns the number of alarms in memory.
func (s *scheduler) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byKey)
}

// release ends a delivery: the object is done with the alarm it was handed.
func (s *scheduler) release() {
	s.mu.Lock()
	s.running--
	s.mu.Unlock()
	s.poke()
}

// popDue removes and returns the current entries due at or before now, as
// many as there is room to deliver, and the time of the next entry (zero if
// none, or if the room ran out: a release pokes the loop).
func (s *scheduler) popDue(now time.Time) ([]alarmstore.Entry, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []alarmstore.Entry
	limit := now.UnixNano()
	for len(s.h) > 0 && s.h[0].due <= limit {
		if s.running >= s.limit {
			return due, time.Time{}
		}
		it := heap.Pop(&s.h).(item)
		if !s.currentLocked(it) {
			continue
		}
		delete(s.byKey, it.key)
		s.running++
		due = append(due, s.entryLocked(it))
	}
	if len(s.h) == 0 {
		return due, time.Time{}
	}
	return due, time.Unix(0, s.h[0].due)
}

// run fires due entries until done is closed.
func (s *scheduler) run(done <-chan struct{}) {
	timer := s.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := s.popDue(s.clock.Now())
		for _, e := range due {
			if !s.deliver(e) {
				s.release()
			}
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
