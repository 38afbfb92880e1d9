package node

import (
	"hash/maphash"
	"math/bits"

	"github.com/durable-run/durable"
)

// objectSet holds the table's objects, found by the identity each holds
// (class, id): an open-addressing hash set of the objects themselves. A Go
// map keyed by (class, id) stored a copy of the key beside each pointer, 105 B
// per object at 20,000 objects; this stores the pointer only, 8 B a slot
// at a load of 3/8 to 3/4 (it doubles when it reaches 3/4): 11–21 B per
// object (issue #17).
//
// Linear probing over a power-of-two array. remove leaves a tombstone, so
// each may remove what it visits; the array is rebuilt (tombstones
// dropped, grown or shrunk) only by add and compact, which each's callback
// must not call. The hash is seeded per set (hash/maphash), so IDs chosen
// to collide cannot make probes long. Not safe for concurrent use: the
// table's mu guards it.
type objectSet struct {
	seed  maphash.Seed
	slots []*object // nil: never used since the last rebuild; tomb: removed
	live  int       // objects held
	used  int       // slots not nil: objects and tombstones
}

// tomb marks a slot whose object was removed: probes go past it.
var tomb = new(object)

// minSlots is the smallest array a set holds once it holds anything.
const minSlots = 8

func newObjectSet() objectSet { return objectSet{seed: maphash.MakeSeed()} }

// slot returns where a probe for (class, id) starts. The class is left out
// of the hash: an ID is made from its class (a name's hash, a unique ID's
// checksum), so two classes' objects share an ID only by a 2^-64 chance,
// and get compares the class anyway.
func (s *objectSet) slot(id *durable.ID) int {
	return int(maphash.Bytes(s.seed, id[:]) & uint64(len(s.slots)-1))
}

// get returns the object of (class, id), nil if the set holds none.
func (s *objectSet) get(class string, id durable.ID) *object {
	if s.live == 0 {
		return nil
	}
	mask := len(s.slots) - 1
	for i := s.slot(&id); ; i = (i + 1) & mask {
		switch o := s.slots[i]; {
		case o == nil:
			return nil
		case o != tomb && o.id == id && o.class.Name == class:
			return o
		}
	}
}

// add puts o in the set, which must not hold an object of o's identity.
func (s *objectSet) add(o *object) {
	if 4*(s.used+1) > 3*len(s.slots) {
		s.rebuild(s.live + 1)
	}
	mask := len(s.slots) - 1
	for i := s.slot(&o.id); ; i = (i + 1) & mask {
		switch s.slots[i] {
		case nil:
			s.used++
			fallthrough
		case tomb:
			s.slots[i] = o
			s.live++
			return
		}
	}
}

// remove takes o out of the set if it holds o itself.
func (s *objectSet) remove(o *object) {
	if s.live == 0 {
		return
	}
	mask := len(s.slots) - 1
	for i := s.slot(&o.id); s.slots[i] != nil; i = (i + 1) & mask {
		if s.slots[i] == o {
			s.slots[i] = tomb
			s.live--
			return
		}
	}
}

// len returns how many objects the set holds.
func (s *objectSet) len() int { return s.live }

// each calls fn with every object until fn returns false. fn may remove
// objects (the one it was given or others), never add them.
func (s *objectSet) each(fn func(*object) bool) {
	for _, o := range s.slots {
		if o != nil && o != tomb && !fn(o) {
			return
		}
	}
}

// eachFrom calls fn with the objects in slots [from, from+n) and returns
// where the next call should start; wrapped reports that it reached the
// end of the array (next is then 0). fn may remove objects, never add
// them. A rebuild between calls moves objects, so a walk in several
// calls may miss or repeat some: for sweeps, which come round again.
func (s *objectSet) eachFrom(from, n int, fn func(*object)) (next int, wrapped bool) {
	end := min(from+n, len(s.slots))
	for i := from; i < end; i++ {
		if o := s.slots[i]; o != nil && o != tomb {
			fn(o)
		}
	}
	if end >= len(s.slots) {
		return 0, true
	}
	return end, false
}

// slotCount returns the size of the array (what eachFrom walks).
func (s *objectSet) slotCount() int { return len(s.slots) }

// compact shrinks the array once most of it is empty (after evictions),
// dropping the tombstones. Not to be called from each's callback.
func (s *objectSet) compact() {
	if len(s.slots) > minSlots && 8*s.live < len(s.slots) {
		s.rebuild(s.live)
	}
}

// rebuild moves the objects into a new array sized for n objects, the
// smallest power of two that keeps the load at or under 1/2, leaving the
// tombstones behind: growing at 3/4 doubles the array.
func (s *objectSet) rebuild(n int) {
	old := s.slots
	size := 0
	if n > 0 {
		size = max(minSlots, 1<<bits.Len(uint(2*n-1)))
	}
	s.slots, s.live, s.used = make([]*object, size), 0, 0
	if size == 0 {
		return
	}
	mask := size - 1
	for _, o := range old {
		if o == nil || o == tomb {
			continue
		}
		i := s.slot(&o.id)
		for s.slots[i] != nil {
			i = (i + 1) & mask
		}
		s.slots[i] = o
		s.live++
		s.used++
	}
}
