package alarmstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/keyspace"
)

// Listing reads only the page asked for: pending alarms in the order of the
// time-ordered index (every partition's index read up to the page's size,
// merged), dead letters in key order; a page ends with a token the next one
// starts after. One revision per page, a few round trips whatever the
// number of alarms stored.

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

// position is where a listing is in the index: an entry's due time, class
// and id, ordered as the index orders them within a partition.
type position struct {
	due   time.Time
	class string
	id    durable.ID
}

func (a position) less(b position) bool {
	if !a.due.Equal(b.due) {
		return a.due.Before(b.due)
	}
	if a.class != b.class {
		return a.class < b.class
	}
	return bytes.Compare(a.id[:], b.id[:]) < 0
}

func (a position) token() string {
	return fmt.Sprintf("%d:%s:%s", a.due.UnixMilli(), a.class, a.id)
}

func parsePosition(tok string) (position, error) {
	ms, rest, ok1 := strings.Cut(tok, ":")
	class, hexID, ok2 := strings.Cut(rest, ":")
	n, err := strconv.ParseInt(ms, 10, 64)
	id, ok3 := parseID(hexID)
	if !ok1 || !ok2 || !ok3 || err != nil || class == "" {
		return position{}, durable.Invalidf("page token %.80q is not one a listing returned", tok)
	}
	return position{due: time.UnixMilli(n), class: class, id: id}, nil
}

// rangeReq is one range read of a listing: [from, to), at most limit keys.
type rangeReq struct {
	from, to string
	limit    int64
	keysOnly bool
}

// readRanges runs rs in Txns of opsPerTxn at one revision (rev 0: the
// first Txn's) and returns each range's keys and whether it hit its limit.
func (s *Store) readRanges(ctx context.Context, rs []rangeReq, rev int64) ([][]*mvccpb.KeyValue, []bool, int64, error) {
	kvs := make([][]*mvccpb.KeyValue, len(rs))
	more := make([]bool, len(rs))
	txn := func(lo, hi int, rev int64) (int64, error) {
		ops := make([]clientv3.Op, 0, hi-lo)
		for _, r := range rs[lo:hi] {
			opts := []clientv3.OpOption{clientv3.WithRange(r.to), clientv3.WithLimit(r.limit)}
			if r.keysOnly {
				opts = append(opts, clientv3.WithKeysOnly())
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
			rr := r.GetResponseRange()
			kvs[lo+i], more[lo+i] = rr.Kvs, rr.More
		}
		return resp.Header.Revision, nil
	}
	if len(rs) == 0 {
		return kvs, more, rev, nil
	}
	// The first Txn fixes the revision; the others read at it, side by side.
	first := min(opsPerTxn, len(rs))
	r, err := txn(0, first, rev)
	if err != nil {
		return nil, nil, 0, err
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
		return nil, nil, 0, err
	}
	return kvs, more, rev, nil
}

// List returns up to f.Limit pending alarms in due order (then class, then
// id), after the position f.After names, and the token of the next page
// ("" when this one is the last).
func (s *Store) List(ctx context.Context, f ListFilter) ([]Record, string, error) {
	var after *position
	if f.After != "" {
		p, err := parsePosition(f.After)
		if err != nil {
			return nil, "", err
		}
		after = &p
	}
	rs := make([]rangeReq, f.Partitions)
	for p := range f.Partitions {
		from := s.keys.DuePrefix(p)
		if after != nil {
			from = s.keys.Due(p, after.due, after.class, after.id.String()) + "\x00"
		}
		to := keyspace.PrefixEnd(s.keys.DuePrefix(p))
		if !f.DueBefore.IsZero() {
			to = s.keys.DueUntil(p, f.DueBefore.Add(-time.Millisecond))
		}
		rs[p] = rangeReq{from: from, to: to, limit: int64(f.Limit), keysOnly: true}
	}
	kvs, more, rev, err := s.readRanges(ctx, rs, 0)
	if err != nil {
		return nil, "", err
	}
	// Entries past the last one read of a partition that had more are
	// unknown: the page stops at the first such frontier.
	var frontier *position
	type cand struct {
		pos position
		p   int
	}
	var cands []cand
	for p := range f.Partitions {
		for _, kv := range kvs[p] {
			due, class, hexID, ok := s.keys.ParseDue(p, string(kv.Key))
			id, idOK := parseID(hexID)
			if !ok || !idOK {
				continue
			}
			cands = append(cands, cand{position{due, class, id}, p})
		}
		if more[p] && len(kvs[p]) > 0 {
			due, class, hexID, _ := s.keys.ParseDue(p, string(kvs[p][len(kvs[p])-1].Key))
			id, _ := parseID(hexID)
			if fp := (position{due, class, id}); frontier == nil || fp.less(*frontier) {
				frontier = &fp
			}
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].pos.less(cands[j].pos) })
	var page []cand
	var last *position
	stopped := frontier != nil // entries may follow what was read
	for _, c := range cands {
		if frontier != nil && frontier.less(c.pos) {
			break
		}
		if len(page) == f.Limit {
			stopped = true
			break
		}
		pos := c.pos
		last = &pos
		if f.Class == "" || c.pos.class == f.Class {
			page = append(page, c)
		}
	}
	next := ""
	if stopped && last != nil {
		next = last.token()
	}
	// The records, at the index's revision.
	reads := make([]rangeReq, len(page))
	for i, c := range page {
		k := s.keys.Alarm(c.p, c.pos.class, c.pos.id.String())
		reads[i] = rangeReq{from: k, to: k + "\x00", limit: 1}
	}
	recKVs, _, _, err := s.readRanges(ctx, reads, rev)
	if err != nil {
		return nil, "", err
	}
	out := make([]Record, 0, len(page))
	for i, c := range page {
		if len(recKVs[i]) == 0 {
			continue
		}
		rec, err := Decode(c.p, c.pos.class, c.pos.id, recKVs[i][0].Value)
		if err != nil {
			return nil, "", err
		}
		out = append(out, *rec)
	}
	return out, next, nil
}

// DeadFilter selects dead letters for ListDead.
type DeadFilter struct {
	Class      string
	Limit      int // > 0
	Partitions int
	After      string // the previous page's token ("": the first)
}

// ListDead returns up to f.Limit dead letters in key order (partition,
// class, id, scheduled time) after f.After, and the next page's token ("":
// the last page).
func (s *Store) ListDead(ctx context.Context, f DeadFilter) ([]DeadLetter, string, error) {
	all := s.keys.DeadAll()
	start := all
	if f.After != "" {
		if !strings.HasPrefix(f.After, "dead:") {
			return nil, "", durable.Invalidf("page token %.80q is not one a listing returned", f.After)
		}
		start = all + strings.TrimPrefix(f.After, "dead:") + "\x00"
	}
	var out []DeadLetter
	for len(out) < f.Limit {
		resp, err := s.kv.Get(ctx, start, clientv3.WithRange(keyspace.PrefixEnd(all)), clientv3.WithLimit(int64(f.Limit-len(out))))
		if err != nil {
			return nil, "", err
		}
		for _, kv := range resp.Kvs {
			rest := strings.TrimPrefix(string(kv.Key), all)
			start = string(kv.Key) + "\x00"
			d, ok, err := decodeDead(rest, kv.Value)
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
	}
	return out, "dead:" + strings.TrimPrefix(strings.TrimSuffix(start, "\x00"), all), nil
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
	var j deadJSON
	if err := json.Unmarshal(v, &j); err != nil {
		return DeadLetter{}, false, fmt.Errorf("alarmstore: corrupt dead letter %s: %w", rest, err)
	}
	return DeadLetter{
		Record: Record{
			Class: parts[1], ID: id, Name: j.Name, Partition: p,
			Due: time.UnixMilli(j.DueMS), Scheduled: time.UnixMilli(j.ScheduleMS),
			RetryCount: j.Retry, LastError: j.LastError,
		},
		Abandoned: time.UnixMilli(j.AbandonedMS),
	}, true, nil
}

// CountPending returns the number of alarms of each of the cluster's
// partitions, in a few round trips.
func (s *Store) CountPending(ctx context.Context, partitions int) ([]int64, error) {
	rs := make([]rangeReq, partitions)
	for p := range partitions {
		rs[p] = rangeReq{from: s.keys.AlarmPrefix(p), to: keyspace.PrefixEnd(s.keys.AlarmPrefix(p))}
	}
	// Count-only ranges: no keys travel.
	counts := make([]int64, partitions)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, partitions/opsPerTxn+1)
	for lo := 0; lo < partitions; lo += opsPerTxn {
		wg.Go(func() {
			hi := min(lo+opsPerTxn, partitions)
			ops := make([]clientv3.Op, 0, hi-lo)
			for _, r := range rs[lo:hi] {
				ops = append(ops, clientv3.OpGet(r.from, clientv3.WithRange(r.to), clientv3.WithCountOnly()))
			}
			resp, err := s.kv.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for i, r := range resp.Responses {
				counts[lo+i] = r.GetResponseRange().Count
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return counts, nil
}
