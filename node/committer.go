package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/placement"
)

// committer is the node's group commit: it batches the commits of many
// objects into few etcd transactions. etcd's cost is per transaction (a raft
// round and an fsync), not per key, so one Txn carrying the writes of a
// hundred objects costs about what one object's does.
//
// A batch is one Txn: If(one fence compare per partition involved) Then(every
// request's ops) Else(a read of each partition's owner key). When a fence
// fails, the Else reads tell which partitions were lost: their requests fail
// with ErrOwnershipLost and the partition is dropped; the others did not
// apply (a Txn is all or nothing) and go back to the front of the queue.
// Batches form as the batcher says: no delay, up to maxOps operations and
// maxBytes bytes (learned lower when etcd refuses a batch as too large).
//
// Requests never conflict inside a batch: the keys of two objects never
// overlap, and an object has at most one request in the committer at a time
// (see stage), so a batch never holds two writes of one key and an object's
// commits apply in order. Fences compare at most one key per request, so a
// batch within maxOps operations also keeps its compares within etcd's
// limit.
type committer struct {
	batcher[*commitReq]
	kv      clientv3.KV
	keys    keyspace.Space
	log     *slog.Logger
	ctx     context.Context // the node's: cancelled at shutdown
	timeout time.Duration   // bounds one Txn
	onLost  func(p int, token int64, err error)
	// before, in tests, runs for each request of a batch about to be sent;
	// it may block (holding the batch) or fail the request as if etcd had.
	before func(ops []clientv3.Op) error

	stats commitStats
}

// newCommitter returns a committer; set ctx before submitting.
func newCommitter(kv clientv3.KV, keys keyspace.Space, log *slog.Logger, parallelism, maxOps, maxBytes int,
	timeout time.Duration, onLost func(p int, token int64, err error)) *committer {
	c := &committer{kv: kv, keys: keys, log: log, timeout: timeout, onLost: onLost}
	c.batcher = batcher[*commitReq]{
		parallelism: parallelism, maxOps: maxOps, maxBytes: maxBytes,
		size:   func(r *commitReq) (int, int) { return max(len(r.ops), 1), r.bytes },
		send:   c.send,
		refuse: func(r *commitReq) { r.done(fmt.Errorf("%w: node is stopping", durable.ErrUnavailable)) },
	}
	return c
}

// commitReq is one object's commit: ops fenced by (p, token).
type commitReq struct {
	p     int
	token int64
	ops   []clientv3.Op
	bytes int
	// done receives the outcome: nil once the ops are durable.
	done func(error)
}

// commitStats counts the committer's work.
type commitStats struct {
	txns, requests, ops, retried, refused atomic.Int64
}

// CommitStats is a snapshot of the node's group commit counters.
type CommitStats struct {
	// Txns is the number of etcd transactions sent.
	Txns int64
	// Requests is the number of object commits they carried.
	Requests int64
	// Ops is the number of write operations they carried.
	Ops int64
	// Retried counts requests sent again because another partition's fence
	// failed their batch.
	Retried int64
	// Refused counts batches etcd refused as too large (the limits shrink).
	Refused int64
}

// CommitStats returns the group commit counters.
func (n *Node) CommitStats() CommitStats {
	s := &n.committer.stats
	return CommitStats{
		Txns: s.txns.Load(), Requests: s.requests.Load(), Ops: s.ops.Load(),
		Retried: s.retried.Load(), Refused: s.refused.Load(),
	}
}

// opBytes estimates the request bytes of op: its key and value plus framing.
func opBytes(op clientv3.Op) int {
	return len(op.KeyBytes()) + len(op.RangeBytes()) + len(op.ValueBytes()) + 16
}

type fence struct {
	p     int
	token int64
}

// send runs one batch as one Txn and settles every request in it.
func (c *committer) send(batch []*commitReq) {
	if c.before != nil {
		kept := batch[:0]
		for _, r := range batch {
			if err := c.before(r.ops); err != nil {
				r.done(fmt.Errorf("%w: %w", durable.ErrCommitUnknown, err))
				continue
			}
			kept = append(kept, r)
		}
		if batch = kept; len(batch) == 0 {
			return
		}
	}
	var fences []fence
	seen := map[fence]bool{}
	nops, nbytes := 0, 0
	for _, r := range batch {
		f := fence{r.p, r.token}
		if !seen[f] {
			seen[f] = true
			fences = append(fences, f)
		}
		nops += len(r.ops)
		nbytes += r.bytes
	}
	cmps := make([]clientv3.Cmp, len(fences))
	reads := make([]clientv3.Op, len(fences))
	for i, f := range fences {
		cmps[i] = placement.Fence(c.keys, f.p, f.token)
		reads[i] = clientv3.OpGet(c.keys.Owner(f.p), clientv3.WithKeysOnly())
	}
	ops := make([]clientv3.Op, 0, nops)
	for _, r := range batch {
		ops = append(ops, r.ops...)
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	resp, err := c.kv.Txn(ctx).If(cmps...).Then(ops...).Else(reads...).Commit()
	cancel()
	c.stats.txns.Add(1)
	switch {
	case err != nil && tooLarge(err):
		c.refused(batch, nops, nbytes, err)
	case err != nil:
		// The Txn may or may not have applied.
		for _, r := range batch {
			r.done(fmt.Errorf("%w: %w", durable.ErrCommitUnknown, err))
		}
	case resp.Succeeded:
		c.stats.requests.Add(int64(len(batch)))
		c.stats.ops.Add(int64(nops))
		for _, r := range batch {
			r.done(nil)
		}
	default:
		c.splitFenced(batch, fences, resp)
	}
}

// splitFenced settles a batch whose fences did not all hold: nothing of it
// applied. Requests of a partition whose owner key no longer carries their
// token fail with ErrOwnershipLost; the others go back to the queue.
func (c *committer) splitFenced(batch []*commitReq, fences []fence, resp *clientv3.TxnResponse) {
	current := map[int]int64{}
	for i, f := range fences {
		var rev int64
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
			rev = kvs[0].CreateRevision
		}
		current[f.p] = rev
	}
	var retry []*commitReq
	lost := map[fence]error{}
	for _, r := range batch {
		f := fence{r.p, r.token}
		if current[r.p] == r.token {
			retry = append(retry, r)
			continue
		}
		err, ok := lost[f]
		if !ok {
			err = fmt.Errorf("%w: partition %d (token %d)", durable.ErrOwnershipLost, r.p, r.token)
			lost[f] = err
			c.onLost(r.p, r.token, err)
		}
		r.done(err)
	}
	if len(retry) > 0 {
		c.stats.retried.Add(int64(len(retry)))
		c.requeue(retry)
	}
}

// refused settles a batch etcd refused as too large before applying it. A
// lone request cannot be made smaller: it fails with a clear error. A batch
// of several shrinks the limits to half of what it held (etcd is configured
// below what this node was told) and goes back to the queue.
func (c *committer) refused(batch []*commitReq, nops, nbytes int, err error) {
	c.stats.refused.Add(1)
	if len(batch) == 1 {
		r := batch[0]
		r.done(durable.Invalidf("the event's writes (%d operations, about %d bytes) exceed what etcd accepts in one transaction: %v",
			len(r.ops), r.bytes, err))
		return
	}
	maxOps, maxBytes := c.shrink(errors.Is(err, rpctypes.ErrTooManyOps), nops, nbytes)
	c.log.Warn("etcd refused a commit batch as too large; batching less",
		"err", err, "max_ops", maxOps, "max_bytes", maxBytes)
	c.requeue(batch)
}

// tooLarge reports errors with which etcd (or the client, before sending)
// refuses a Txn for its size. Nothing was applied.
func tooLarge(err error) bool {
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return true
	case errors.Is(err, rpctypes.ErrNoSpace):
		return false // etcd's quota alarm: smaller batches would not help
	}
	// The gRPC message limits of the client (checked before sending) and of
	// the server (checked on receipt).
	return status.Code(err) == codes.ResourceExhausted
}
