package durable

import (
	"errors"
	"strings"
	"testing"
)

// FuzzIDFromString feeds the ID parser arbitrary text: it never panics, it
// refuses with ErrInvalidArgument, and what it accepts is the ID's own form.
func FuzzIDFromString(f *testing.F) {
	f.Add("Batcher", IDFromName("Batcher", "foo").String())
	f.Add("Counter", IDFromName("Batcher", "foo").String())
	f.Add("Batcher", strings.ToUpper(IDFromName("Batcher", "foo").String()))
	f.Add("Batcher", strings.Repeat("0", 64))
	f.Add("Batcher", strings.Repeat("g", 64))
	f.Add("Batcher", strings.Repeat("\x82", 64))
	f.Add("", "")
	f.Add("B", strings.Repeat("é", 32))
	f.Fuzz(func(t *testing.T, class, s string) {
		id, err := IDFromString(class, s)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("IDFromString(%q, %q) = %v, not an ErrInvalidArgument", class, s, err)
			}
			if id != (ID{}) {
				t.Fatalf("IDFromString(%q, %q) failed but returned %s", class, s, id)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("IDFromString(%q, %q) = %s: not the form it parsed", class, s, id)
		}
	})
}

// FuzzIDFromName: the ID of any class and name parses back under its class
// (and, its checksum being per class, under no other in practice).
func FuzzIDFromName(f *testing.F) {
	f.Add("Batcher", "foo")
	f.Add("", "")
	f.Add("a\x00b", "c")
	f.Add("Batcher", "\x82\xff")
	f.Fuzz(func(t *testing.T, class, name string) {
		id := IDFromName(class, name)
		got, err := IDFromString(class, id.String())
		if err != nil || got != id {
			t.Fatalf("IDFromString(%q, IDFromName(%q, %q)) = %s, %v", class, class, name, got, err)
		}
		if _, err := IDFromString(class+"x", id.String()); err == nil {
			t.Fatalf("the ID of %q/%q was taken for class %q", class, name, class+"x")
		}
		if id.Partition(7) < 0 || id.Partition(7) >= 7 {
			t.Fatalf("Partition(7) = %d", id.Partition(7))
		}
	})
}

// FuzzLayout: any ID, hinted or not, maps to a partition in range; one
// hinted for a home of the layout lands on a partition homed there, and the
// layout accepts it; one hinted elsewhere is refused by Check.
func FuzzLayout(f *testing.F) {
	f.Add("C", "n", "dc2", uint8(16), "dc1,dc2")
	f.Add("C", "n", "dc3", uint8(5), "dc1,dc2,dc3,dc4,dc5,dc6")
	f.Add("C", "", "", uint8(1), "dc1")
	f.Add("C", "n", "a", uint8(7), "a,a,b")
	f.Fuzz(func(t *testing.T, class, name, dc string, partitions uint8, homeList string) {
		if partitions == 0 || homeList == "" {
			return
		}
		homes := strings.Split(homeList, ",")
		l := NewLayout(int(partitions), homes)
		for _, id := range []ID{IDFromName(class, name, WithLocation(dc)), NewUniqueID(class, WithLocation(dc))} {
			p := l.Partition(id)
			if p < 0 || p >= int(partitions) {
				t.Fatalf("partition %d of %d", p, partitions)
			}
			switch err := l.CheckLocation(dc); {
			case dc == "" && id.Located(class):
				t.Fatalf("an empty hint made a located ID")
			case err == nil && dc != "":
				if home := homes[p%len(homes)]; home != dc {
					t.Fatalf("%s located in %s went to partition %d, homed in %s", id, dc, p, home)
				}
				if l.Check(class, id) != nil || l.Location(id) != dc {
					t.Fatalf("%s: check %v, location %q", id, l.Check(class, id), l.Location(id))
				}
			case err != nil:
				if !errors.Is(err, ErrInvalidArgument) || !errors.Is(l.Check(class, id), ErrInvalidArgument) {
					t.Fatalf("%s hinted for %q: CheckLocation %v, Check %v", id, dc, err, l.Check(class, id))
				}
			}
		}
	})
}
