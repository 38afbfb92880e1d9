package alarmstore

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/keyspace"
)

// Listing reads only the page asked for: pending alarms in the order of the
// time-ordered index (every partition's index read up to a share of the
// page's size, merged), dead letters in key order; a page ends with a token
// the next one starts after. One revision per page, a few round trips
// whatever the number of alarms stored.

// opsPerTxn bounds the Gets of one Txn, below etcd's default
// --max-txn-ops (128).
const opsPerTxn = 64

// ListFilter selects alarms for List.
type ListFilter struct {
	Class     string
	DueBefore time.Time // zero: no bound
	Limit     int       // > 0
	// Partitions is the cluster's partition count.
	Partitions int
	// After is the token of the previous page ("": the first).
	After string
}

// A listing's place in the index is an index key's suffix after its
// partition's due prefix: the fixed-width due time, then "/class/id".
// Within a partition etcd orders the keys by these bytes, and as the due time
// is fixed-width, comparing suffixes as byte strings orders the entries of
// all partitions by due time, then by the bytes of class and id. Comparing
// anything else (a class as a string on its own, say) disagrees with etcd
// when a class holds a byte below '/', such as '.' or '-', and the next page,
// which starts after the token in every partition, would skip entries.

// dueTokenTag starts a List token, so that one from another listing, or
// garbage, is refused rather than taken for a place in the index. What
// follows it is any key suffix: a page may end at a key not written by the
// runtime.
const dueTokenTag = "due:"

// minPerPartition is the fewest keys List reads from a partition, so a small
// page over few partitions does not stop after every few entries.
const minPerPartition = 16

// rangeReq is one range read of a listing: [from, to), at most limit keys
// (0: no limit), or only their count.
type rangeReq struct {
	from, to  string
	limit     int64
	keysOnly  bool
	countOnly bool
}

// readRanges runs rs in Txns of opsPerTxn at one revision (rev 0: the
// first Txn's) and returns each range's response and the revision.
func (s *Store) readRanges(ctx context.Context, rs []rangeReq, rev int64) ([]*etcdserverpb.RangeResponse, int64, error) {
	out := make([]*etcdserverpb.RangeResponse, len(rs))
	txn := func(lo, hi int, rev int64) (int64, error) {
		ops := make([]clientv3.Op, 0, hi-lo)
		for _, r := range rs[lo:hi] {
			opts := []clientv3.OpOption{clientv3.WithRange(r.to), clientv3.WithLimit(r.limit)}
			if r.keysOnly {
				opts = append(opts, clientv3.WithKeysOnly())
			}
			if r.countOnly {
				opts = append(opts, clientv3.WithCountOnly())
			}
			if rev > 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			ops = append(ops, clientv3.OpGet(r.from, opts...))
		}
		resp, err := s.kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return 0, err
		}
		for i, r := range resp.Responses {
			out[lo+i] = r.GetResponseRange()
		}
		return resp.Header.Revision, nil
	}
	if len(rs) == 0 {
		return out, rev, nil
	}
	// The first Txn fixes the revision; the others read at it, side by side.
	first := min(opsPerTxn, len(rs))
	r, err := txn(0, first, rev)
	if err != nil {
		return nil, 0, err
	}
	if rev == 0 {
		rev = r
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(rs)/opsPerTxn+1)
	for lo := first; lo < len(rs); lo += opsPerTxn {
		wg.Go(func() {
			if _, err := txn(lo, min(lo+opsPerTxn, len(rs)), rev); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

// List returns up to f.Limit pending alarms in the index's order (due time,
// then the bytes of class and id) after the place the token f.After names,
// and the token of the next page ("" when this one is the last). A page may
// hold fewer than f.Limit alarms and still have a next one.
func (s *Store) List(ctx context.Context, f ListFilter) ([]Record, string, error) {
	after, ok := strings.CutPrefix(f.After, dueTokenTag)
	if f.After != "" && !ok {
		return nil, "", durable.Invalidf("page token %.80q is not one a listing returned", f.After)
	}
	// A page's entries are spread over the partitions: reading f.Limit keys
	// from each would read up to Partitions pages to return one. Twice the
	// even share leaves room for an uneven spread; a partition holding more
	// than that bounds the page at its last key read (below).
	perPartition := max(minPerPartition, (2*f.Limit+f.Partitions-1)/max(f.Partitions, 1))
	rs := make([]rangeReq, f.Partitions)
	for p := range f.Partitions {
		from := s.keys.DuePrefix(p)
		if f.After != "" {
			from += after + "\x00"
		}
		to := keyspace.PrefixEnd(s.keys.DuePrefix(p))
		if !f.DueBefore.IsZero() {
			to = s.keys.DueUntil(p, f.DueBefore.Add(-time.Millisecond))
		}
		rs[p] = rangeReq{from: from, to: to, limit: int64(perPartition), keysOnly: true}
	}
	resps, rev, err := s.readRanges(ctx, rs, 0)
	if err != nil {
		return nil, "", err
	}
	// Entries past the last key read of a partition that had more are
	// unknown: the page stops at the smallest such key. It is used raw, so a
	// key not written by the runtime bounds the page like any other.
	type entry struct {
		key, suffix string
		p           int
	}
	var entries []entry
	frontier, bounded := "", false
	for p, rr := range resps {
		prefix := s.keys.DuePrefix(p)
		for _, kv := range rr.Kvs {
			k := string(kv.Key)
			entries = append(entries, entry{k, strings.TrimPrefix(k, prefix), p})
		}
		if rr.More && len(rr.Kvs) > 0 {
			if last := entries[len(entries)-1].suffix; !bounded || last < frontier {
				frontier, bounded = last, true
			}
		}
	}
	// An object's index entries are all in its own partition, so no alarm's
	// suffix is in two: the next page, which starts after the token in every
	// partition, skips none.
	sort.Slice(entries, func(i, j int) bool { return entries[i].suffix < entries[j].suffix })
	type hit struct {
		p     int
		class string
		id    durable.ID
	}
	var page []hit
	last := ""      // the suffix of the last entry the page covers
	more := bounded // entries may follow what was read
	for _, e := range entries {
		if bounded && e.suffix > frontier {
			break
		}
		if len(page) == f.Limit {
			more = true
			break
		}
		last = e.suffix
		_, class, hexID, ok := s.keys.ParseDue(e.p, e.key)
		id, idOK := parseID(hexID)
		if !ok || !idOK {
			continue // not written by the runtime
		}
		if f.Class == "" || class == f.Class {
			page = append(page, hit{e.p, class, id})
		}
	}
	next := ""
	if more {
		next = dueTokenTag + last
	}
	// The records, at the index's revision.
	reads := make([]rangeReq, len(page))
	for i, h := range page {
		k := s.keys.Alarm(h.p, h.class, h.id.String())
		reads[i] = rangeReq{from: k, to: k + "\x00", limit: 1}
	}
	recs, _, err := s.readRanges(ctx, reads, rev)
	if err != nil {
		return nil, "", err
	}
	out := make([]Record, 0, len(page))
	for i, h := range page {
		if len(recs[i].Kvs) == 0 {
			continue
		}
		rec, err := Decode(h.p, h.class, h.id, recs[i].Kvs[0].Value)
		if err != nil {
			return nil, "", err
		}
		out = append(out, *rec)
	}
	return out, next, nil
}

// DeadFilter selects dead letters for ListDead.
type DeadFilter struct {
	Class string
	Limit int // > 0
	// Partitions is the cluster's partition count: dead letters are read
	// from its partitions only, as List reads only their alarms.
	Partitions int
	After      string // the previous page's token ("": the first)
}

// Dead letters of other classes are read and dropped, so a page filtered by
// class is read in chunks of deadChunk keys (or Limit, if more) rather than
// one round trip per dropped key, and one call scans at most deadScan keys
// before it returns what it has, with a token.
const (
	deadChunk = 256
	deadScan  = 10_000
)

// ListDead returns up to f.Limit dead letters in key order (partition,
// class, id, scheduled time) after f.After, and the next page's token ("":
// the last page). A page may hold fewer than f.Limit and still have a next
// one.
func (s *Store) ListDead(ctx context.Context, f DeadFilter) ([]DeadLetter, string, error) {
	all := s.keys.DeadAll()
	start := all
	if f.After != "" {
		if !strings.HasPrefix(f.After, "dead:") {
			return nil, "", durable.Invalidf("page token %.80q is not one a listing returned", f.After)
		}
		start = all + strings.TrimPrefix(f.After, "dead:") + "\x00"
	}
	end := s.keys.DeadPrefix(f.Partitions)
	var out []DeadLetter
	last := "" // the last key read
	for scanned := 0; len(out) < f.Limit && scanned < deadScan; {
		n := min(max(f.Limit, deadChunk), deadScan-scanned)
		resp, err := s.kv.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(int64(n)))
		if err != nil {
			return nil, "", err
		}
		for _, kv := range resp.Kvs {
			if len(out) == f.Limit {
				// The page is full before the chunk's end: more follow.
				return out, "dead:" + strings.TrimPrefix(last, all), nil
			}
			last = string(kv.Key)
			scanned++
			d, ok, err := decodeDead(strings.TrimPrefix(last, all), kv.Value)
			if err != nil {
				return nil, "", err
			}
			if ok && (f.Class == "" || d.Class == f.Class) {
				out = append(out, d)
			}
		}
		if !resp.More {
			return out, "", nil
		}
		start = last + "\x00"
	}
	return out, "dead:" + strings.TrimPrefix(last, all), nil
}

// decodeDead parses a dead letter stored under dead/<rest>.
func decodeDead(rest string, v []byte) (DeadLetter, bool, error) {
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) != 4 {
		return DeadLetter{}, false, nil
	}
	p, ok := keyspace.ParsePartitionKey(parts[0], "")
	id, idOK := parseID(parts[2])
	if !ok || !idOK {
		return DeadLetter{}, false, nil
	}
	d, err := DecodeDead(p, parts[1], id, v)
	if err != nil {
		return DeadLetter{}, false, err
	}
	return *d, true, nil
}

// CountPending returns the number of alarms of each of the cluster's
// partitions, in a few round trips.
func (s *Store) CountPending(ctx context.Context, partitions int) ([]int64, error) {
	rs := make([]rangeReq, partitions)
	for p := range partitions {
		prefix := s.keys.AlarmPrefix(p)
		rs[p] = rangeReq{from: prefix, to: keyspace.PrefixEnd(prefix), countOnly: true}
	}
	resps, _, err := s.readRanges(ctx, rs, 0)
	if err != nil {
		return nil, err
	}
	counts := make([]int64, partitions)
	for p, rr := range resps {
		counts[p] = rr.Count
	}
	return counts, nil
}

// PurgeFilter says which dead letters PurgeDead deletes: those of Class (""
// any), of object ID (zero: any; Class required), abandoned before
// AbandonedBefore (zero: any).
type PurgeFilter struct {
	Class           string
	ID              durable.ID
	AbandonedBefore time.Time
	Partitions      int
}

// purgeBatch bounds the deletes of one Txn (below etcd's default
// --max-txn-ops of 128).
const purgeBatch = 100

// PurgeDead deletes the dead letters f selects and returns how many.
func (s *Store) PurgeDead(ctx context.Context, f PurgeFilter) (int64, error) {
	var purged int64
	var keys []string
	flush := func() error {
		for len(keys) > 0 {
			n := min(len(keys), purgeBatch)
			ops := make([]clientv3.Op, n)
			for i, k := range keys[:n] {
				ops[i] = clientv3.OpDelete(k)
			}
			if _, err := s.kv.Txn(ctx).Then(ops...).Commit(); err != nil {
				return err
			}
			purged += int64(n)
			keys = keys[n:]
		}
		return nil
	}
	var zero durable.ID
	token := ""
	for {
		page, next, err := s.ListDead(ctx, DeadFilter{Class: f.Class, Limit: 1000, Partitions: f.Partitions, After: token})
		if err != nil {
			return purged, err
		}
		for _, d := range page {
			if f.ID != zero && d.ID != f.ID || !f.AbandonedBefore.IsZero() && !d.Abandoned.Before(f.AbandonedBefore) {
				continue
			}
			keys = append(keys, s.keys.Dead(d.Partition, d.Class, d.ID.String(), d.Scheduled))
		}
		if err := flush(); err != nil {
			return purged, err
		}
		if next == "" {
			return purged, nil
		}
		token = next
	}
}
