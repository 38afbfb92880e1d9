package alarmstore

import (
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestBinaryRecordLayout pins the stored bytes: a change of layout must
// come with a new version byte, as nodes of the old version read them.
func TestBinaryRecordLayout(t *testing.T) {
	rec := Record{Name: "ab", Scheduled: time.UnixMilli(1000), Due: time.UnixMilli(1003), RetryCount: 2, LastError: "x"}
	require.Equal(t, "01"+"01"+"02"+"6162"+"d00f"+"06"+"04"+"01"+"78", hex.EncodeToString(encodeRecord(nil, rec)))
	require.Equal(t, "01"+"01"+"02"+"6162"+"d00f"+"06"+"04"+"01"+"78"+"d40f", hex.EncodeToString(encodeDead(nil, rec, time.UnixMilli(1002))))
	fresh := Record{Name: "ab", Scheduled: time.UnixMilli(1000), Due: time.UnixMilli(1000)}
	require.Equal(t, "01"+"00"+"02"+"6162"+"d00f", hex.EncodeToString(encodeRecord(nil, fresh)), "a record that never failed stops at its scheduled time")
	require.Equal(t, "binary/v1", Format(encodeRecord(nil, rec)))
	require.Equal(t, "json", Format(encodeJSON(rec)))
	require.Equal(t, "unknown", Format([]byte{2}))
}

// TestJSONRecordsOfEarlierVersionsStillDecode: a cluster upgraded in place
// holds records and dead letters written as JSON; they read as they were
// written, a name that is not UTF-8 byte for byte.
func TestJSONRecordsOfEarlierVersionsStillDecode(t *testing.T) {
	id := idOf("a")
	for _, tc := range []struct {
		name, stored string
		want         Record
		abandoned    int64
	}{
		{"fresh", `{"name":"a","due_ms":1700000000000,"scheduled_ms":1700000000000}`,
			Record{Name: "a", Due: time.UnixMilli(1_700_000_000_000), Scheduled: time.UnixMilli(1_700_000_000_000)}, 0},
		{"retrying", `{"name":"a","due_ms":1700000004000,"scheduled_ms":1700000000000,"retry_count":3,"last_error":"upstream: 503"}`,
			Record{Name: "a", Due: time.UnixMilli(1_700_000_004_000), Scheduled: time.UnixMilli(1_700_000_000_000), RetryCount: 3, LastError: "upstream: 503"}, 0},
		{"name not UTF-8", `{"name_bytes":"gv8=","due_ms":5,"scheduled_ms":4}`,
			Record{Name: "\x82\xff", Due: time.UnixMilli(5), Scheduled: time.UnixMilli(4)}, 0},
		{"unique id", `{"due_ms":5,"scheduled_ms":5}`, Record{Due: time.UnixMilli(5), Scheduled: time.UnixMilli(5)}, 0},
		{"dead letter", `{"name":"a","due_ms":9,"scheduled_ms":7,"retry_count":6,"last_error":"x","abandoned_ms":11}`,
			Record{Name: "a", Due: time.UnixMilli(9), Scheduled: time.UnixMilli(7), RetryCount: 6, LastError: "x"}, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			want.Class, want.ID, want.Partition = "C", id, 3
			rec, err := Decode(3, "C", id, []byte(tc.stored))
			require.NoError(t, err)
			require.True(t, sameRecord(want, *rec), "%+v", rec)
			d, err := DecodeDead(3, "C", id, []byte(tc.stored))
			require.NoError(t, err)
			require.True(t, sameRecord(want, d.Record), "%+v", d)
			require.Equal(t, tc.abandoned, d.Abandoned.UnixMilli())
			// Rewritten binary, it reads the same.
			again, err := Decode(3, "C", id, encodeRecord(nil, *rec))
			require.NoError(t, err)
			require.True(t, sameRecord(*rec, *again), "%+v", again)
		})
	}
}

// TestCorruptRecordsAreRefused: a value no version wrote is an error that
// names the object, never a zero record.
func TestCorruptRecordsAreRefused(t *testing.T) {
	id := idOf("a")
	good := encodeDead(nil, Record{Name: "a", Due: time.UnixMilli(5), Scheduled: time.UnixMilli(5)}, time.UnixMilli(6))
	for name, v := range map[string][]byte{
		"empty":            {},
		"unknown version":  {2, 0, 0, 0, 0, 0},
		"no flags":         {1},
		"unknown flags":    {1, 2, 0, 0},
		"truncated name":   {1, 0, 5, 'a'},
		"truncated record": {1, 1, 1, 'a', 2},
		"trailing bytes":   append(encodeRecord(nil, Record{}), 0),
		"not JSON":         []byte(`{"due_ms":`),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(0, "C", id, v)
			require.ErrorContains(t, err, "alarmstore: corrupt record C/"+id.String())
		})
	}
	_, err := Decode(0, "C", id, good)
	require.ErrorContains(t, err, "bytes after the record", "a dead letter is not a record")
	_, err = DecodeDead(0, "C", id, good[:len(good)-1])
	require.ErrorContains(t, err, "alarmstore: corrupt dead letter", "a record is not a dead letter")
}

// TestOldAndNewRecordsInOneStore: a store holding JSON records and dead
// letters beside binary ones lists and reads both, and rewriting a JSON
// record (a retry, a new alarm) stores it binary.
func TestOldAndNewRecordsInOneStore(t *testing.T) {
	s, c, keys := setup(t)
	ctx := context.Background()
	old := Record{Class: "C", ID: idOf("old"), Name: "old", Partition: 0, Due: time.UnixMilli(5000), Scheduled: time.UnixMilli(5000)}
	ops := s.PutOps(nil, old)
	ops[len(ops)-2] = clientv3.OpPut(keys.Alarm(0, "C", old.ID.String()), string(encodeJSON(old)))
	apply(t, c, ops)
	apply(t, c, s.PutOps(nil, Record{Class: "C", ID: idOf("new"), Name: "new", Partition: 1, Due: time.UnixMilli(6000), Scheduled: time.UnixMilli(6000)}))

	page, _, err := s.List(ctx, ListFilter{Limit: 10, Partitions: 2})
	require.NoError(t, err)
	require.Len(t, page, 2)
	require.Equal(t, "old", page[0].Name)
	require.Equal(t, "new", page[1].Name)

	retried := old
	retried.RetryCount, retried.LastError, retried.Due = 1, "boom", time.UnixMilli(7000)
	apply(t, c, s.PutOps(&old, retried))
	resp, err := c.Get(ctx, keys.Alarm(0, "C", old.ID.String()))
	require.NoError(t, err)
	require.Equal(t, "binary/v1", Format(resp.Kvs[0].Value))
	got, err := s.Get(ctx, 0, "C", old.ID)
	require.NoError(t, err)
	require.True(t, sameRecord(retried, *got), "%+v", got)

	// Dead letters of both formats list side by side.
	apply(t, c, []clientv3.Op{
		clientv3.OpPut(keys.Dead(0, "C", old.ID.String(), old.Scheduled), string(encodeDeadJSON(retried, time.UnixMilli(8000)))),
		s.DeadLetterOp(Record{Class: "C", ID: idOf("new"), Name: "new", Partition: 1, Due: time.UnixMilli(6000), Scheduled: time.UnixMilli(6000), RetryCount: 5, LastError: "x"}, time.UnixMilli(9000)),
	})
	dead, _, err := s.ListDead(ctx, DeadFilter{Limit: 10, Partitions: 2})
	require.NoError(t, err)
	require.Len(t, dead, 2)
	require.True(t, sameRecord(retried, dead[0].Record), "%+v", dead[0])
	require.Equal(t, int64(8000), dead[0].Abandoned.UnixMilli())
	require.Equal(t, "new", dead[1].Name)
	require.Equal(t, 5, dead[1].RetryCount)
	require.Equal(t, int64(9000), dead[1].Abandoned.UnixMilli())
}

// BenchmarkRecordCodec is the cost of what every alarm set, fire and retry
// pays: encoding the record and decoding it again, JSON (earlier versions)
// against binary, for a fresh record and a retrying one.
func BenchmarkRecordCodec(b *testing.B) {
	now := time.UnixMilli(1_765_000_000_000)
	recs := map[string]Record{
		"fresh":    {Class: "Reminder", ID: idOf("user-42"), Name: "user-42", Due: now, Scheduled: now},
		"retrying": {Class: "Reminder", ID: idOf("user-42"), Name: "user-42", Due: now.Add(8 * time.Second), Scheduled: now, RetryCount: 3, LastError: "deliver: upstream answered 503 Service Unavailable"},
	}
	for _, kind := range []string{"fresh", "retrying"} {
		rec := recs[kind]
		b.Run("json/"+kind, func(b *testing.B) {
			var n int
			for b.Loop() {
				v := string(encodeJSON(rec))
				n = len(v)
				if _, err := Decode(0, rec.Class, rec.ID, []byte(v)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "bytes/record")
		})
		b.Run("binary/"+kind, func(b *testing.B) {
			var n int
			for b.Loop() {
				v := string(encodeRecord(nil, rec)) // as PutOps stores it
				n = len(v)
				if _, err := Decode(0, rec.Class, rec.ID, []byte(v)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n), "bytes/record")
		})
	}
}
