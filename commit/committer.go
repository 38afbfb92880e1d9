package commit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/placement"
	"github.com/durable-run/durable/tracing"
)

// Config configures a Committer or a Reader.
type Config struct {
	// Parallelism is the number of Txns in flight at once.
	Parallelism int
	// MaxOps bounds the operations of one Txn (etcd's --max-txn-ops); a
	// larger request is still sent, alone.
	MaxOps int
	// MaxBytes bounds the bytes of one Txn (below etcd's
	// --max-request-bytes).
	MaxBytes int
	// Timeout bounds one Txn.
	Timeout time.Duration
	// Logger receives the package's warnings.
	Logger *slog.Logger
	// Metrics receives the Txns' figures; nil: metrics.Discard().
	Metrics *metrics.Set
	// TracerProvider traces each Txn (durable.commit, linked to the
	// events it carries); nil: none.
	TracerProvider trace.TracerProvider
	// OnLost is told, once per batch, of each tenure whose fence failed:
	// partition p is no longer owned under token. (Committer only.)
	OnLost func(p int, token int64, err error)
	// Hook, in tests, runs for each request of a batch about to be sent; it
	// may block (holding the batch) or fail the request as if etcd had
	// (the request then fails with ErrCommitUnknown). (Committer only.)
	Hook func(ops []clientv3.Op) error
}

func (c *Config) defaults() {
	if c.Parallelism < 1 {
		c.Parallelism = 4
	}
	if c.MaxOps < 1 {
		c.MaxOps = 128
	}
	if c.MaxBytes < 1 {
		c.MaxBytes = 1 << 20
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.Discard()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
	if c.OnLost == nil {
		c.OnLost = func(int, int64, error) {}
	}
}

// Committer is group commit: it batches the commits of many objects into
// few etcd transactions. etcd's cost is per transaction (a raft round and an
// fsync), not per key, so one Txn carrying the writes of a hundred objects
// costs about what one object's does.
//
// A batch is one Txn: If(one fence compare per partition involved) Then(every
// request's ops) Else(a read of each partition's owner key). When a fence
// fails, the Else reads tell which partitions were lost: their requests fail
// with ErrOwnershipLost and OnLost is told; the others did not apply (a Txn
// is all or nothing) and go back to the front of the queue. If etcd refuses
// a batch as too large, the limits halve and the batch is sent again; a lone
// request etcd can never accept fails with ErrInvalidArgument.
//
// Requests must never conflict inside a batch: the caller guarantees that
// no two requests in the committer at once write the same key (the node
// keeps one request per object in flight, and objects' keys never overlap).
// Fences compare at most one key per request, so a batch within MaxOps
// operations keeps its compares within etcd's limit too.
type Committer struct {
	batcher[*Request]
	tracer trace.Tracer // nil: tracing is off
	kv     clientv3.KV
	keys   keyspace.Space
	cfg    Config
	ctx    context.Context // cancelled by Stop
	cancel context.CancelFunc

	full warnOnce // NOSPACE, logged once per interval

	stats struct {
		txns, requests, ops, retried, refused atomic.Int64
		latencyNS                             atomic.Int64 // moving average of a Txn's round trip
	}
}

// Request is one object's commit: Ops fenced by (Partition, Token).
type Request struct {
	Partition int
	Token     int64
	Ops       []clientv3.Op
	// Bytes is the request's size as OpBytes counts it.
	Bytes int
	// Done receives the outcome: nil once the ops are durable. It runs on
	// the committer's goroutine and may Submit.
	Done func(error)
	// Links are the sampled spans of the events whose writes the request
	// holds: the Txn's span links them (one Txn carries many objects'
	// commits); a Txn with none is not traced.
	Links []trace.Link

	queued time.Time // when it was submitted
}

// NewCommitter returns a committer over kv; Stop it when done.
func NewCommitter(kv clientv3.KV, keys keyspace.Space, cfg Config) *Committer {
	cfg.defaults()
	c := &Committer{kv: kv, keys: keys, cfg: cfg}
	if tracing.Enabled(cfg.TracerProvider) {
		c.tracer = cfg.TracerProvider.Tracer("github.com/durable-run/durable/commit")
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.batcher = batcher[*Request]{
		parallelism: cfg.Parallelism, maxOps: cfg.MaxOps, maxBytes: cfg.MaxBytes,
		size:   func(r *Request) (int, int) { return max(len(r.Ops), 1), r.Bytes },
		send:   c.send,
		refuse: func(r *Request) { r.Done(fmt.Errorf("%w: node is stopping", durable.ErrUnavailable)) },
	}
	return c
}

// Submit queues r; its Done is called exactly once.
func (c *Committer) Submit(r *Request) {
	r.queued = time.Now()
	c.submit(r)
}

// Limits returns the current batch limits: a caller merging several
// commits into one request keeps it within them.
func (c *Committer) Limits() (ops, bytes int) { return c.limits() }

// Idle reports whether nothing is queued or in flight.
func (c *Committer) Idle() bool { return c.idle() }

// Queued returns the number of requests waiting for a batch slot.
func (c *Committer) Queued() int { return c.queued() }

// Stop fails what is queued or submitted later with ErrUnavailable, cancels
// the Txns in flight (their requests fail with ErrCommitUnknown) and waits
// for them.
func (c *Committer) Stop() {
	c.cancel()
	c.stop()
}

// observe folds one Txn's round trip into the moving average (weight 1/8).
func (c *Committer) observe(d time.Duration) {
	for {
		old := c.stats.latencyNS.Load()
		next := int64(d)
		if old > 0 {
			next = old + (int64(d)-old)/8
		}
		if c.stats.latencyNS.CompareAndSwap(old, next) {
			return
		}
	}
}

// Latency is the moving average of a commit Txn's round trip: what the
// node's admission control watches.
func (c *Committer) Latency() time.Duration { return time.Duration(c.stats.latencyNS.Load()) }

// Stats is a snapshot of a committer's counters.
type Stats struct {
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

// Stats returns the committer's counters.
func (c *Committer) Stats() Stats {
	s := &c.stats
	return Stats{
		Txns: s.txns.Load(), Requests: s.requests.Load(), Ops: s.ops.Load(),
		Retried: s.retried.Load(), Refused: s.refused.Load(),
	}
}

// OpBytes estimates the request bytes of op: its key and value plus framing.
func OpBytes(op clientv3.Op) int {
	return len(op.KeyBytes()) + len(op.RangeBytes()) + len(op.ValueBytes()) + 16
}

type fence struct {
	p     int
	token int64
}

// send runs one batch as one Txn and settles every request in it.
func (c *Committer) send(batch []*Request) {
	if c.cfg.Hook != nil {
		kept := batch[:0]
		for _, r := range batch {
			if err := c.cfg.Hook(r.Ops); err != nil {
				r.Done(fmt.Errorf("%w: %w", durable.ErrCommitUnknown, err))
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
		f := fence{r.Partition, r.Token}
		if !seen[f] {
			seen[f] = true
			fences = append(fences, f)
		}
		nops += len(r.Ops)
		nbytes += r.Bytes
	}
	cmps := make([]clientv3.Cmp, len(fences))
	reads := make([]clientv3.Op, len(fences))
	for i, f := range fences {
		cmps[i] = placement.Fence(c.keys, f.p, f.token)
		reads[i] = clientv3.OpGet(c.keys.Owner(f.p), clientv3.WithKeysOnly())
	}
	ops := make([]clientv3.Op, 0, nops)
	for _, r := range batch {
		ops = append(ops, r.Ops...)
	}
	m := c.cfg.Metrics
	var links []trace.Link
	for _, r := range batch {
		links = append(links, r.Links...)
	}
	ctx, span := c.ctx, trace.SpanFromContext(c.ctx) // a no-op unless tracing is on
	if c.tracer != nil && len(links) > 0 {
		// Only a Txn that carries a sampled event is traced, in the trace
		// of the first (so the sampler keeps it) and linked to them all.
		parent := trace.ContextWithSpanContext(c.ctx, links[0].SpanContext)
		ctx, span = c.tracer.Start(parent, "durable.commit", trace.WithLinks(links...), trace.WithSpanKind(trace.SpanKindClient))
		span.SetAttributes(attribute.Int("durable.commit.requests", len(batch)), attribute.Int("durable.commit.ops", nops), attribute.Int("durable.commit.bytes", nbytes))
	}
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	sent := time.Now()
	if m.Enabled() {
		for _, r := range batch {
			m.CommitWaitSeconds.Observe(sent.Sub(r.queued).Seconds())
		}
	}
	resp, err := c.kv.Txn(ctx).If(cmps...).Then(ops...).Else(reads...).Commit()
	cancel()
	took := time.Since(sent)
	c.observe(took)
	c.stats.txns.Add(1)
	result := "ok"
	switch {
	case err != nil:
		result = "error"
	case !resp.Succeeded:
		result = "fence_failed"
	}
	if m.Enabled() {
		m.CommitSeconds.Observe(took.Seconds())
		m.CommitTxns.WithLabelValues(result).Inc()
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("durable.commit.result", result))
		if err != nil {
			span.SetStatus(otelcodes.Error, err.Error())
		}
	}
	switch {
	case err != nil && tooLarge(err):
		c.refused(batch, nops, nbytes, err)
	case errors.Is(err, rpctypes.ErrNoSpace):
		// etcd's quota alarm: nothing was applied, and nothing will be
		// until an operator frees space.
		c.full.warn(c.cfg.Logger, "etcd is full (NOSPACE): writes are refused until space is freed (compact, defragment, raise --quota-backend-bytes)", err)
		for _, r := range batch {
			r.Done(fmt.Errorf("%w: %w", durable.ErrStorageFull, err))
		}
	case err != nil:
		// The Txn may or may not have applied.
		for _, r := range batch {
			r.Done(fmt.Errorf("%w: %w", durable.ErrCommitUnknown, err))
		}
	case resp.Succeeded:
		c.stats.requests.Add(int64(len(batch)))
		c.stats.ops.Add(int64(nops))
		if m.Enabled() {
			m.CommitRequests.Add(float64(len(batch)))
			m.CommitOps.Add(float64(nops))
			m.CommitBytes.Add(float64(nbytes))
		}
		for _, r := range batch {
			r.Done(nil)
		}
	default:
		c.splitFenced(batch, fences, resp)
	}
}

// splitFenced settles a batch whose fences did not all hold: nothing of it
// applied. Requests of a partition whose owner key no longer carries their
// token fail with ErrOwnershipLost; the others go back to the queue.
func (c *Committer) splitFenced(batch []*Request, fences []fence, resp *clientv3.TxnResponse) {
	current := map[int]int64{}
	for i, f := range fences {
		var rev int64
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
			rev = kvs[0].CreateRevision
		}
		current[f.p] = rev
	}
	var retry []*Request
	lost := map[fence]error{}
	for _, r := range batch {
		f := fence{r.Partition, r.Token}
		if current[r.Partition] == r.Token {
			retry = append(retry, r)
			continue
		}
		err, ok := lost[f]
		if !ok {
			err = fmt.Errorf("%w: partition %d (token %d)", durable.ErrOwnershipLost, r.Partition, r.Token)
			lost[f] = err
			c.cfg.OnLost(r.Partition, r.Token, err)
		}
		r.Done(err)
	}
	if len(retry) > 0 {
		c.stats.retried.Add(int64(len(retry)))
		c.cfg.Metrics.CommitRetried.Add(float64(len(retry)))
		c.requeue(retry)
	}
}

// refused settles a batch etcd refused as too large before applying it. A
// lone request cannot be made smaller: it fails with a clear error. A batch
// of several shrinks the limits to half of what it held (etcd is configured
// below what this committer was told) and goes back to the queue.
func (c *Committer) refused(batch []*Request, nops, nbytes int, err error) {
	c.stats.refused.Add(1)
	if len(batch) == 1 {
		r := batch[0]
		r.Done(durable.Invalidf("the event's writes (%d operations, about %d bytes) exceed what etcd accepts in one transaction: %v",
			len(r.Ops), r.Bytes, err))
		return
	}
	maxOps, maxBytes := c.shrink(errors.Is(err, rpctypes.ErrTooManyOps), nops, nbytes)
	c.cfg.Logger.Warn("etcd refused a commit batch as too large; batching less",
		"err", err, "max_ops", maxOps, "max_bytes", maxBytes)
	c.requeue(batch)
}

// warnOnce logs a warning at most once per warnEvery.
type warnOnce struct{ last atomic.Int64 }

const warnEvery = 10 * time.Second

func (w *warnOnce) warn(log *slog.Logger, msg string, err error) {
	now := time.Now().UnixNano()
	if last := w.last.Load(); now-last >= int64(warnEvery) && w.last.CompareAndSwap(last, now) {
		log.Warn(msg, "err", err)
	}
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
