package alarmstore

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/keyspace"
)

// FuzzDecode feeds the alarm record decoder arbitrary values, binary and
// JSON: it never panics, and a record it decodes encodes (binary, as stored
// now) to a value that decodes to the same record.
func FuzzDecode(f *testing.F) {
	id := durable.IDFromName("C", "a")
	seed := Record{Name: "a", Due: time.UnixMilli(5), Scheduled: time.UnixMilli(4), RetryCount: 2, LastError: "boom"}
	f.Add(encodeRecord(nil, seed))
	f.Add(encodeJSON(seed))
	f.Add(encodeRecord(nil, Record{Name: "\x82", Due: time.UnixMilli(-1), Scheduled: time.UnixMilli(1<<63 - 1), RetryCount: -1}))
	f.Add([]byte{recordVersion, 0x80})
	f.Add([]byte{recordVersion + 1})
	f.Add([]byte(`{"due_ms":-1,"scheduled_ms":9223372036854775807}`))
	f.Add([]byte(`{"name":"\x82","last_error":"\ud800"}`))
	f.Add([]byte(`{"due_ms":1e30}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, v []byte) {
		rec, err := Decode(3, "C", id, v)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "alarmstore: corrupt record") {
				t.Fatalf("Decode error %q does not say what it is", err)
			}
			return
		}
		again, err := Decode(3, "C", id, encodeRecord(nil, *rec))
		if err != nil {
			t.Fatalf("Decode(encode(%+v)): %v", rec, err)
		}
		if !sameRecord(*rec, *again) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", rec, again)
		}
	})
}

// FuzzDecodeDead feeds the dead-letter decoder arbitrary keys and values,
// binary and JSON: it never panics, skips keys the runtime does not write,
// and what it decodes survives DeadLetterOp's encoding.
func FuzzDecodeDead(f *testing.F) {
	keys := keyspace.New("/d/")
	id := durable.IDFromName("C", "a")
	s := &Store{keys: keys}
	rec := Record{Class: "C", ID: id, Name: "a", Partition: 4, Due: time.UnixMilli(9), Scheduled: time.UnixMilli(7), RetryCount: 6, LastError: "x"}
	op := s.DeadLetterOp(rec, time.UnixMilli(11))
	f.Add(strings.TrimPrefix(string(op.KeyBytes()), keys.DeadAll()), op.ValueBytes())
	f.Add(strings.TrimPrefix(string(op.KeyBytes()), keys.DeadAll()), encodeDeadJSON(rec, time.UnixMilli(11)))
	f.Add(strings.TrimPrefix(string(op.KeyBytes()), keys.DeadAll()), encodeRecord(nil, rec))
	f.Add("00004/C/"+id.String()+"/0000000000000007", []byte(`{`))
	f.Add("-0001/C/"+id.String()+"/0000000000000007", []byte(`{}`))
	f.Add("00004/C/zz/7", []byte(`{}`))
	f.Add("00004/C", []byte(`{}`))
	f.Fuzz(func(t *testing.T, rest string, v []byte) {
		d, ok, err := decodeDead(rest, v)
		if err != nil || !ok {
			return
		}
		if d.Partition < 0 {
			t.Fatalf("decodeDead(%q) gave partition %d", rest, d.Partition)
		}
		op := s.DeadLetterOp(d.Record, d.Abandoned)
		again, ok, err := decodeDead(strings.TrimPrefix(string(op.KeyBytes()), keys.DeadAll()), op.ValueBytes())
		if err != nil || !ok {
			t.Fatalf("decodeDead of DeadLetterOp(%+v): %v, %v", d, ok, err)
		}
		// The key carries the scheduled time, the value the rest.
		if !sameRecord(d.Record, again.Record) || !d.Abandoned.Equal(again.Abandoned) || d.Class != again.Class || d.ID != again.ID {
			t.Fatalf("round trip changed the dead letter:\n%+v\n%+v", d, again)
		}
	})
}

func sameRecord(a, b Record) bool {
	return a.Class == b.Class && a.ID == b.ID && a.Name == b.Name && a.Partition == b.Partition &&
		a.Due.Equal(b.Due) && a.Scheduled.Equal(b.Scheduled) && a.RetryCount == b.RetryCount && a.LastError == b.LastError
}

// FuzzRecordEncoding: what the runtime stores comes back as it was: the
// name byte for byte (it is the object's State.Name when the alarm runs),
// times to the millisecond, the retry count, the last error. So does what
// earlier versions stored as JSON, but the last error only when it is
// valid UTF-8 (it is a message, shown, never compared).
func FuzzRecordEncoding(f *testing.F) {
	f.Add("a", "boom", int64(5), int64(4), 2)
	f.Add("\x82", "\x82", int64(-1), int64(1<<63-1), 0)
	f.Add("", "", int64(0), int64(0), -1)
	f.Add("é\xff", "x", int64(1_700_000_000_000), int64(1_700_000_000_000), 6)
	f.Fuzz(func(t *testing.T, name, lastErr string, dueMS, schedMS int64, retry int) {
		id := durable.IDFromName("C", name)
		rec := Record{Class: "C", ID: id, Name: name, Partition: 1, Due: time.UnixMilli(dueMS),
			Scheduled: time.UnixMilli(schedMS), RetryCount: retry, LastError: lastErr}
		got, err := Decode(1, "C", id, encodeRecord(nil, rec))
		if err != nil {
			t.Fatal(err)
		}
		if !sameRecord(rec, *got) {
			t.Fatalf("stored and read back:\n%+v\n%+v", rec, *got)
		}
		abandoned := time.UnixMilli(dueMS ^ schedMS)
		d, err := DecodeDead(1, "C", id, encodeDead(nil, rec, abandoned))
		if err != nil || !sameRecord(rec, d.Record) || !d.Abandoned.Equal(abandoned) {
			t.Fatalf("dead letter stored and read back: %v\n%+v\n%+v", err, rec, d)
		}
		old, err := Decode(1, "C", id, encodeJSON(rec))
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.ValidString(lastErr) {
			old.LastError = lastErr
		}
		if !sameRecord(rec, *old) {
			t.Fatalf("stored as JSON and read back:\n%+v\n%+v", rec, *old)
		}
	})
}
