package alarmstore

import (
	"context"
	"fmt"
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
	all, more, err := s.List(ctx, ListFilter{})
	require.NoError(t, err)
	require.False(t, more)
	require.Len(t, all, 3)
	require.Equal(t, idOf("2"), all[0].ID, "earliest first")
	onlyA, _, err := s.List(ctx, ListFilter{Class: "A"})
	require.NoError(t, err)
	require.Len(t, onlyA, 2)
	first, more, err := s.List(ctx, ListFilter{Limit: 1})
	require.NoError(t, err)
	require.True(t, more)
	require.Len(t, first, 1)
	before, _, err := s.List(ctx, ListFilter{DueBefore: time.UnixMilli(2500)})
	require.NoError(t, err)
	require.Len(t, before, 2)

	rec := all[0]
	rec.RetryCount, rec.LastError = 6, "still failing"
	apply(t, c, append(s.DeleteOps(rec), s.DeadLetterOp(rec, time.UnixMilli(9000))))
	dead, _, err := s.ListDead(ctx, "", 0)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "still failing", dead[0].LastError)
	require.Equal(t, time.UnixMilli(9000), dead[0].Abandoned)
	n, err := s.CountDead(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	gone, err := s.Get(ctx, rec.Partition, rec.Class, rec.ID)
	require.NoError(t, err)
	require.Nil(t, gone, "dead-lettering removes the alarm")
}
