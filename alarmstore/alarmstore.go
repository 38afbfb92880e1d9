package alarmstore

import (
	"context"
	"encoding/hex"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/keyspace"
)

// Record is an object's pending alarm.
type Record struct {
	Class     string
	ID        durable.ID
	Name      string
	Partition int
	// Due is when the alarm runs next: the scheduled time, or the time of
	// the next retry after a failure.
	Due time.Time
	// Scheduled is the time the alarm was set for.
	Scheduled time.Time
	// RetryCount is the number of failed runs so far.
	RetryCount int
	// LastError is the error of the last failed run.
	LastError string
}

// DeadLetter is an alarm abandoned after its last retry.
type DeadLetter struct {
	Record
	Abandoned time.Time
}

// Store reads and builds alarm records under one key space.
type Store struct {
	kv   clientv3.KV
	keys keyspace.Space
	// binary says whether records may be written binary; nil: always.
	binary func() bool
}

// New returns a Store over kv. It writes binary records; see WithFormat.
func New(kv clientv3.KV, keys keyspace.Space) *Store { return &Store{kv: kv, keys: keys} }

// WithFormat returns a Store that writes records binary only while binary
// reports true, and as the JSON of earlier versions otherwise: while a
// rolling upgrade runs, nodes of an earlier version, which read JSON only,
// may still own the partitions written (placement.Member.BinaryRecords).
func (s *Store) WithFormat(binary func() bool) *Store {
	c := *s
	c.binary = binary
	return &c
}

func (s *Store) encodeRecord(r Record) string {
	if s.binary == nil || s.binary() {
		return string(encodeRecord(nil, r))
	}
	return string(encodeJSON(r))
}

func (s *Store) encodeDead(r Record, t time.Time) string {
	if s.binary == nil || s.binary() {
		return string(encodeDead(nil, r, t))
	}
	return string(encodeDeadJSON(r, t))
}

// parseID decodes the hex form of an ID in one of our keys. The checksum is
// not verified: the key was written by the runtime, and index reads happen
// for every alarm on a failover.
func parseID(s string) (durable.ID, bool) {
	var id durable.ID
	if len(s) != 2*len(id) {
		return id, false
	}
	_, err := hex.Decode(id[:], []byte(s))
	return id, err == nil
}

// PutOps writes rec, replacing old (nil when the object had no alarm).
func (s *Store) PutOps(old *Record, rec Record) []clientv3.Op {
	ops := make([]clientv3.Op, 0, 3)
	id := rec.ID.String()
	newDue := s.keys.Due(rec.Partition, rec.Due, rec.Class, id)
	if old != nil {
		if oldDue := s.keys.Due(old.Partition, old.Due, old.Class, old.ID.String()); oldDue != newDue {
			ops = append(ops, clientv3.OpDelete(oldDue))
		}
	}
	return append(ops,
		clientv3.OpPut(s.keys.Alarm(rec.Partition, rec.Class, id), s.encodeRecord(rec)),
		clientv3.OpPut(newDue, ""))
}

// DeleteOps removes old and its index entry.
func (s *Store) DeleteOps(old Record) []clientv3.Op {
	id := old.ID.String()
	return []clientv3.Op{
		clientv3.OpDelete(s.keys.Alarm(old.Partition, old.Class, id)),
		clientv3.OpDelete(s.keys.Due(old.Partition, old.Due, old.Class, id)),
	}
}

// DeadLetterOp records old as abandoned at t. The caller deletes old (with
// DeleteOps, or by replacing it) in the same Txn.
func (s *Store) DeadLetterOp(old Record, t time.Time) clientv3.Op {
	return clientv3.OpPut(s.keys.Dead(old.Partition, old.Class, old.ID.String(), old.Scheduled), s.encodeDead(old, t))
}

// Get reads an object's alarm; nil when it has none.
func (s *Store) Get(ctx context.Context, p int, class string, id durable.ID) (*Record, error) {
	resp, err := s.kv.Get(ctx, s.keys.Alarm(p, class, id.String()))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return Decode(p, class, id, resp.Kvs[0].Value)
}

// Entry is one index entry: an alarm of partition P said to be due at Due.
type Entry struct {
	Partition int
	Due       time.Time
	Class     string
	ID        durable.ID
}

// pageSize bounds one range read so a partition with many due alarms is read
// in pieces rather than one huge response.
const pageSize = 2000

// LoadWindow reads the index entries of partition p due after `after` (zero:
// from the beginning) and at or before until, in time order, calling fn for
// each. It reads in pages; fn may be called for some entries before an error
// is returned.
func (s *Store) LoadWindow(ctx context.Context, p int, after, until time.Time, fn func(Entry)) error {
	start := s.keys.DuePrefix(p)
	if !after.IsZero() {
		start = s.keys.DueUntil(p, after)
	}
	end := s.keys.DueUntil(p, until)
	for start < end {
		resp, err := s.kv.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(pageSize),
			clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			due, class, hexID, ok := s.keys.ParseDue(p, string(kv.Key))
			id, idOK := parseID(hexID)
			if !ok || !idOK {
				continue // not written by the runtime
			}
			fn(Entry{Partition: p, Due: due, Class: class, ID: id})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return nil
}

// CountDead returns the number of dead letters.
func (s *Store) CountDead(ctx context.Context) (int64, error) {
	resp, err := s.kv.Get(ctx, s.keys.DeadAll(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}
