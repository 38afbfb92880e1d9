package bench

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdScenario measures the raw etcd ceilings every other result is read
// against, on the cluster's own etcd, under its own key prefix:
//
//   - one fenced Txn with one Put, with C concurrent clients (what one
//     writing event costs today, without group commit);
//   - fenced Txns of B Puts each from C clients, in puts/s (what group
//     commit can reach);
//   - linearizable single-key Gets from C concurrent readers.
//
// Keys look like ours (…/data/<p>/Counter/<64 hex>/value, about 100 bytes)
// with 16-byte values; every Txn compares the create revision of a fence
// key, as a partition's commits do.
type EtcdScenario struct{}

// Name implements Scenario.
func (EtcdScenario) Name() string { return "etcd" }

// Description implements Describer.
func (EtcdScenario) Description() string {
	return "raw etcd ceilings: 1-put txns, batched-put txns and linearizable gets at several concurrencies"
}

// Run implements Scenario.
func (EtcdScenario) Run(ctx context.Context, env *Env) ([]Result, error) {
	if env.Etcd == nil {
		return nil, ErrNoEtcd
	}
	var specs []CeilingSpec
	levels := env.Profile.Levels([]int{64}, []int{1, 16, 64, 256})
	for _, c := range levels {
		specs = append(specs, PutCeiling(c))
	}
	for _, b := range env.batches() {
		specs = append(specs, BatchCeiling(b.Clients, b.Size))
	}
	for _, c := range levels {
		specs = append(specs, GetCeiling(c))
	}
	var rows []Result
	for _, s := range specs {
		c, fresh, err := env.ceiling(ctx, s, true)
		if err != nil {
			return rows, err
		}
		if fresh {
			rows = append(rows, c.Row)
		}
	}
	return rows, nil
}

// tidyCeilingRows orders the etcd scenario's rows in results — its own and
// those measured on demand by later scenarios — by kind (1-put, batched,
// get) then concurrency, in the places those rows hold, and notes the best
// 1-put and get rows.
func tidyCeilingRows(results []Result) {
	var at []int
	var rows []Result
	for i, r := range results {
		if r.Scenario == (EtcdScenario{}).Name() {
			at, rows = append(at, i), append(rows, r)
		}
	}
	rank := func(r Result) int {
		switch r.Case {
		case PutTxn.caseName():
			return 0
		case LinearGet.caseName():
			return 2
		}
		return 1
	}
	slices.SortStableFunc(rows, func(a, b Result) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a.Concurrency, b.Concurrency))
	})
	markBest(rows, PutTxn, "best 1-put txn throughput")
	markBest(rows, LinearGet, "best get throughput")
	for k, i := range at {
		results[i] = rows[k]
	}
}

// markBest notes the row of kind with the highest rate, if there are
// several.
func markBest(rows []Result, kind CeilingKind, note string) {
	best, n := -1, 0
	for i, r := range rows {
		if r.Case != kind.caseName() {
			continue
		}
		n++
		if best < 0 || r.Rate > rows[best].Rate {
			best = i
		}
	}
	if n > 1 {
		rows[best].Note = note
	}
}

// CeilingKind is a kind of raw etcd work.
type CeilingKind string

const (
	// PutTxn is one fenced Txn holding one Put.
	PutTxn CeilingKind = "put"
	// BatchedPut is one fenced Txn holding Batch Puts of distinct keys.
	BatchedPut CeilingKind = "batch"
	// LinearGet is one linearizable Get of one key.
	LinearGet CeilingKind = "get"
)

func (k CeilingKind) caseName() string {
	switch k {
	case PutTxn:
		return "put, 1 per txn"
	case BatchedPut:
		return "put, batched txn"
	default:
		return "get, linearizable"
	}
}

// CeilingSpec names one ceiling: a kind of work and how many clients do it
// at once.
type CeilingSpec struct {
	Kind    CeilingKind
	Clients int
	// Batch is the Puts per Txn of BatchedPut (1 for PutTxn, 0 for Get).
	Batch int
}

// PutCeiling is the 1-put fenced Txn ceiling with c clients.
func PutCeiling(c int) CeilingSpec { return CeilingSpec{Kind: PutTxn, Clients: c, Batch: 1} }

// BatchCeiling is the ceiling of fenced Txns of size Puts from c clients.
func BatchCeiling(c, size int) CeilingSpec {
	return CeilingSpec{Kind: BatchedPut, Clients: c, Batch: size}
}

// GetCeiling is the linearizable Get ceiling with c readers.
func GetCeiling(c int) CeilingSpec { return CeilingSpec{Kind: LinearGet, Clients: c} }

// String names the ceiling as the tables show it.
func (s CeilingSpec) String() string {
	switch s.Kind {
	case PutTxn:
		return fmt.Sprintf("etcd 1-put txn c=%d", s.Clients)
	case BatchedPut:
		return fmt.Sprintf("etcd batched put %s", Batch{s.Clients, s.Batch})
	default:
		return fmt.Sprintf("etcd get c=%d", s.Clients)
	}
}

// Batch is a batched-put shape: Clients concurrent Txns of Size Puts.
type Batch struct{ Clients, Size int }

func (b Batch) String() string { return fmt.Sprintf("%d×%d", b.Clients, b.Size) }

// Ceiling is a measured etcd ceiling.
type Ceiling struct {
	Spec CeilingSpec
	// Rate is Puts (or Gets) per second: a batched Txn counts its Puts.
	Rate float64
	// Row is the measurement's row in the etcd scenario's table.
	Row Result
}

// batches returns the profile's batched-put shapes.
func (e *Env) batches() []Batch {
	if len(e.Profile.Batches) > 0 {
		return e.Profile.Batches
	}
	return []Batch{{16, 64}, {16, 512}}
}

// Ceiling returns the ceiling spec, measuring it now if this run has not
// yet (its row then joins the etcd scenario's). It returns ErrNoEtcd when
// the run has no etcd.
func (e *Env) Ceiling(ctx context.Context, spec CeilingSpec) (Ceiling, error) {
	c, _, err := e.ceiling(ctx, spec, false)
	return c, err
}

// BestBatchedPut returns the best batched-put ceiling measured so far, or
// measures the profile's first batch shape.
func (e *Env) BestBatchedPut(ctx context.Context) (Ceiling, error) {
	e.mu.Lock()
	var best Ceiling
	for _, c := range e.ceilings {
		if c.Spec.Kind == BatchedPut && c.Rate > best.Rate {
			best = c
		}
	}
	e.mu.Unlock()
	if best.Rate > 0 {
		return best, nil
	}
	b := e.batches()[0]
	return e.Ceiling(ctx, BatchCeiling(b.Clients, b.Size))
}

// ceiling returns spec's ceiling and whether it was measured by this call.
// Rows measured for a caller other than the etcd scenario (own=false) are
// kept for the report.
func (e *Env) ceiling(ctx context.Context, spec CeilingSpec, own bool) (Ceiling, bool, error) {
	if e.Etcd == nil {
		return Ceiling{}, false, ErrNoEtcd
	}
	e.mu.Lock()
	c, ok := e.ceilings[spec]
	e.mu.Unlock()
	if ok {
		return c, false, nil
	}
	c, err := e.measureCeiling(ctx, spec)
	if err != nil {
		return c, false, err
	}
	e.mu.Lock()
	e.ceilings[spec] = c
	if !own {
		e.extra = append(e.extra, c.Row)
	}
	e.mu.Unlock()
	return c, true, nil
}

// ceilingPrefix is where the ceilings' keys live; deleted when the run ends.
func (e *Env) ceilingPrefix() string { return "/durable-bench-ceiling/" + e.RunID + "/" }

// keysPerCaller is how many distinct keys each client cycles through.
const keysPerCaller = 64

// ceilingKey is caller w's j-th key, shaped like an object's data key.
func (e *Env) ceilingKey(w, j int) string {
	sum := sha256.Sum256([]byte(e.RunID + "/" + strconv.Itoa(w) + "/" + strconv.Itoa(j)))
	p := (int(sum[0])<<8 | int(sum[1])) % 256
	return fmt.Sprintf("%sdata/%05d/Counter/%s/value", e.ceilingPrefix(), p, hex.EncodeToString(sum[:]))
}

// ceilingValue is a 16-byte value, like a small counter's.
var ceilingValue = "0000000000000042"

// errFence is a ceiling Txn whose fence compare failed: someone else wrote
// the fence key.
var errFence = errors.New("bench: the ceiling's fence key changed")

// measureCeiling measures one ceiling on fresh etcd connections: one per
// 16 clients, at most 8, as a few nodes with a connection each would have.
func (e *Env) measureCeiling(ctx context.Context, spec CeilingSpec) (Ceiling, error) {
	fence, err := e.fence(ctx)
	if err != nil {
		return Ceiling{}, err
	}
	nconn := min(8, (spec.Clients+15)/16)
	conns := make([]*clientv3.Client, 0, nconn)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range nconn {
		c, err := dialEtcd(ctx, e.EtcdEndpoints, e.EtcdLogin)
		if err != nil {
			return Ceiling{}, err
		}
		conns = append(conns, c)
	}
	perCaller := max(keysPerCaller, spec.Batch)
	keys := make([][]string, spec.Clients)
	for w := range keys {
		keys[w] = make([]string, perCaller)
		for j := range keys[w] {
			keys[w][j] = e.ceilingKey(w, j)
		}
	}
	cmp := clientv3.Compare(clientv3.CreateRevision(e.ceilingPrefix()+"owner/00000"), "=", fence)
	next := make([]int, spec.Clients) // each caller's next key; only caller w touches next[w]
	var op Op
	unit := "txns"
	switch spec.Kind {
	case PutTxn, BatchedPut:
		op = func(ctx context.Context, w int) error {
			ops := make([]clientv3.Op, spec.Batch)
			for i := range ops {
				ops[i] = clientv3.OpPut(keys[w][next[w]], ceilingValue)
				next[w] = (next[w] + 1) % perCaller
			}
			resp, err := conns[w%nconn].Txn(ctx).If(cmp).Then(ops...).Commit()
			if err != nil {
				return err
			}
			if !resp.Succeeded {
				return errFence
			}
			return nil
		}
	case LinearGet:
		unit = "gets"
		if err := e.preload(ctx, keys); err != nil {
			return Ceiling{}, err
		}
		op = func(ctx context.Context, w int) error {
			k := keys[w][next[w]]
			next[w] = (next[w] + 1) % perCaller
			_, err := conns[w%nconn].Get(ctx, k)
			return err
		}
	default:
		return Ceiling{}, fmt.Errorf("bench: unknown ceiling kind %q", spec.Kind)
	}
	load := Load{
		Name: spec.String(), Concurrency: spec.Clients, Warmup: e.Profile.Warmup, Duration: e.Profile.Phase,
		Unit: unit, Op: op,
	}
	out, err := load.Closed(ctx, e.Progress)
	if err != nil {
		return Ceiling{}, err
	}
	per := max(spec.Batch, 1)
	row := Result{
		Scenario: "etcd", Case: spec.Kind.caseName(), Concurrency: spec.Clients,
		Count: out.Count * int64(per), Errors: out.Errors, Seconds: out.Elapsed.Seconds(),
		Rate: out.Rate() * float64(per), Unit: "puts/s", Latency: out.Samples.Summary(),
	}
	if spec.Kind == LinearGet {
		row.Unit = "gets/s"
	}
	if spec.Kind == BatchedPut {
		row.Case = fmt.Sprintf("put, %d per txn", spec.Batch)
		row.Extra = map[string]float64{"txns/s": out.Rate()}
	}
	return Ceiling{Spec: spec, Rate: row.Rate, Row: row}, nil
}

// preload writes every key, in Txns of up to 128 Puts (etcd's default
// --max-txn-ops, so it works on any etcd).
func (e *Env) preload(ctx context.Context, keys [][]string) error {
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := e.Etcd.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		if err != nil {
			return fmt.Errorf("bench: preload the ceiling's keys: %w", err)
		}
		return nil
	}
	for _, ks := range keys {
		for _, k := range ks {
			ops = append(ops, clientv3.OpPut(k, ceilingValue))
			if len(ops) == 128 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// fence creates the ceiling's fence key if it is not there yet and returns
// its create revision, which every ceiling Txn compares.
func (e *Env) fence(ctx context.Context) (int64, error) {
	key := e.ceilingPrefix() + "owner/00000"
	resp, err := e.Etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, "bench")).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("bench: create the ceiling's fence key: %w", err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	return resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision, nil
}
