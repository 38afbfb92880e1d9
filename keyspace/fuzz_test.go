package keyspace

import (
	"strings"
	"testing"
	"time"
)

// FuzzDueKey checks the due-time index encoding: a key parses back to what
// it was made of, and byte order of keys is time order (strict within
// [epoch, MaxTime], never contradicting it outside, where times clamp).
func FuzzDueKey(f *testing.F) {
	f.Add(7, int64(0), int64(1), "C", "id")
	f.Add(0, int64(1_700_000_000_000), int64(1_700_000_000_001), "Batcher", strings.Repeat("ab", 32))
	f.Add(99999, int64(maxMillis), int64(maxMillis+1), "a.b-c_d", "x/y")
	f.Add(3, int64(-1), int64(0), "C", "")
	f.Add(3, int64(-1<<63), int64(1<<63-1), "C", "\xff")
	f.Add(12, int64(999_999_999_999_999), int64(1_000_000_000_000_000), "C", "id")
	f.Fuzz(func(t *testing.T, p int, ms1, ms2 int64, class, id string) {
		if p < 0 || p > 99999 || class == "" || strings.Contains(class, "/") {
			t.Skip("not a partition or class the runtime writes")
		}
		s := New("/d/")
		t1, t2 := time.UnixMilli(ms1), time.UnixMilli(ms2)
		k1, k2 := s.Due(p, t1, class, id), s.Due(p, t2, class, id)
		inRange := func(ms int64) bool { return ms >= 0 && ms <= maxMillis }
		for _, c := range []struct {
			ms  int64
			key string
		}{{ms1, k1}, {ms2, k2}} {
			due, gotClass, gotID, ok := s.ParseDue(p, c.key)
			if !ok || gotClass != class || gotID != id {
				t.Fatalf("ParseDue(%q) = (%v, %q, %q, %v), want (%q, %q)", c.key, due, gotClass, gotID, ok, class, id)
			}
			if inRange(c.ms) && due.UnixMilli() != c.ms {
				t.Fatalf("ParseDue(%q) = %d ms, want %d", c.key, due.UnixMilli(), c.ms)
			}
			if !inRange(c.ms) && due.UnixMilli() != max(0, min(c.ms, maxMillis)) {
				t.Fatalf("out-of-range %d ms encoded as %d, want it clamped", c.ms, due.UnixMilli())
			}
			if again := s.Due(p, due, class, id); again != c.key {
				t.Fatalf("Due(ParseDue(%q)) = %q", c.key, again)
			}
			if _, _, _, ok := s.ParseDue(p+1, c.key); ok {
				t.Fatalf("key %q of partition %d parsed as partition %d", c.key, p, p+1)
			}
		}
		// Same class and id: the time decides the order.
		switch {
		case ms1 < ms2 && k1 > k2, ms1 > ms2 && k1 < k2:
			t.Fatalf("order: %d vs %d ms gave keys %q vs %q", ms1, ms2, k1, k2)
		case inRange(ms1) && inRange(ms2) && (ms1 < ms2) != (k1 < k2):
			t.Fatalf("in range, %d < %d ms but keys %q < %q is %v", ms1, ms2, k1, k2, k1 < k2)
		}
		// DueUntil(t) ends the window at t: entries due at or before t are
		// inside, later ones outside (times as stored, that is clamped; a
		// window ending before the epoch is never read).
		if ms1 >= 0 {
			inside := s.Due(p, t2, class, id) < s.DueUntil(p, t1)
			if want := max(0, min(ms2, maxMillis)) <= ms1; inside != want {
				t.Fatalf("DueUntil(%d ms) = %q, entry at %d ms %q: inside = %v, want %v", ms1, s.DueUntil(p, t1), ms2, k2, inside, want)
			}
		}
	})
}

// FuzzParseDue feeds ParseDue arbitrary keys: it never panics, and what it
// accepts is exactly what Due writes.
func FuzzParseDue(f *testing.F) {
	s := New("/d/")
	f.Add(s.Due(1, time.UnixMilli(5), "C", "id"))
	f.Add("/d/due/00001/+000000000000005/C/id")
	f.Add("/d/due/00001/-000000000000005/C/id")
	f.Add("/d/due/00001/00000000000000005/C/id")
	f.Add("/d/due/00001/0000000000000005/C")
	f.Add("/d/due/00001/")
	f.Fuzz(func(t *testing.T, key string) {
		due, class, id, ok := s.ParseDue(1, key)
		if ok && s.Due(1, due, class, id) != key {
			t.Fatalf("ParseDue(%q) accepted a key Due does not write: %q", key, s.Due(1, due, class, id))
		}
	})
}

// FuzzParsePartitionKey: no panic, never a negative partition, and the keys
// the runtime writes parse back.
func FuzzParsePartitionKey(f *testing.F) {
	f.Add("/x/owner/00042", 42)
	f.Add("/x/owner/-0001", 0)
	f.Add("/x/owner/+1", 0)
	f.Add("/x/owner/99999999999999999999", 0)
	f.Add("/x/owner/", 99999)
	f.Fuzz(func(t *testing.T, key string, p int) {
		s := New("/x/")
		if got, ok := ParsePartitionKey(key, s.OwnerPrefix()); ok && got < 0 {
			t.Fatalf("ParsePartitionKey(%q) = %d", key, got)
		}
		if p < 0 || p > 99999 {
			return
		}
		if got, ok := ParsePartitionKey(s.Owner(p), s.OwnerPrefix()); !ok || got != p {
			t.Fatalf("ParsePartitionKey(Owner(%d)) = %d, %v", p, got, ok)
		}
	})
}

// build is the key of k by the builder of its kind.
func build(s Space, k Key) string {
	switch k.Kind {
	case KindMeta:
		return s.Meta()
	case KindClasses:
		return s.Classes()
	case KindNode:
		return s.Node(k.Node)
	case KindLeader:
		return s.LeaderRecord(k.DC)
	case KindElection:
		return s.Election(k.DC) + k.Lease
	case KindLost:
		return s.Lost(k.Node, k.DC)
	case KindAssign:
		return s.Assign(k.Partition)
	case KindOwner:
		return s.Owner(k.Partition)
	case KindObject:
		return s.Object(k.Partition, k.Class, k.ID)
	case KindAlarm:
		return s.Alarm(k.Partition, k.Class, k.ID)
	case KindRequests:
		return s.Requests(k.Partition, k.Class, k.ID)
	case KindData:
		return s.DataPrefix(k.Partition, k.Class, k.ID) + k.Data
	case KindDue:
		return s.Due(k.Partition, k.Time, k.Class, k.ID)
	case KindDead:
		return s.Dead(k.Partition, k.Class, k.ID, k.Time)
	}
	return ""
}

// FuzzParseKey: any key Parse accepts is what the builder of its kind
// writes from its components, and every builder's key parses back to its
// kind.
func FuzzParseKey(f *testing.F) {
	s := New("/d/")
	id := strings.Repeat("ab", 32)
	for _, k := range []string{
		s.Meta(), s.Classes(), s.Node("n1"), s.LeaderRecord("dc1"), s.Election("dc1") + "694d", s.Lost("n1", "dc2"),
		s.Assign(3), s.Owner(100000), s.Object(3, "C", id), s.Alarm(3, "C", id), s.Requests(3, "C", id),
		s.DataPrefix(3, "C", id) + "a/b", s.Due(3, time.UnixMilli(5), "C", id), s.Dead(3, "C", id, time.UnixMilli(5)),
		"/d/owner/3", "/d/due/00003/5/C/" + id, "/d/nodes/", "/d/other/x", "/e/meta/cluster",
	} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		k, ok := s.Parse(key)
		if !ok {
			return
		}
		if again := build(s, k); again != key {
			t.Fatalf("Parse(%q) = %+v, which builds %q", key, k, again)
		}
		if back, ok := s.Parse(build(s, k)); !ok || back.Kind != k.Kind {
			t.Fatalf("%q does not parse back to %s", key, k.Kind)
		}
	})
}
