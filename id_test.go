package durable

import (
	"errors"
	"strings"
	"testing"
)

func TestIDFromNameIsDeterministicAndClassBound(t *testing.T) {
	a := IDFromName("Batcher", "foo")
	if a != IDFromName("Batcher", "foo") {
		t.Fatal("same class and name gave different IDs")
	}
	if a == IDFromName("Batcher", "bar") {
		t.Fatal("different names gave the same ID")
	}
	if a == IDFromName("Counter", "foo") {
		t.Fatal("different classes gave the same ID")
	}
	// "ab"+"c" vs "a"+"bc" must not collide through concatenation.
	if IDFromName("ab", "c") == IDFromName("a", "bc") {
		t.Fatal("class/name boundary is ambiguous")
	}
}

func TestIDRoundTrip(t *testing.T) {
	for _, id := range []ID{IDFromName("Counter", "x"), NewUniqueID("Counter")} {
		s := id.String()
		if len(s) != 64 || strings.ToLower(s) != s {
			t.Fatalf("String() = %q, want 64 lowercase hex digits", s)
		}
		got, err := IDFromString("Counter", s)
		if err != nil {
			t.Fatalf("IDFromString(%q): %v", s, err)
		}
		if got != id {
			t.Fatalf("round trip changed the ID: %s → %s", id, got)
		}
	}
	if NewUniqueID("Counter") == NewUniqueID("Counter") {
		t.Fatal("two unique IDs are equal")
	}
}

func TestIDFromStringRejects(t *testing.T) {
	good := IDFromName("Counter", "x").String()
	flipped := []byte(good)
	if flipped[0] == '0' {
		flipped[0] = '1'
	} else {
		flipped[0] = '0'
	}
	tests := map[string]string{
		"empty":         "",
		"too short":     good[:63],
		"too long":      good + "0",
		"uppercase":     strings.ToUpper(good),
		"not hex":       "g" + good[1:],
		"bad checksum":  string(flipped),
		"foreign class": IDFromName("Batcher", "x").String(),
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := IDFromString("Counter", s)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("IDFromString(%q) = %v, want ErrInvalidArgument", s, err)
			}
		})
	}
}

func TestPartitionIsStableAndSpread(t *testing.T) {
	const n = 16
	counts := make([]int, n)
	for i := 0; i < 1600; i++ {
		id := NewUniqueID("C")
		p := id.Partition(n)
		if p != id.Partition(n) || p < 0 || p >= n {
			t.Fatalf("partition %d unstable or out of range", p)
		}
		counts[p]++
	}
	for p, c := range counts {
		if c == 0 {
			t.Fatalf("partition %d got no IDs out of 1600: %v", p, counts)
		}
	}
}
