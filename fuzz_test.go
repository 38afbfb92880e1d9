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
