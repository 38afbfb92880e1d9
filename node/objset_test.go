package node

import (
	"math/rand/v2"
	"testing"

	"github.com/durable-run/durable"
)

// TestObjectSetAgreesWithAMap runs random adds, removes, removals during
// each and compactions against a Go map: the set holds exactly what the map
// holds, finds each object by its identity and visits each once.
func TestObjectSetAgreesWithAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := newObjectSet()
	classes := map[string]*Class{"A": {Name: "A"}, "B": {Name: "B"}}
	want := map[objKey]*object{}
	// A small pool of identities, so that adds after removes reuse them and
	// probes run over tombstones; two classes share some IDs.
	pool := make([]objKey, 300)
	for i := range pool {
		var id durable.ID
		id[0], id[1] = byte(i), byte(i>>8)
		class := "A"
		if i%7 == 0 {
			id[0], id[1] = byte(i-1), byte((i-1)>>8)
			class = "B"
		}
		pool[i] = objKey{class: class, id: id}
	}
	check := func(step int) {
		t.Helper()
		if s.len() != len(want) {
			t.Fatalf("step %d: len %d, want %d", step, s.len(), len(want))
		}
		for _, k := range pool {
			if got := s.get(k.class, k.id); got != want[k] {
				t.Fatalf("step %d: get(%v) = %p, want %p", step, k, got, want[k])
			}
		}
		seen := map[*object]int{}
		s.each(func(o *object) bool { seen[o]++; return true })
		if len(seen) != len(want) {
			t.Fatalf("step %d: each visited %d objects, want %d", step, len(seen), len(want))
		}
		for o, n := range seen {
			if n != 1 || want[keyOf(o)] != o {
				t.Fatalf("step %d: each visited %v %d times (held: %v)", step, keyOf(o), n, want[keyOf(o)] == o)
			}
		}
	}
	for step := range 20000 {
		k := pool[rng.IntN(len(pool))]
		switch r := rng.IntN(100); {
		case r < 55:
			if want[k] == nil {
				o := &object{class: classes[k.class], id: k.id}
				s.add(o)
				want[k] = o
			}
		case r < 90:
			if o := want[k]; o != nil {
				s.remove(o)
				delete(want, k)
			} else {
				s.remove(&object{class: classes[k.class], id: k.id}) // not held: a no-op
			}
		case r < 95:
			// Remove about half of what each visits, as the sweeper does.
			s.each(func(o *object) bool {
				if rng.IntN(2) == 0 {
					s.remove(o)
					delete(want, keyOf(o))
				}
				return true
			})
		default:
			s.compact()
		}
		check(step)
	}
	s.each(func(o *object) bool { s.remove(o); delete(want, keyOf(o)); return true })
	s.compact()
	check(-1)
	if len(s.slots) != 0 {
		t.Fatalf("an empty set kept %d slots after compact", len(s.slots))
	}
}

// TestObjectSetStaysWithinItsLoad checks the array's bounds: a load of at
// most 3/4 (probes always end), at least 3/8 right after it grew (it
// doubles, so a set costs at most 21 B per object), and at least 1/8
// after a compaction.
func TestObjectSetStaysWithinItsLoad(t *testing.T) {
	s := newObjectSet()
	objs := make([]*object, 10000)
	for i := range objs {
		objs[i] = numbered(i, 1)
		size := len(s.slots)
		s.add(objs[i])
		if 4*s.used > 3*len(s.slots) {
			t.Fatalf("%d objects in %d slots", s.used, len(s.slots))
		}
		if len(s.slots) != size && size > 0 && len(s.slots) != 2*size {
			t.Fatalf("grew from %d to %d slots with %d objects", size, len(s.slots), s.live)
		}
	}
	for _, o := range objs[:9900] {
		s.remove(o)
	}
	s.compact()
	if 8*s.live < len(s.slots) || s.used != s.live {
		t.Fatalf("after compact: %d objects, %d used, %d slots", s.live, s.used, len(s.slots))
	}
	for _, o := range objs[9900:] {
		if s.get("A", o.id) != o {
			t.Fatalf("lost %v", keyOf(o))
		}
	}
}

// objKey is an object's identity, the key of the map the tests check the
// set against.
type objKey struct {
	class string
	id    durable.ID
}

func keyOf(o *object) objKey { return objKey{class: o.class.Name, id: o.id} }

// numbered returns object i of class A, its ID made of i and tag.
func numbered(i int, tag byte) *object {
	var id durable.ID
	id[0], id[1], id[2] = byte(i), byte(i>>8), tag
	return &object{class: &Class{Name: "A"}, id: id}
}

// TestObjectSetWalkInChunksVisitsEachOnce: eachFrom in chunks of any size
// visits every object once per pass, also when the callback removes what
// it is given, and says where the pass ended.
func TestObjectSetWalkInChunksVisitsEachOnce(t *testing.T) {
	for _, chunk := range []int{1, 7, 64, 5000} {
		s := newObjectSet()
		objs := make([]*object, 1000)
		for i := range objs {
			objs[i] = numbered(i, 2)
			s.add(objs[i])
		}
		for pass, remove := range []bool{false, true} {
			seen := map[*object]int{}
			at, calls := 0, 0
			for {
				next, wrapped := s.eachFrom(at, chunk, func(o *object) {
					seen[o]++
					if remove && o.id[0]%2 == 0 {
						s.remove(o)
					}
				})
				calls++
				if wrapped {
					if next != 0 {
						t.Fatalf("chunk %d: wrapped at %d", chunk, next)
					}
					break
				}
				if next != at+chunk {
					t.Fatalf("chunk %d: from %d to %d", chunk, at, next)
				}
				at = next
			}
			if want := (s.slotCount() + chunk - 1) / chunk; calls != want {
				t.Fatalf("chunk %d pass %d: %d calls over %d slots", chunk, pass, calls, s.slotCount())
			}
			if len(seen) != len(objs) {
				t.Fatalf("chunk %d pass %d: saw %d of %d objects", chunk, pass, len(seen), len(objs))
			}
			for o, n := range seen {
				if n != 1 {
					t.Fatalf("chunk %d pass %d: %v seen %d times", chunk, pass, keyOf(o), n)
				}
			}
		}
		if s.len() != len(objs)/2 {
			t.Fatalf("chunk %d: %d left after removing every other", chunk, s.len())
		}
	}
}
