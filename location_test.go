package durable

import (
	"errors"
	"fmt"
	"testing"
)

func TestLayoutKeepsUnlocatedIDsWherePartitionPutsThem(t *testing.T) {
	l := NewLayout(256, []string{"dc1", "dc2"})
	for i := range 2000 {
		for _, id := range []ID{NewUniqueID("C"), IDFromName("C", fmt.Sprint(i))} {
			if got, want := l.Partition(id), id.Partition(256); got != want {
				t.Fatalf("%s: layout partition %d, plain %d: objects made before hints would move", id, got, want)
			}
			if id.Located("C") || l.Location(id) != "" {
				t.Fatalf("%s reads as located", id)
			}
			if err := l.Check("C", id); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestLocatedIDsLiveInTheirDataCenter(t *testing.T) {
	layouts := map[string]Layout{
		"even":     NewLayout(256, []string{"dc1", "dc2"}),
		"uneven":   NewLayout(10, []string{"dc1", "dc2", "dc3"}),
		"weighted": NewLayout(12, []string{"dc1", "dc1", "dc2"}),
	}
	for name, l := range layouts {
		t.Run(name, func(t *testing.T) {
			for _, dc := range []string{"dc1", "dc2"} {
				homed := map[int]bool{}
				for p := range l.Partitions() {
					if l.Homes()[p%len(l.Homes())] == dc {
						homed[p] = true
					}
				}
				hit := map[int]bool{}
				for i := range 3000 {
					for _, id := range []ID{NewUniqueID("C", WithLocation(dc)), IDFromName("C", fmt.Sprint(i), WithLocation(dc))} {
						p := l.Partition(id)
						if !homed[p] {
							t.Fatalf("%s located in %s went to partition %d, homed in %s", id, dc, p, l.Homes()[p%len(l.Homes())])
						}
						hit[p] = true
						if !id.Located("C") || l.Location(id) != dc || l.Check("C", id) != nil {
							t.Fatalf("%s: located %v, location %q, check %v", id, id.Located("C"), l.Location(id), l.Check("C", id))
						}
					}
				}
				if len(hit) != len(homed) {
					t.Fatalf("located IDs used %d of the %d partitions homed in %s", len(hit), len(homed), dc)
				}
			}
		})
	}
}

func TestLocationIsPartOfTheDerivation(t *testing.T) {
	plain := IDFromName("Room", "r1")
	in1, in2 := IDFromName("Room", "r1", WithLocation("dc1")), IDFromName("Room", "r1", WithLocation("dc2"))
	if in1 != IDFromName("Room", "r1", WithLocation("dc1")) {
		t.Fatal("the same name and hint gave different IDs")
	}
	if in1 == plain || in1 == in2 || in2 == plain {
		t.Fatal("a hint must give another object")
	}
	if IDFromName("Room", "r1", WithLocation("")) != plain {
		t.Fatal("an empty hint is no hint")
	}
	for _, id := range []ID{in1, NewUniqueID("Room", WithLocation("dc2"))} {
		got, err := IDFromString("Room", id.String())
		if err != nil || got != id {
			t.Fatalf("round trip of a located ID: %v, %s → %s", err, id, got)
		}
		if _, err := IDFromString("Chat", id.String()); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("a located ID of Room parsed as Chat: %v", err)
		}
	}
}

func TestLayoutRefusesUnknownLocations(t *testing.T) {
	l := NewLayout(4, []string{"dc1", "dc2"})
	if err := l.CheckLocation("dc3"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("CheckLocation(dc3) = %v", err)
	}
	for _, dc := range []string{"", "dc1", "dc2"} {
		if err := l.CheckLocation(dc); err != nil {
			t.Fatalf("CheckLocation(%q) = %v", dc, err)
		}
	}
	id := NewUniqueID("C", WithLocation("dc3"))
	if err := l.Check("C", id); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("an ID located in dc3 passed: %v", err)
	}
	// A data center listed as a home but with no partition (more homes
	// than partitions) cannot take a hint either.
	small := NewLayout(1, []string{"dc1", "dc2"})
	if err := small.CheckLocation("dc2"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("CheckLocation(dc2) with no partition homed there = %v", err)
	}
	if p := small.Partition(NewUniqueID("C", WithLocation("dc2"))); p != 0 {
		t.Fatalf("partition %d of 1", p)
	}
}
