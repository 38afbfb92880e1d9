package keyspace

import (
	"sort"
	"testing"
	"time"
)

func TestDueKeysSortByTimeAndParseBack(t *testing.T) {
	s := New("/d/")
	times := []time.Time{time.UnixMilli(5), time.UnixMilli(40), time.UnixMilli(1_000), time.UnixMilli(1_700_000_000_000)}
	var keys []string
	for i := len(times) - 1; i >= 0; i-- {
		keys = append(keys, s.Due(7, times[i], "C", "id"))
	}
	sort.Strings(keys)
	for i, k := range keys {
		due, class, id, ok := s.ParseDue(7, k)
		if !ok || !due.Equal(times[i]) || class != "C" || id != "id" {
			t.Fatalf("key %q parsed as (%v, %q, %q, %v), want %v", k, due, class, id, ok, times[i])
		}
	}
	if _, _, _, ok := s.ParseDue(8, keys[0]); ok {
		t.Fatal("a key of partition 7 parsed as partition 8")
	}
}

func TestDueUntilIsInclusiveOfTheInstant(t *testing.T) {
	s := New("/d/")
	at := time.UnixMilli(1000)
	if k := s.Due(1, at, "C", "x"); !(k < s.DueUntil(1, at)) {
		t.Fatalf("entry due at t is not before DueUntil(t)")
	}
	if k := s.Due(1, at.Add(time.Millisecond), "C", "x"); k < s.DueUntil(1, at) {
		t.Fatalf("entry due after t is before DueUntil(t)")
	}
}

func TestPrefixEnd(t *testing.T) {
	for in, want := range map[string]string{"a/": "a0", "ab": "ac", "a\xff": "b", "\xff\xff": "\x00"} {
		if got := PrefixEnd(in); got != want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPartitionKeysParse(t *testing.T) {
	s := New("/x/")
	p, ok := ParsePartitionKey(s.Owner(42), s.OwnerPrefix())
	if !ok || p != 42 {
		t.Fatalf("ParsePartitionKey(%q) = %d, %v", s.Owner(42), p, ok)
	}
	if _, ok := ParsePartitionKey("/y/owner/00001", s.OwnerPrefix()); ok {
		t.Fatal("parsed a key of another prefix")
	}
}
