package keyspace

import (
	"fmt"
	"math"
	"sort"
	"strings"
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

func TestParseSplitsEveryKindOfKey(t *testing.T) {
	s := New("/d/")
	id := strings.Repeat("ab", 32)
	at := time.UnixMilli(1_700_000_000_000)
	for _, tc := range []struct {
		key  string
		want Key
	}{
		{s.Meta(), Key{Kind: KindMeta}},
		{s.Classes(), Key{Kind: KindClasses}},
		{s.Node("n1"), Key{Kind: KindNode, Node: "n1"}},
		{s.LeaderRecord("dc1"), Key{Kind: KindLeader, DC: "dc1"}},
		{s.Election("dc1") + "694d", Key{Kind: KindElection, DC: "dc1", Lease: "694d"}},
		{s.Lost("n1", "dc2"), Key{Kind: KindLost, Node: "n1", DC: "dc2"}},
		{s.Assign(7), Key{Kind: KindAssign, Partition: 7}},
		{s.Owner(7), Key{Kind: KindOwner, Partition: 7}},
		{s.Object(7, "C", id), Key{Kind: KindObject, Partition: 7, Class: "C", ID: id}},
		{s.Alarm(7, "C", id), Key{Kind: KindAlarm, Partition: 7, Class: "C", ID: id}},
		{s.Requests(7, "C", id), Key{Kind: KindRequests, Partition: 7, Class: "C", ID: id}},
		{s.DataPrefix(7, "C", id) + "k/1", Key{Kind: KindData, Partition: 7, Class: "C", ID: id, Data: "k/1"}},
		{s.Due(7, at, "C", id), Key{Kind: KindDue, Partition: 7, Class: "C", ID: id, Time: at}},
		{s.Dead(7, "C", id, at), Key{Kind: KindDead, Partition: 7, Class: "C", ID: id, Time: at}},
	} {
		t.Run(string(tc.want.Kind), func(t *testing.T) {
			got, ok := s.Parse(tc.key)
			if !ok || got.Kind != tc.want.Kind || got.Partition != tc.want.Partition || got.Class != tc.want.Class ||
				got.ID != tc.want.ID || !got.Time.Equal(tc.want.Time) || got.Node != tc.want.Node || got.DC != tc.want.DC ||
				got.Lease != tc.want.Lease || got.Data != tc.want.Data {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tc.key, got, ok, tc.want)
			}
		})
	}
	for _, bad := range []string{"/e/meta/cluster", "/d/other/x", "/d/owner/7", "/d/alarm/00007/C", "/d/due/00007/5/C/" + id, "/d/nodes/", "/d/req/00007//" + id} {
		if k, ok := s.Parse(bad); ok {
			t.Errorf("Parse(%q) = %+v, want refused", bad, k)
		}
	}
}

func TestPaddedAgreesWithFmt(t *testing.T) {
	for _, v := range []uint64{0, 1, 9, 10, 255, 99999, 100000, 1733472000000, maxMillis, math.MaxUint64} {
		for _, w := range []int{1, 5, millisDigits, 20} {
			if got, want := padded(v, w), fmt.Sprintf("%0*d", w, v); got != want {
				t.Errorf("padded(%d, %d) = %q, want %q", v, w, got, want)
			}
		}
	}
	if got := part(-3); got != "-0003" {
		t.Errorf("part(-3) = %q", got)
	}
}
