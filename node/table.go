package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/durable-run/durable"
)

// table is the node's active objects and the partitions it serves. Its
// lock makes activation and eviction race-free: an object is created only
// while its partition is served, and leaves the map only when nothing is
// queued for it, both checked under mu, where enqueueing happens too.
type table struct {
	mu       sync.Mutex
	objects  objectSet
	classes  map[string]*Class // one copy of each class its objects point to
	serving  map[int]int64     // served partitions → fencing token of the tenure
	stopping bool
	sweepAt  int           // the slot of objects the next sweep starts at
	crowded  bool          // objects take 3/4 of MaxActiveObjects or more, as of the last sweep (see object.idle)
	changed  chan struct{} // closed and replaced whenever serving changes
	wg       *sync.WaitGroup
	adm      *admission
}

func newTable(wg *sync.WaitGroup, adm *admission) *table {
	return &table{objects: newObjectSet(), classes: map[string]*Class{}, serving: map[int]int64{}, changed: make(chan struct{}), wg: wg, adm: adm}
}

func (t *table) changedLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// serve starts serving p under token; false if the node is stopping.
func (t *table) serve(p int, token int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping {
		return false
	}
	t.serving[p] = token
	t.changedLocked()
	return true
}

// unserve stops serving p (if served under token; 0: any token) and returns
// its active objects, which the caller stops.
func (t *table) unserve(p int, token int64) []*object {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.serving[p]; !ok || token != 0 && cur != token {
		return nil
	}
	delete(t.serving, p)
	t.changedLocked()
	var objs []*object
	t.objects.each(func(o *object) bool {
		if int(o.p) == p {
			objs = append(objs, o)
		}
		return true
	})
	return objs
}

// token returns the fencing token p is served under, 0 if it is not.
func (t *table) token(p int) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serving[p]
}

// local reports whether p is served here, and a channel closed at the next
// change of the served partitions.
func (t *table) local(p int) (bool, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.serving[p]
	return ok && !t.stopping, t.changed
}

// objectLocked returns the active object for (class, id), activating it if
// admission allows (alarm says the activation is for an alarm delivery,
// which the schedule bounds already: only the memory bound applies). It
// returns nil, nil if the node is stopping or does not serve p. Caller
// holds mu.
func (t *table) objectLocked(e *env, class Class, id durable.ID, p int, alarm bool) (*object, error) {
	if o := t.objects.get(class.Name, id); o != nil {
		return o, nil
	}
	if _, ok := t.serving[p]; t.stopping || !ok {
		return nil, nil
	}
	if alarm && t.objects.len() >= t.adm.maxActive {
		return nil, durable.ErrOverloaded
	}
	if !alarm {
		if err := t.adm.activate(t.objects.len()); err != nil {
			return nil, err
		}
	}
	cls := t.classes[class.Name]
	if cls == nil {
		cls = &class
		t.classes[class.Name] = cls
	}
	o := newObject(e, cls, id, p)
	t.objects.add(o)
	return o, nil
}

// enqueue puts c in the mailbox of its object, activating and waking it.
func (t *table) enqueue(e *env, class Class, id durable.ID, p int, c *call) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, err := t.objectLocked(e, class, id, p, false)
	switch {
	case err != nil:
		return err
	case o == nil:
		return fmt.Errorf("%w: partition %d is not served here", durable.ErrOwnershipLost, p)
	}
	c.seq = o.pl.arrivals.Add(1)
	if !o.push(c) {
		return withRetryAfter(fmt.Errorf("%w: %d events already queued for %s/%s", durable.ErrObjectBusy, e.cfg.QueueSize, class.Name, id), retryAfterBusy)
	}
	t.wakeLocked(o)
	return nil
}

// deliver hands an alarm to its object (activating it) unless the object
// already holds one, and reports whether it did; full reports that memory
// holds as many objects as allowed, so the alarm must wait.
func (t *table) deliver(e *env, class Class, id durable.ID, p int) (ok, full bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, err := t.objectLocked(e, class, id, p, true)
	if err != nil {
		return false, true
	}
	if o == nil {
		return false, false
	}
	if o.delivered {
		// The schedule dropped the entry it offered: the object runs its
		// alarm again when this delivery ends (releaseDelivery), instead
		// of the alarm waiting for a window reload that never comes.
		o.redeliver = true
		return false, false
	}
	o.delivered = true
	o.sig.set(sigAlarm)
	t.wakeLocked(o)
	return true, false
}

// wakeLocked starts o's goroutine if it is parked: the caller has just
// given it something to do. Caller holds mu.
func (t *table) wakeLocked(o *object) {
	if o.running || o.gone {
		return
	}
	o.running = true
	t.wg.Go(o.run)
}

// forgetLocked removes o from the map for good: it is never woken again.
// Caller holds mu.
func (t *table) forgetLocked(o *object) {
	o.gone = true
	t.objects.remove(o)
}

// sweep asks idle objects to leave memory: a parked one is evicted in
// place, a busy one evicts itself when done. One sweep looks at a share of
// the object set (sweepShare, at least sweepMinSlots slots), so a large
// table is walked about once a second rather than at every tick, and
// table.mu is held for sweepChunk slots at a time, never for the whole
// table (100,000 objects took milliseconds, every call and alarm waiting
// behind them). all walks the whole set (tests).
func (t *table) sweep(now time.Time, all bool) {
	t.mu.Lock()
	t.crowded = 4*t.objects.len() >= 3*t.adm.maxActive
	budget := max(sweepMinSlots, t.objects.slotCount()/sweepShare)
	if all {
		t.sweepAt, budget = 0, t.objects.slotCount()
	}
	t.mu.Unlock()
	visit := func(o *object) {
		switch {
		case !o.idle(now):
		case o.running:
			o.sig.set(sigEvict)
		default:
			o.evictParkedLocked()
		}
	}
	for budget > 0 {
		n := min(sweepChunk, budget)
		budget -= n
		t.mu.Lock()
		next, wrapped := t.objects.eachFrom(t.sweepAt, n, visit)
		t.sweepAt = next
		if wrapped {
			t.objects.compact()
			budget = 0
		}
		t.mu.Unlock()
	}
}

// How much of the object set a sweep looks at, and per hold of table.mu.
const (
	sweepShare    = 4
	sweepMinSlots = 4096
	sweepChunk    = 1024
)

// runningHandlers returns the waits of the handlers running now, for the
// lease guard to cancel; stopping reports instead that the node is stopping
// (its stop ends them). The objects stay, and their events fail (nothing
// of them commits unless a handler that ignores its context returns
// success while the fence still holds). mu is held for the walk, which
// must miss no object: it is rare (a lapse of the lease), and past the
// deadline the node serves nothing anyway. Handlers are taken as they were
// during the walk, so one that starts after it, under a renewed lease, is
// left alone.
func (t *table) runningHandlers() (running []*handlerWait, stopping bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping {
		return nil, true
	}
	t.objects.each(func(o *object) bool {
		if w := o.wait.Load(); w != nil && !w.done() {
			running = append(running, w)
		}
		return true
	})
	return running, false
}

// stop marks the node stopping (nothing is activated or served from now
// on) and returns every active object, which the caller stops.
func (t *table) stop() []*object {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopping = true
	clear(t.serving)
	t.changedLocked()
	objs := make([]*object, 0, t.objects.len())
	t.objects.each(func(o *object) bool {
		objs = append(objs, o)
		return true
	})
	return objs
}

func (t *table) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.objects.len()
}

func (t *table) served() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]int, 0, len(t.serving))
	for p := range t.serving {
		out = append(out, p)
	}
	return out
}

// quiet reports whether every object is parked or waits only on a handler
// that nothing will interrupt (see handlerWait.idle).
func (t *table) quiet() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	quiet := true
	t.objects.each(func(o *object) bool {
		if o.running {
			if w := o.wait.Load(); w == nil || !w.idle() {
				quiet = false
			}
		}
		return quiet
	})
	return quiet
}
