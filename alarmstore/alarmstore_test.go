package alarmstore

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/keyspace"
)

func setup(t *testing.T) (*Store, *clientv3.Client, keyspace.Space) {
	srv := embedetcd.Test(t)
	c := embedetcd.TestClient(t, srv)
	keys := keyspace.New(embedetcd.UniquePrefix(t))
	return New(c, keys), c, keys
}

// idOf is a test object's ID.
func idOf(name string) durable.ID { return durable.IDFromName("C", name) }

func apply(t *testing.T, c *clientv3.Client, ops []clientv3.Op) {
	t.Helper()
	_, err := c.Txn(context.Background()).Then(ops...).Commit()
	require.NoError(t, err)
}

func count(t *testing.T, c *clientv3.Client, prefix string) int64 {
	t.Helper()
	resp, err := c.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	return resp.Count
}

func TestPutReplaceDeleteKeepIndexInStep(t *testing.T) {
	s, c, keys := setup(t)
	ctx := context.Background()
	r1 := Record{Class: "C", ID: idOf("a"), Name: "n", Partition: 3, Due: time.UnixMilli(1000), Scheduled: time.UnixMilli(1000)}
	apply(t, c, s.PutOps(nil, r1))
	got, err := s.Get(ctx, 3, "C", idOf("a"))
	require.NoError(t, err)
	require.Equal(t, r1, *got)
	require.EqualValues(t, 1, count(t, c, keys.DuePrefix(3)))

	r2 := r1
	r2.Due, r2.RetryCount, r2.LastError = time.UnixMilli(5000), 2, "boom"
	apply(t, c, s.PutOps(got, r2))
	got, err = s.Get(ctx, 3, "C", idOf("a"))
	require.NoError(t, err)
	require.Equal(t, r2, *got)
	var entries []Entry
	require.NoError(t, s.LoadWindow(ctx, 3, time.Time{}, time.UnixMilli(10_000), func(e Entry) { entries = append(entries, e) }))
	require.Equal(t, []Entry{{Partition: 3, Due: time.UnixMilli(5000), Class: "C", ID: idOf("a")}}, entries, "the old index entry must be gone")

	apply(t, c, s.DeleteOps(*got))
	got, err = s.Get(ctx, 3, "C", idOf("a"))
	require.NoError(t, err)
	require.Nil(t, got)
	require.Zero(t, count(t, c, keys.DuePrefix(3)))
}

func TestLoadWindowBoundsAndPages(t *testing.T) {
	s, c, _ := setup(t)
	ctx := context.Background()
	const n = pageSize*2 + 17
	var ops []clientv3.Op
	for i := 0; i < n; i++ {
		due := time.UnixMilli(int64(1000 + i))
		ops = append(ops, s.PutOps(nil, Record{Class: "C", ID: idOf(fmt.Sprintf("%05d", i)), Partition: 0, Due: due, Scheduled: due})...)
		if len(ops) >= 1000 {
			apply(t, c, ops)
			ops = nil
		}
	}
	apply(t, c, ops)
	// Another partition's alarms must not leak in.
	apply(t, c, s.PutOps(nil, Record{Class: "C", ID: idOf("other"), Partition: 1, Due: time.UnixMilli(1500), Scheduled: time.UnixMilli(1500)}))

	var got []Entry
	require.NoError(t, s.LoadWindow(ctx, 0, time.Time{}, time.UnixMilli(1000+n-1), func(e Entry) { got = append(got, e) }))
	require.Len(t, got, n)
	for i := 1; i < len(got); i++ {
		require.False(t, got[i].Due.Before(got[i-1].Due), "entries out of time order at %d", i)
	}
	got = nil
	require.NoError(t, s.LoadWindow(ctx, 0, time.UnixMilli(1009), time.UnixMilli(1019), func(e Entry) { got = append(got, e) }))
	require.Len(t, got, 10, "window (after, until] holds 1010..1019")
	require.Equal(t, time.UnixMilli(1010), got[0].Due)
	require.Equal(t, time.UnixMilli(1019), got[9].Due)
}

func TestListAndDeadLetters(t *testing.T) {
	s, c, _ := setup(t)
	ctx := context.Background()
	for i, class := range []string{"A", "B", "A"} {
		due := time.UnixMilli(int64(3000 - i*1000))
		apply(t, c, s.PutOps(nil, Record{Class: class, ID: idOf(fmt.Sprint(i)), Partition: i, Due: due, Scheduled: due}))
	}
	list := func(f ListFilter) ([]Record, string) {
		t.Helper()
		f.Partitions = 4
		if f.Limit == 0 {
			f.Limit = 100
		}
		recs, next, err := s.List(ctx, f)
		require.NoError(t, err)
		return recs, next
	}
	all, next := list(ListFilter{})
	require.Empty(t, next)
	require.Len(t, all, 3)
	require.Equal(t, idOf("2"), all[0].ID, "earliest first")
	onlyA, _ := list(ListFilter{Class: "A"})
	require.Len(t, onlyA, 2)
	first, next := list(ListFilter{Limit: 1})
	require.NotEmpty(t, next)
	require.Len(t, first, 1)
	rest, next := list(ListFilter{Limit: 5, After: next})
	require.Empty(t, next)
	require.Equal(t, all[1:], rest, "the next page starts after the first")
	before, _ := list(ListFilter{DueBefore: time.UnixMilli(2500)})
	require.Len(t, before, 2)
	for _, tok := range []string{"garbage", "dead:00000/A", "1000:A:" + idOf("0").String()} {
		_, _, err := s.List(ctx, ListFilter{Limit: 1, Partitions: 4, After: tok})
		require.ErrorIs(t, err, durable.ErrInvalidArgument, "token %q", tok)
	}

	rec := all[0]
	rec.RetryCount, rec.LastError = 6, "still failing"
	apply(t, c, append(s.DeleteOps(rec), s.DeadLetterOp(rec, time.UnixMilli(9000))))
	dead, next, err := s.ListDead(ctx, DeadFilter{Limit: 10, Partitions: 4})
	require.NoError(t, err)
	require.Empty(t, next)
	require.Len(t, dead, 1)
	require.Equal(t, "still failing", dead[0].LastError)
	require.Equal(t, time.UnixMilli(9000), dead[0].Abandoned)
	n, err := s.CountDead(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	gone, err := s.Get(ctx, rec.Partition, rec.Class, rec.ID)
	require.NoError(t, err)
	require.Nil(t, gone, "dead-lettering removes the alarm")
	counts, err := s.CountPending(ctx, 4)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 1, 0, 0}, counts)
}

// listAll pages through s.List with f until the last page, checking that no
// page is longer than f.Limit.
func listAll(t *testing.T, s *Store, f ListFilter) []Record {
	t.Helper()
	var got []Record
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5000, "paging does not end")
		page, next, err := s.List(context.Background(), f)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), f.Limit)
		got = append(got, page...)
		if next == "" {
			return got
		}
		f.After = next
	}
}

// indexOrder returns the alarms of byKey (keyed by index key) in the order a
// listing must return them: one plain range read of every partition's index,
// which etcd returns by partition and then by key, merged by the keys'
// suffixes after their partition's due prefix. Index keys with no alarm
// (not written by the runtime) are dropped.
func indexOrder(t *testing.T, c *clientv3.Client, keys keyspace.Space, byKey map[string]Record) []Record {
	t.Helper()
	resp, err := c.Get(context.Background(), keys.DuesPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	require.NoError(t, err)
	type entry struct{ key, suffix string }
	var entries []entry
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		// The due prefix is DuesPrefix, the partition's 5 digits and '/'.
		entries = append(entries, entry{k, k[len(keys.DuesPrefix())+6:]})
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].suffix < entries[j].suffix })
	var out []Record
	for _, e := range entries {
		if r, ok := byKey[e.key]; ok {
			out = append(out, r)
		}
	}
	return out
}

// TestListPagesMatchTheWholeList: paging through alarms of many partitions
// and classes, with every page size and filter, returns exactly what one
// read of the whole index returns, in etcd's order. Classes holding '.' and
// '-', which sort below the '/' after a class, are among them, and so are
// index keys not written by the runtime.
func TestListPagesMatchTheWholeList(t *testing.T) {
	s, c, keys := setup(t)
	const partitions = 8
	var ops []clientv3.Op
	byKey := map[string]Record{}
	for i := range 400 {
		class := []string{"A", "A.B", "A-B", "B"}[i%4]
		due := time.UnixMilli(int64(1000 + (i*37)%50)) // many alarms share a due time
		p := (i * 7) % partitions
		if i%3 == 0 {
			p = 0 // more than a page's share of any size, so it bounds pages
		}
		r := Record{Class: class, ID: durable.IDFromName(class, fmt.Sprint(i)), Partition: p, Due: due, Scheduled: due}
		ops = append(ops, s.PutOps(nil, r)...)
		byKey[keys.Due(p, due, class, r.ID.String())] = r
	}
	for _, k := range []string{
		keys.DuePrefix(0) + "0000000000001010/foreign",
		keys.DuePrefix(0) + "0000000000001020/A/not-an-id",
		keys.DuePrefix(2) + "-foreign", // below every due time
		keys.DuePrefix(3) + "zzz",      // above every due time
	} {
		ops = append(ops, clientv3.OpPut(k, ""))
	}
	for len(ops) > 0 {
		n := min(len(ops), 1000)
		apply(t, c, ops[:n])
		ops = ops[n:]
	}
	want := indexOrder(t, c, keys, byKey)
	require.Len(t, want, 400)
	for _, dueBefore := range []time.Time{{}, time.UnixMilli(1025)} {
		for _, class := range []string{"", "A", "A.B"} {
			var exp []Record
			for _, r := range want {
				if (class == "" || r.Class == class) && (dueBefore.IsZero() || r.Due.Before(dueBefore)) {
					exp = append(exp, r)
				}
			}
			for _, limit := range []int{1, 2, 7, 50, 500} {
				got := listAll(t, s, ListFilter{Class: class, DueBefore: dueBefore, Limit: limit, Partitions: partitions})
				require.Equal(t, exp, got, "class %q due before %v limit %d", class, dueBefore, limit)
			}
		}
	}
}

// TestListPassesForeignIndexKeys: index keys not written by the runtime,
// wherever they are, and even where a partition's read ends on one, are
// skipped without ending the listing.
func TestListPassesForeignIndexKeys(t *testing.T) {
	s, c, keys := setup(t)
	byKey := map[string]Record{}
	put := func(p int, due int64) {
		r := Record{Class: "C", ID: idOf(fmt.Sprint(p, due)), Partition: p, Due: time.UnixMilli(due), Scheduled: time.UnixMilli(due)}
		apply(t, c, s.PutOps(nil, r))
		byKey[keys.Due(p, r.Due, r.Class, r.ID.String())] = r
	}
	for i := range 40 {
		put(0, int64(1000+i))
	}
	for i := range 5 {
		put(1, int64(2000+i))
	}
	for _, k := range []string{
		// The 16th key of partition 0, where a read of 16 keys ends.
		keys.DuePrefix(0) + "0000000000001014/x",
		keys.DuePrefix(0) + "0000000000001020/C/not-an-id",
		keys.DuePrefix(1) + "-foreign", // below every due time
		keys.DuePrefix(1) + "zzz",      // above every due time
	} {
		apply(t, c, []clientv3.Op{clientv3.OpPut(k, "")})
	}
	want := indexOrder(t, c, keys, byKey)
	require.Len(t, want, 45)
	for _, limit := range []int{1, 2, 16, 100} {
		got := listAll(t, s, ListFilter{Limit: limit, Partitions: 2})
		require.Equal(t, want, got, "limit %d", limit)
	}
}

func TestDeadLettersPage(t *testing.T) {
	s, c, _ := setup(t)
	ctx := context.Background()
	for i := range 5 {
		class := []string{"A", "B"}[i%2]
		r := Record{Class: class, ID: durable.IDFromName(class, fmt.Sprint(i)), Partition: i % 3, Due: time.UnixMilli(1000), Scheduled: time.UnixMilli(1000)}
		apply(t, c, []clientv3.Op{s.DeadLetterOp(r, time.UnixMilli(int64(2000+i)))})
	}
	for _, tc := range []struct {
		class string
		want  int
	}{{"", 5}, {"A", 3}, {"B", 2}} {
		var got []DeadLetter
		after := ""
		for {
			page, next, err := s.ListDead(ctx, DeadFilter{Class: tc.class, Limit: 2, Partitions: 3, After: after})
			require.NoError(t, err)
			require.LessOrEqual(t, len(page), 2)
			got = append(got, page...)
			if next == "" {
				break
			}
			after = next
		}
		require.Len(t, got, tc.want, "class %q", tc.class)
		seen := map[durable.ID]bool{}
		for _, d := range got {
			require.False(t, seen[d.ID], "listed twice")
			seen[d.ID] = true
		}
	}
}

// countingKV counts the Gets made through it.
type countingKV struct {
	clientv3.KV
	gets atomic.Int64
}

func (k *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.gets.Add(1)
	return k.KV.Get(ctx, key, opts...)
}

// TestDeadLettersOfAClassAmongMany: listing one class's dead letters among
// many more of another lists each exactly once, in key order, reading the
// others in chunks and returning a token when a call has scanned its fill.
func TestDeadLettersOfAClassAmongMany(t *testing.T) {
	_, c, keys := setup(t)
	kv := &countingKV{KV: c}
	s := New(kv, keys)
	ctx := context.Background()
	const partitions = 4
	var ops []clientv3.Op
	var want []string
	dead := func(class string, i, p int) {
		r := Record{Class: class, ID: durable.IDFromName(class, fmt.Sprint(i)), Partition: p, Due: time.UnixMilli(1000), Scheduled: time.UnixMilli(1000)}
		ops = append(ops, s.DeadLetterOp(r, time.UnixMilli(2000)))
		if class == "A" && p < partitions {
			want = append(want, keys.Dead(p, class, r.ID.String(), r.Scheduled))
		}
	}
	// A's dead letters sort before B's in a partition: 10 in partition 0,
	// then 12,000 of B (more than one call scans), then 20 in partition 3.
	for i := range 30 {
		dead("A", i, []int{0, 3}[min(i/10, 1)])
	}
	for i := range 12_000 {
		dead("B", i, i%3)
	}
	dead("A", -1, partitions) // not of the cluster's partitions
	for len(ops) > 0 {
		n := min(len(ops), 1000)
		apply(t, c, ops[:n])
		ops = ops[n:]
	}
	sort.Strings(want)

	var got []string
	after := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 100, "paging does not end")
		before := kv.gets.Load()
		page, next, err := s.ListDead(ctx, DeadFilter{Class: "A", Limit: 7, Partitions: partitions, After: after})
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 7)
		require.LessOrEqual(t, kv.gets.Load()-before, int64(deadScan/deadChunk+1), "one round trip per chunk, and chunks up to the scan's cap")
		for _, d := range page {
			require.Equal(t, "A", d.Class)
			got = append(got, keys.Dead(d.Partition, d.Class, d.ID.String(), d.Scheduled))
		}
		if next == "" {
			break
		}
		after = next
	}
	require.Equal(t, want, got, "each of the class's dead letters once, in key order")
}

// TestPurgeDeadLetters: a purge deletes exactly what its filter selects
// (class, one object, abandoned before a time), across partitions and
// pages, and says how many.
func TestPurgeDeadLetters(t *testing.T) {
	s, c, _ := setup(t)
	ctx := context.Background()
	const partitions = 4
	// 12 dead letters: classes A and B, objects o0..o5, two scheduled
	// times each, abandoned at 1000+i.
	for i := range 12 {
		class := []string{"A", "B"}[i%2]
		id := durable.IDFromName(class, fmt.Sprint("o", i%6))
		sched := time.UnixMilli(int64(100 + i/6))
		r := Record{Class: class, ID: id, Partition: id.Partition(partitions), Due: sched, Scheduled: sched}
		apply(t, c, []clientv3.Op{s.DeadLetterOp(r, time.UnixMilli(int64(1000+i)))})
	}
	left := func() int {
		page, _, err := s.ListDead(ctx, DeadFilter{Limit: 100, Partitions: partitions})
		require.NoError(t, err)
		return len(page)
	}
	n, err := s.PurgeDead(ctx, PurgeFilter{Class: "A", ID: durable.IDFromName("A", "o0"), Partitions: partitions})
	require.NoError(t, err)
	require.EqualValues(t, 2, n, "one object's two dead letters")
	n, err = s.PurgeDead(ctx, PurgeFilter{AbandonedBefore: time.UnixMilli(1004), Partitions: partitions})
	require.NoError(t, err)
	require.EqualValues(t, 3, n, "abandoned at 1001, 1002, 1003 (1000 went with o0)")
	n, err = s.PurgeDead(ctx, PurgeFilter{Class: "B", Partitions: partitions})
	require.NoError(t, err)
	require.EqualValues(t, 4, n, "B's left: abandoned at 1005, 1007, 1009, 1011")
	require.Equal(t, 3, left(), "A's abandoned at 1004, 1008, 1010 stay")
	n, err = s.PurgeDead(ctx, PurgeFilter{Partitions: partitions})
	require.NoError(t, err)
	require.EqualValues(t, 3, n)
	require.Zero(t, left())
}
