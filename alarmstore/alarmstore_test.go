package alarmstore

import (
	"context"
	"fmt"
	"sort"
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
	_, _, err := s.List(ctx, ListFilter{Limit: 1, Partitions: 4, After: "garbage"})
	require.ErrorIs(t, err, durable.ErrInvalidArgument)

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

// TestListPagesMatchTheWholeList: paging through alarms of many partitions
// and classes, with every page size and filter, returns exactly what one
// sorted read of everything returns, in the same order.
func TestListPagesMatchTheWholeList(t *testing.T) {
	s, c, _ := setup(t)
	ctx := context.Background()
	const partitions = 8
	var ops []clientv3.Op
	var want []Record
	for i := range 120 {
		class := []string{"A", "B", "C"}[i%3]
		due := time.UnixMilli(int64(1000 + (i*37)%50)) // many alarms share a due time
		r := Record{Class: class, ID: durable.IDFromName(class, fmt.Sprint(i)), Partition: (i * 7) % partitions, Due: due, Scheduled: due}
		ops = append(ops, s.PutOps(nil, r)...)
		want = append(want, r)
	}
	apply(t, c, ops)
	sort.Slice(want, func(i, j int) bool {
		a, b := position{want[i].Due, want[i].Class, want[i].ID}, position{want[j].Due, want[j].Class, want[j].ID}
		return a.less(b)
	})
	for _, class := range []string{"", "B"} {
		for _, limit := range []int{1, 2, 7, 50, 500} {
			var got []Record
			after := ""
			for pages := 0; ; pages++ {
				require.Less(t, pages, 1000, "paging does not end")
				page, next, err := s.List(ctx, ListFilter{Class: class, Limit: limit, Partitions: partitions, After: after})
				require.NoError(t, err)
				require.LessOrEqual(t, len(page), limit)
				got = append(got, page...)
				if next == "" {
					break
				}
				after = next
			}
			var exp []Record
			for _, r := range want {
				if class == "" || r.Class == class {
					exp = append(exp, r)
				}
			}
			require.Equal(t, exp, got, "class %q limit %d", class, limit)
		}
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
