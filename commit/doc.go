// Package commit is the node's path to etcd for object state: group commit
// (Committer) and group read (Reader), both over a clientv3.KV only.
//
// It owns batching: the commits of many objects go out as one fenced Txn,
// and the point reads of many objects as one Txn of Gets, with no timer —
// a request is sent at once while fewer than Parallelism Txns are in
// flight, otherwise it joins the next batch, up to MaxOps operations and
// MaxBytes bytes (learned lower when etcd refuses a batch as too large).
//
// It never decides what to write: the ops of a request are built by the
// node (storage, alarm records, request ids) and the fencing token comes
// from placement. It never retries a Txn whose outcome is unknown: such a
// request fails with durable.ErrCommitUnknown. It keeps no state besides
// its queue and its learned limits.
//
// Concurrency: each batcher's mutex guards its queue and limits; Txns run
// on goroutines the batcher starts and Stop waits for. Done callbacks run
// on those goroutines, without any lock of this package held.
package commit
