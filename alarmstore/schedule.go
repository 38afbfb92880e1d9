package alarmstore

import (
	"container/heap"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/durable-run/durable"
)

// ScheduleConfig configures a Schedule.
type ScheduleConfig struct {
	// Clock drives the timer, the window and Quiet; tests inject a fake.
	Clock clockwork.Clock
	// Window is the look-ahead: alarms due within it are held in memory.
	Window time.Duration
	// MaxRunning bounds the alarms delivered and not yet released.
	MaxRunning int
	// Partitions is the cluster's partition count.
	Partitions int
	// Logger receives the schedule's warnings.
	Logger *slog.Logger
}

// Schedule holds the alarms due within the look-ahead window of every
// partition the node serves in one min-heap, with one timer for the head,
// and hands each due alarm to deliver.
//
// Window invariant: for each loaded partition p, every alarm of p due at or
// before until[p] is in the heap (or is being delivered). It holds because
// (1) a load raises until[p] *before* it range-reads the index, and (2)
// every commit that sets an alarm reports it (Committed) after it is
// durable, and the alarm is pushed if its due time is within until[p] then.
// A commit that finished before the read is seen by the read; one that
// finishes after the raise pushes it itself.
//
// Entries may be stale (a later commit moved or deleted the alarm); the
// object compares with its authoritative record before running, so a stale
// entry costs a wake-up, never an early or lost run. Loads insert only when
// absent, so they never replace a fresher entry pushed by a commit.
//
// Memory: an alarm in the window costs one heap item and one map slot,
// 126–168 bytes (BenchmarkScheduleMemory; the map's and the heap's growth
// decide where in that range), and no more than about 200 once most of them
// left (compactLocked). Items are values (no pointer per
// alarm); an object's ID is kept as its 32 bytes and its class as an index
// into the class names seen. A replaced or removed alarm leaves its item in
// the heap until it comes up or the heap is compacted: the map says which
// due time is current.
//
// Deliveries are bounded: at most MaxRunning alarms are handed out and not
// yet released; the rest wait in the heap, so thousands of alarms due at
// once never start thousands of objects at once.
//
// Concurrency: loadMu[p] serializes the window loads of partition p and is
// held across the index read (a rollback must not undo a later extension);
// mu guards every other field and is never held across etcd calls or
// deliver. Lock order: loadMu[p] before mu.
type Schedule struct {
	store   *Store
	cfg     ScheduleConfig
	deliver func(Entry) bool // false: not handed to an object

	loadMu []sync.Mutex

	mu         sync.Mutex
	h          itemHeap
	byKey      map[schedKey]int64 // key → due (unix ns) of its current item
	peak       int                // most entries byKey held since it was made
	until      map[int]time.Time  // loaded partitions → end of their window
	classes    map[string]uint16
	names      []string
	running    int           // delivered, not yet released
	delivering int           // popped, deliver not yet returned
	loading    int           // window loads in progress
	nextExtend time.Time     // when the window loop extends the windows next
	wake       chan struct{} // poked when the head or the room to deliver may have changed
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

// NewSchedule returns a schedule reading store's index; deliver is called,
// from Run's goroutine, for each alarm that comes due, and reports whether
// the alarm was handed to an object (which then calls Release when done).
func NewSchedule(store *Store, cfg ScheduleConfig, deliver func(Entry) bool) *Schedule {
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.MaxRunning = max(cfg.MaxRunning, 1)
	return &Schedule{
		store: store, cfg: cfg, deliver: deliver,
		loadMu:     make([]sync.Mutex, cfg.Partitions),
		byKey:      map[schedKey]int64{},
		until:      map[int]time.Time{},
		classes:    map[string]uint16{},
		wake:       make(chan struct{}, 1),
		nextExtend: cfg.Clock.Now().Add(cfg.Window / 4),
	}
}

func (s *Schedule) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// keyLocked returns the compact key of an object.
func (s *Schedule) keyLocked(class string, id durable.ID) schedKey {
	c, ok := s.classes[class]
	if !ok {
		c = uint16(len(s.names))
		s.classes[class] = c
		s.names = append(s.names, class)
	}
	return schedKey{class: c, id: id}
}

func (s *Schedule) entryLocked(it item) Entry {
	return Entry{Partition: int(it.p), Due: time.Unix(0, it.due), Class: s.names[it.key.class], ID: it.key.id}
}

// Run fires due alarms and extends the windows as time passes, until ctx
// ends.
func (s *Schedule) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.extendLoop(ctx) })
	s.fireLoop(ctx.Done())
	wg.Wait()
}

// Claim starts p afresh (whatever was held for it belongs to an earlier
// tenure) and loads the alarms due within its window. On failure p has no
// window and the caller tries again.
func (s *Schedule) Claim(ctx context.Context, p int) error {
	s.Drop(p)
	return s.load(ctx, p, true)
}

// Drop forgets p's window and entries.
func (s *Schedule) Drop(p int) {
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
	s.compactLocked()
	s.poke()
}

// load extends p's window to now + Window and reads the index entries that
// entered it; claim opens the window of a newly claimed partition,
// otherwise only an existing window is extended. On failure the window is
// rolled back so the next attempt reads them again.
func (s *Schedule) load(ctx context.Context, p int, claim bool) error {
	s.loadMu[p].Lock()
	defer s.loadMu[p].Unlock()
	until := s.cfg.Clock.Now().Add(s.cfg.Window)
	prev, had := s.openWindow(p, until, claim)
	if !had && !claim || had && !until.After(prev) {
		return nil
	}
	s.mu.Lock()
	s.loading++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.loading--
		s.mu.Unlock()
	}()
	var after time.Time
	if had {
		after = prev
	}
	loaded := 0
	err := s.store.LoadWindow(ctx, p, after, until, func(e Entry) {
		loaded++
		s.insert(e)
	})
	if loaded > 0 {
		s.cfg.Logger.Debug("alarms loaded", "partition", p, "count", loaded, "until", until)
	}
	if err != nil {
		s.rollbackWindow(p, until, prev, had)
	}
	return err
}

// extendLoop extends the windows of loaded partitions as time passes.
func (s *Schedule) extendLoop(ctx context.Context) {
	every := s.cfg.Window / 4
	s.mu.Lock()
	tick := s.cfg.Clock.NewTicker(every)
	s.nextExtend = s.cfg.Clock.Now().Add(every)
	s.mu.Unlock()
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.Chan():
		}
		for p := range s.Windows() {
			if err := s.load(ctx, p, false); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("extending alarm window failed; will retry", "partition", p, "err", err)
			}
		}
		// The ticker keeps its own cadence (ticks missed while a load ran
		// are dropped): the next one is the first of it after now.
		s.mu.Lock()
		for now := s.cfg.Clock.Now(); !s.nextExtend.After(now); {
			s.nextExtend = s.nextExtend.Add(every)
		}
		s.mu.Unlock()
	}
}

// openWindow marks p loaded up to until and returns the previous end (zero if
// p was not loaded). The caller must then read the index up to until. Only a
// claim creates a window (create); an extension of a window that is gone —
// the partition was dropped meanwhile — does nothing and reports ok=false,
// so a load racing a drop cannot leave a window behind for the partition's
// next claim to trust.
func (s *Schedule) openWindow(p int, until time.Time, create bool) (prev time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, ok = s.until[p]
	if ok && until.After(prev) || !ok && create {
		s.until[p] = until
	}
	return prev, ok
}

// rollbackWindow undoes openWindow(p, until) after a failed read, if nobody
// moved the window since.
func (s *Schedule) rollbackWindow(p int, until, prev time.Time, had bool) {
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

// Windows reports the partitions with a window and where each ends.
func (s *Schedule) Windows() map[int]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]time.Time, len(s.until))
	for p, u := range s.until {
		out[p] = u
	}
	return out
}

// Committed records that an object's alarm is now due at due (set) or gone
// (due zero). Call it once the commit is durable, in the order of the
// object's commits.
func (s *Schedule) Committed(p int, class string, id durable.ID, due time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := s.keyLocked(class, id)
	until, ok := s.until[p]
	if due.IsZero() || !ok || due.After(until) {
		delete(s.byKey, key)
		s.compactLocked()
		return
	}
	s.upsertLocked(item{due: due.UnixNano(), key: key, p: int32(p)}, true)
}

// RetryAt schedules another look at an object's alarm at t, e.g. after a
// failure of the system. It bypasses the window because the object's record
// may already be inside it.
func (s *Schedule) RetryAt(p int, class string, id durable.ID, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.until[p]; !ok {
		return
	}
	s.upsertLocked(item{due: t.UnixNano(), key: s.keyLocked(class, id), p: int32(p)}, true)
}

// insert adds an entry read from the index, unless the object has one.
func (s *Schedule) insert(e Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.until[e.Partition]; !ok {
		return
	}
	s.upsertLocked(item{due: e.Due.UnixNano(), key: s.keyLocked(e.Class, e.ID), p: int32(e.Partition)}, false)
}

func (s *Schedule) upsertLocked(it item, replace bool) {
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

// currentLocked reports whether it is the object's current item.
func (s *Schedule) currentLocked(it item) bool {
	due, ok := s.byKey[it.key]
	return ok && due == it.due
}

// compactLocked drops the stale items once they outnumber the current ones,
// and remakes byKey once it holds half its peak: a Go map never
// shrinks, so a node that once held a burst, or many partitions' windows
// (an adoption, a restart that claimed every partition before its peers
// came back), would otherwise keep the tables for them for good. Both are
// amortized over the removals that made them worth it.
func (s *Schedule) compactLocked() {
	if n := len(s.byKey); n > s.peak {
		s.peak = n
	} else if s.peak >= minShrink && n <= s.peak/2 {
		m := make(map[schedKey]int64, n)
		for k, due := range s.byKey {
			m[k] = due
		}
		s.byKey, s.peak = m, n
	}
	if len(s.h) < 2*len(s.byKey)+1024 {
		return
	}
	s.filterLocked(s.currentLocked)
}

// minShrink is the peak below which byKey is never remade (its tables are
// small then).
const minShrink = 4096

// filterLocked keeps the items for which keep holds and restores the heap.
func (s *Schedule) filterLocked(keep func(item) bool) {
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

// Size returns the number of alarms in memory.
func (s *Schedule) Size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byKey)
}

// Overdue returns the number of alarms in memory due at or before now and
// not yet handed to an object: they wait for room to run (MaxRunning) or
// for the loop to pop them. It walks only the heap's items due by now (a
// child is never due before its parent), so it costs what is overdue.
func (s *Schedule) Overdue(now time.Time) int {
	limit := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	stack := []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(s.h) || s.h[i].due > limit {
			continue
		}
		if s.currentLocked(s.h[i]) {
			n++
		}
		stack = append(stack, 2*i+1, 2*i+2)
	}
	return n
}

// MaxRunning returns the current bound on deliveries not yet released.
func (s *Schedule) MaxRunning() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.MaxRunning
}

// Running returns the number of alarms handed to objects and not yet
// released: handlers running or about to.
func (s *Schedule) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// SetMaxRunning changes the bound on deliveries not yet released (at least
// 1); a lower bound lets the deliveries out already finish.
func (s *Schedule) SetMaxRunning(n int) {
	s.mu.Lock()
	grew := n > s.cfg.MaxRunning
	s.cfg.MaxRunning = max(n, 1)
	s.mu.Unlock()
	if grew {
		s.poke()
	}
}

// Release ends a delivery: the object is done with the alarm it was handed.
func (s *Schedule) Release() {
	s.mu.Lock()
	s.running--
	s.mu.Unlock()
	s.poke()
}

// Quiet reports whether the schedule has nothing to do at the clock's
// current time: every alarm due has been handed to its object (which the
// caller checks for quiet separately), no window load is under way and no
// window extension is due. After a fake clock moves, tests wait until the
// node is quiet (a quiescence barrier) before they check that something did
// not run: anything due by then has run.
func (s *Schedule) Quiet() bool {
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.delivering > 0 || s.loading > 0 || !now.Before(s.nextExtend) {
		return false
	}
	return len(s.h) == 0 || s.h[0].due > now.UnixNano()
}

// popDue removes and returns the current entries due at or before now, as
// many as there is room to deliver, and the time of the next entry (zero if
// none, or if the room ran out: a release pokes the loop).
func (s *Schedule) popDue(now time.Time) ([]Entry, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []Entry
	limit := now.UnixNano()
	for len(s.h) > 0 && s.h[0].due <= limit {
		if s.running >= s.cfg.MaxRunning {
			return due, time.Time{}
		}
		it := heap.Pop(&s.h).(item)
		if !s.currentLocked(it) {
			continue
		}
		delete(s.byKey, it.key)
		s.running++
		s.delivering++
		due = append(due, s.entryLocked(it))
	}
	if len(due) > 0 {
		s.compactLocked()
	}
	if len(s.h) == 0 {
		return due, time.Time{}
	}
	return due, time.Unix(0, s.h[0].due)
}

// fireLoop delivers due entries until done is closed.
func (s *Schedule) fireLoop(done <-chan struct{}) {
	clock := s.cfg.Clock
	timer := clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, next := s.popDue(clock.Now())
		for _, e := range due {
			if !s.deliver(e) {
				s.Release()
			}
			s.mu.Lock()
			s.delivering--
			s.mu.Unlock()
		}
		now := clock.Now()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), 0)
		}
		timer.Reset(wait)
		// Reset measures wait from the clock's time when it runs: if the
		// clock moved since now (a process pause, a fake clock's jump), the
		// timer fires late by that much. Look again at once instead.
		if clock.Since(now) >= time.Millisecond {
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
