package alarmstore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/durable-run/durable"
)

// The values of alarm/ and dead/ are binary: a version byte, then
//
//	flags (1 byte)       recRetried
//	uvarint n, n bytes   the object's name, byte for byte (any bytes)
//	varint               the scheduled time, Unix ms
//
// and, with recRetried (a record that has failed: any of these is not zero)
//
//	varint               due − scheduled, ms
//	varint               the retry count
//	uvarint n, n bytes   the last error
//
// and a dead letter's value, one more
//
//	varint               the time it was abandoned, Unix ms
//
// varint is zigzag (binary.AppendVarint). Class, ID and partition are in the
// key. Nothing may follow the last field.
//
// Every alarm set, fire and retry rewrites the record, so its cost is paid on
// the hot path. A fresh record of a 7-byte name takes 16 bytes and ~0.4 µs to
// encode and decode, against 70 bytes and ~3.5 µs as the JSON it replaced; a
// retrying one with a 50-byte error 70 bytes and ~1 µs against 152 bytes and
// ~4.5 µs (BenchmarkRecordCodec). A protobuf message of the same fields,
// measured too, was a byte or four larger and about twice as slow (it needs
// a conversion to Record and more allocations), so the layout is written by
// hand, like the request ring's. Records written before, JSON objects
// starting with '{', are still read.
const (
	recordVersion = 1

	recRetried = 1 << 0
	recFlags   = recRetried
)

// encodeRecord appends r's stored form to b.
func encodeRecord(b []byte, r Record) []byte {
	b = slices.Grow(b, 2+4*binary.MaxVarintLen64+len(r.Name)+len(r.LastError))
	b = append(b, recordVersion)
	return appendBody(b, r)
}

// encodeDead appends the stored form of r abandoned at t to b.
func encodeDead(b []byte, r Record, t time.Time) []byte {
	b = slices.Grow(b, 2+5*binary.MaxVarintLen64+len(r.Name)+len(r.LastError))
	b = append(b, recordVersion)
	b = appendBody(b, r)
	return binary.AppendVarint(b, t.UnixMilli())
}

func appendBody(b []byte, r Record) []byte {
	sched := r.Scheduled.UnixMilli()
	// Wraps for times far apart; decoding wraps back.
	delta := r.Due.UnixMilli() - sched
	retried := delta != 0 || r.RetryCount != 0 || r.LastError != ""
	var flags byte
	if retried {
		flags |= recRetried
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(r.Name)))
	b = append(b, r.Name...)
	b = binary.AppendVarint(b, sched)
	if !retried {
		return b
	}
	b = binary.AppendVarint(b, delta)
	b = binary.AppendVarint(b, int64(r.RetryCount))
	b = binary.AppendUvarint(b, uint64(len(r.LastError)))
	return append(b, r.LastError...)
}

var errTrailing = errors.New("bytes after the record")

// reader reads the fields of a binary record.
type reader struct {
	b   []byte
	err error
}

func (r *reader) oneByte(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = fmt.Errorf("truncated %s", what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("truncated %s", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(what string) string {
	if r.err != nil {
		return ""
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(len(r.b)-k) {
		r.err = fmt.Errorf("truncated %s", what)
		return ""
	}
	s := string(r.b[k : k+int(n)])
	r.b = r.b[k+int(n):]
	return s
}

// body reads what appendBody writes into rec.
func (r *reader) body(rec *Record) {
	flags := r.oneByte("flags")
	if r.err == nil && flags&^recFlags != 0 {
		r.err = fmt.Errorf("unknown flags %#x", flags)
	}
	rec.Name = r.bytes("name")
	sched := r.varint("scheduled time")
	var delta, retry int64
	rec.LastError = ""
	if flags&recRetried != 0 {
		delta = r.varint("due time")
		retry = r.varint("retry count")
		rec.LastError = r.bytes("last error")
	}
	if r.err == nil && (retry < math.MinInt || retry > math.MaxInt) {
		r.err = fmt.Errorf("retry count %d out of range", retry)
	}
	rec.Scheduled, rec.Due, rec.RetryCount = time.UnixMilli(sched), time.UnixMilli(sched+delta), int(retry)
}

// isBinary reports whether v is a binary record (of any version), as
// opposed to the JSON of earlier versions, which starts with '{' (or JSON
// white space; "null" decoded to a zero record too).
func isBinary(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	switch c := v[0]; c {
	case ' ', '\t', '\r', '\n':
		return false
	default:
		return c < 0x20
	}
}

// Decode parses the stored record of object class/id in partition p, binary
// or the JSON of earlier versions.
func Decode(p int, class string, id durable.ID, v []byte) (*Record, error) {
	rec := Record{Class: class, ID: id, Partition: p}
	if err := decodeValue(v, &rec, nil); err != nil {
		return nil, fmt.Errorf("alarmstore: corrupt record %s/%s: %w", class, id, err)
	}
	return &rec, nil
}

// DecodeDead parses the stored dead letter of object class/id in partition
// p, binary or the JSON of earlier versions.
func DecodeDead(p int, class string, id durable.ID, v []byte) (*DeadLetter, error) {
	d := DeadLetter{Record: Record{Class: class, ID: id, Partition: p}}
	if err := decodeValue(v, &d.Record, &d.Abandoned); err != nil {
		return nil, fmt.Errorf("alarmstore: corrupt dead letter %s/%s: %w", class, id, err)
	}
	return &d, nil
}

// decodeValue fills rec (and *abandoned, for a dead letter) from v.
func decodeValue(v []byte, rec *Record, abandoned *time.Time) error {
	if !isBinary(v) {
		var j deadJSON
		if err := json.Unmarshal(v, &j); err != nil {
			return err
		}
		j.fill(rec)
		if abandoned != nil {
			*abandoned = time.UnixMilli(j.AbandonedMS)
		}
		return nil
	}
	if v[0] != recordVersion {
		return fmt.Errorf("unknown version %d", v[0])
	}
	r := reader{b: v[1:]}
	r.body(rec)
	if abandoned != nil {
		*abandoned = time.UnixMilli(r.varint("abandoned time"))
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = errTrailing
	}
	return r.err
}

// Format names the encoding of a stored alarm record or dead letter, for
// operators: "binary/v1", "json" (written before binary records), or
// "unknown".
func Format(v []byte) string {
	switch {
	case !isBinary(v):
		if json.Valid(v) {
			return "json"
		}
		return "unknown"
	case v[0] == recordVersion:
		return fmt.Sprintf("binary/v%d", recordVersion)
	default:
		return "unknown"
	}
}

// recordJSON is a record as stored before binary records; still read.
type recordJSON struct {
	Name string `json:"name,omitempty"`
	// NameBytes held a name that is not valid UTF-8 (JSON would replace
	// its bad bytes with U+FFFD), in base64.
	NameBytes  []byte `json:"name_bytes,omitempty"`
	DueMS      int64  `json:"due_ms"`
	ScheduleMS int64  `json:"scheduled_ms"`
	Retry      int    `json:"retry_count,omitempty"`
	LastError  string `json:"last_error,omitempty"`
}

// deadJSON is a dead letter as stored before binary records; a record's
// JSON is one without abandoned_ms.
type deadJSON struct {
	recordJSON
	AbandonedMS int64 `json:"abandoned_ms"`
}

// jsonOf is r as the JSON of earlier versions stores it (WithFormat).
func jsonOf(r Record) recordJSON {
	j := recordJSON{
		Name: r.Name, DueMS: r.Due.UnixMilli(), ScheduleMS: r.Scheduled.UnixMilli(),
		Retry: r.RetryCount, LastError: r.LastError,
	}
	if !utf8.ValidString(r.Name) {
		j.Name, j.NameBytes = "", []byte(r.Name)
	}
	return j
}

// encodeJSON is r's value as earlier versions stored it.
func encodeJSON(r Record) []byte {
	b, _ := json.Marshal(jsonOf(r))
	return b
}

// encodeDeadJSON is a dead letter's value as earlier versions stored it.
func encodeDeadJSON(r Record, t time.Time) []byte {
	b, _ := json.Marshal(deadJSON{recordJSON: jsonOf(r), AbandonedMS: t.UnixMilli()})
	return b
}

// fill sets the fields of rec that j stores.
func (j recordJSON) fill(rec *Record) {
	rec.Name = j.Name
	if j.NameBytes != nil {
		rec.Name = string(j.NameBytes)
	}
	rec.Due, rec.Scheduled = time.UnixMilli(j.DueMS), time.UnixMilli(j.ScheduleMS)
	rec.RetryCount, rec.LastError = j.Retry, j.LastError
}
