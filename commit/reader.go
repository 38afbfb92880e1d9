package commit

import (
	"context"
	"fmt"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
)

// Reader is group read: the point reads of many objects — an alarm record,
// a name, request ids, storage keys missing from a cache — go out together,
// one Txn of Gets per batch. Such a Txn is a linearizable read like a lone
// Get (etcd serves it after a read index, without a raft entry); batching
// saves the round trips when thousands of objects activate at once, as after
// a failover.
type Reader struct {
	batcher[*readReq]
	kv     clientv3.KV
	cfg    Config
	ctx    context.Context // cancelled by Stop
	cancel context.CancelFunc
	txns   atomic.Int64 // Txns sent
}

// readReq is one caller's keys; done gets their values (nil: absent).
type readReq struct {
	keys []string
	done func(kvs []*mvccpb.KeyValue, err error)
}

// NewReader returns a reader over kv (OnLost and Hook are not used); Stop
// it when done.
func NewReader(kv clientv3.KV, cfg Config) *Reader {
	cfg.defaults()
	r := &Reader{kv: kv, cfg: cfg}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.batcher = batcher[*readReq]{
		parallelism: cfg.Parallelism, maxOps: cfg.MaxOps, maxBytes: cfg.MaxBytes,
		size: func(q *readReq) (int, int) {
			b := 0
			for _, k := range q.keys {
				b += len(k) + 16
			}
			return len(q.keys), b
		},
		send:   r.send,
		refuse: func(q *readReq) { q.done(nil, fmt.Errorf("%w: node is stopping", durable.ErrUnavailable)) },
	}
	return r
}

// Get reads keys, linearizably; the value of an absent key is nil.
// Cancelling ctx abandons the wait, not the read.
func (r *Reader) Get(ctx context.Context, keys ...string) ([]*mvccpb.KeyValue, error) {
	type result struct {
		kvs []*mvccpb.KeyValue
		err error
	}
	res := make(chan result, 1)
	r.submit(&readReq{keys: keys, done: func(kvs []*mvccpb.KeyValue, err error) { res <- result{kvs, err} }})
	select {
	case x := <-res:
		return x.kvs, x.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stop fails later reads with ErrUnavailable, cancels those in flight and
// waits for them.
func (r *Reader) Stop() {
	r.cancel()
	r.stop()
}

// Txns returns the number of Txns sent.
func (r *Reader) Txns() int64 { return r.txns.Load() }

// send runs one batch as one Txn.
func (r *Reader) send(batch []*readReq) {
	var ops []clientv3.Op
	for _, q := range batch {
		for _, k := range q.keys {
			ops = append(ops, clientv3.OpGet(k))
		}
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.Timeout)
	resp, err := r.kv.Txn(ctx).Then(ops...).Commit()
	cancel()
	r.txns.Add(1)
	if m := r.cfg.Metrics; m.Enabled() {
		m.GroupReads.Inc()
		m.GroupReadKeys.Add(float64(len(ops)))
	}
	switch {
	case err != nil && tooLarge(err) && len(batch) > 1:
		// Only the number of Gets can be too large for a read.
		r.shrink(true, len(ops), 0)
		r.requeue(batch)
		return
	case err != nil:
		for _, q := range batch {
			q.done(nil, err)
		}
		return
	}
	i := 0
	for _, q := range batch {
		kvs := make([]*mvccpb.KeyValue, len(q.keys))
		for j := range q.keys {
			if got := resp.Responses[i].GetResponseRange().Kvs; len(got) > 0 {
				kvs[j] = got[0]
			}
			i++
		}
		q.done(kvs, nil)
	}
}
