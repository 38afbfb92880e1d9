package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// InvokeScenario measures invocations of the example Counter:
//
//   - get is read-only: served from the object's cache, no etcd write;
//   - increment writes the value and the request-id record in one fenced
//     etcd Txn per call (until group commit batches them).
//
// Each is run in a closed loop at several concurrencies, every caller on its
// own object, (1) via the owner — the Go client learns owners and calls them
// directly — and (2) via a non-owner: one client per node, pinned to it
// (NoDirect), each caller's object owned by another node, so every call is
// forwarded once. Then an open loop sends each method via the owner at half
// its target rate, with latency measured from the intended send time.
// Targets (DESIGN §7): ≥ 20,000 read-only and ≥ 10,000 writing
// invocations/s, p99 ≤ 10 ms at half load.
//
// With MTLS, every row is also measured on a second embedded cluster like
// the first but secured with mutual TLS 1.3 (ClusterConfig.MTLS, Cluster.Twin),
// on the same etcd, each mTLS phase right after its plaintext one and
// beside the same etcd ceilings; each mTLS row carries its ratios to the
// plaintext one (Result.VsPlaintext).
//
// With CompareObservability, every plaintext row is measured on three
// clusters the same way (Cluster.Twin for the two the run did not start
// with): nodes without metrics updates or tracing (ObsOff), with metrics
// (ObsMetrics, as nodes run by default) and with metrics and every span
// traced (ObsTracing), their phases taking turns; each row carries its
// ratios to the off one (Result.VsOff).
//
// With ComparePaths, every row is measured over three paths to the same
// storage work on each cluster, their phases taking turns (Result.Path):
// an untyped twin of Counter over gRPC (PathGRPC, the baseline), the typed
// Counter called with client.Call (PathTyped) and the untyped twin through
// the nodes' HTTP front door (PathHTTP); each typed and http row carries
// its ratios to the grpc one (Result.VsGRPC). Without it, the rows call
// the typed Counter with client.Invoke, as they always have.
type InvokeScenario struct {
	// MTLS also measures every row over mutual TLS (an embedded cluster
	// only; a given one is measured as it is).
	MTLS bool
	// CompareObservability also measures every row on nodes with other
	// observability (an embedded cluster only).
	CompareObservability bool
	// ComparePaths also measures every row through typed dispatch and the
	// HTTP front door, beside an untyped gRPC baseline (an embedded cluster
	// only).
	ComparePaths bool
}

// Name implements Scenario.
func (InvokeScenario) Name() string { return "invoke" }

// Description implements Describer.
func (InvokeScenario) Description() string {
	return "Counter.get and Counter.increment via the owner and forwarded, closed loop, then open loop at half load"
}

// The DESIGN §7 invocation targets.
const (
	targetReadsPerSec  = 20000
	targetWritesPerSec = 10000
	targetP99HalfLoad  = 10 // ms
)

const counterClass = "Counter"

// Run implements Scenario.
func (s InvokeScenario) Run(ctx context.Context, env *Env) (_ []Result, err error) {
	levels := env.Profile.Levels([]int{64, 256}, []int{1, 16, 64, 256})
	ceil, err := measureInvokeCeilings(ctx, env, levels)
	if err != nil {
		return nil, err
	}
	envs, obs, closeObs, err := env.observabilities(ctx, s.CompareObservability, "invoke")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeObs()) }()
	switch {
	case !s.MTLS || env.Transport == MTLS:
	case env.Cluster == nil:
		env.Progress.Linef("%-36s skipped: a given cluster (--addr) is measured as it is", "invoke over mTLS")
	default:
		twin, err := env.Cluster.Twin(ctx, func(cfg *ClusterConfig) { cfg.MTLS = true })
		if err != nil {
			return nil, err
		}
		sub, closeSub, err := env.sub(ctx, twin)
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, closeSub()) }()
		label := ""
		if len(envs) > 1 { // observability compared: the twin's rows are labelled too
			label = twin.Observability()
		}
		envs, obs = append(envs, sub), append(obs, label)
	}
	ways := []string{""}
	switch {
	case !s.ComparePaths:
	case env.Cluster == nil:
		env.Progress.Linef("%-36s skipped: a given cluster (--addr) is measured as it is", "invoke paths")
	default:
		ways = paths
	}
	var (
		sides []side
		tops  []*topology
	)
	defer func() {
		for _, t := range tops {
			t.close()
		}
		for _, sd := range sides {
			if sd.http != nil {
				sd.http.CloseIdleConnections()
			}
		}
	}()
	for i, e := range envs {
		top, err := discover(ctx, e)
		if err != nil {
			return nil, err
		}
		tops = append(tops, top)
		for _, w := range ways {
			sd := side{env: e, top: top, obs: obs[i], path: w}
			if w == PathHTTP {
				sd.http = newHTTPClient(slices.Max(levels))
			}
			sides = append(sides, sd)
		}
	}

	var rows []Result
	for _, method := range []string{"get", "increment"} {
		r, err := invokeMethod(ctx, sides, ceil, method, levels)
		rows = append(rows, r...)
		if err != nil {
			return rows, err
		}
	}
	compareTransports(rows)
	compareObservability(rows)
	comparePaths(rows)
	return rows, nil
}

// side is one cluster and path of the comparisons: the cluster the run
// started, with MTLS its secured twin, with CompareObservability its twins
// of other observability; with ComparePaths each of them three times, once
// per path.
type side struct {
	env  *Env
	top  *topology
	obs  string       // the rows' Observability: set only when compared
	path string       // the rows' Path: set only when compared
	http *http.Client // the front door's client on PathHTTP
}

// compareTransports sets VsPlaintext of every mtls row that has a
// plaintext row of the same observability, case and concurrency.
func compareTransports(rows []Result) {
	for i := range rows {
		m := &rows[i]
		if m.Transport != MTLS {
			continue
		}
		j := slices.IndexFunc(rows, func(p Result) bool {
			return p.Transport == Plaintext && p.Observability == m.Observability && p.Path == m.Path && p.Case == m.Case && p.Concurrency == m.Concurrency
		})
		if j >= 0 {
			m.VsPlaintext = m.versus(rows[j])
		}
	}
}

// compareObservability sets VsOff of every row measured with metrics or
// tracing that has an off row of the same transport, case and concurrency.
func compareObservability(rows []Result) {
	for i := range rows {
		m := &rows[i]
		if m.Observability == "" || m.Observability == ObsOff {
			continue
		}
		j := slices.IndexFunc(rows, func(p Result) bool {
			return p.Observability == ObsOff && p.Transport == m.Transport && p.Path == m.Path && p.Case == m.Case && p.Concurrency == m.Concurrency
		})
		if j >= 0 {
			m.VsOff = m.versus(rows[j])
		}
	}
}

// invokeMethod measures one method on every side: closed loops via the
// owner and forwarded at every level, then the open loop at half the
// target rate. The sides take turns phase by phase, so that the rows
// compared with one another are measured seconds apart, under the same
// load from the rest of the machine.
func invokeMethod(ctx context.Context, sides []side, ceil *invokeCeilings, method string, levels []int) ([]Result, error) {
	maxC := slices.Max(levels)
	viaOwner := make([]Op, len(sides))
	viaOther := make([]Op, len(sides)) // nil on one node
	for i, sd := range sides {
		var err error
		if viaOwner[i], viaOther[i], err = sd.ops(ctx, method, maxC); err != nil {
			return nil, err
		}
	}

	var rows []Result
	best := make([]int, len(sides)) // each side's best row via the owner
	for _, c := range levels {
		for i, sd := range sides {
			row, err := invokePhase(ctx, sd, method, "owner", c, viaOwner[i])
			if err != nil {
				return rows, err
			}
			ceil.place(&row, method, c)
			rows = append(rows, row)
			if c == levels[0] || row.Rate > rows[best[i]].Rate {
				best[i] = len(rows) - 1
			}
		}
	}
	target := float64(targetWritesPerSec)
	if method == "get" {
		target = targetReadsPerSec
	}
	for _, b := range best {
		rows[b].Target, rows[b].Note = AtLeast(target, rows[b].Rate), "best via the owner"
	}

	if viaOther[0] == nil {
		sides[0].env.Progress.Linef("%-36s skipped: one node, nothing to forward", "invoke "+method+" via non-owner")
	} else {
		for _, c := range levels {
			for i, sd := range sides {
				row, err := invokePhase(ctx, sd, method, "non-owner", c, viaOther[i])
				if err != nil {
					return rows, err
				}
				ceil.place(&row, method, c)
				rows = append(rows, row)
			}
		}
	}

	// Open loop at half the target rate ("p99 ≤ 10 ms at half that load")
	// via the owner, over as many objects as the best run had callers.
	rate := target / 2
	for i, sd := range sides {
		env, objects := sd.env, rows[best[i]].Concurrency
		load := Load{
			Name: fmt.Sprintf("invoke %s open loop %s/s%s", method, number(rate), sd.over()), Concurrency: objects,
			Warmup: env.Profile.Warmup, Duration: env.Profile.Phase, Unit: "ops", Op: viaOwner[i],
		}
		out, err := load.Open(ctx, env.Progress, rate)
		if err != nil {
			return rows, err
		}
		row := Result{
			Scenario: "invoke", Case: method + " open loop, ½ target rate", Count: out.Count, Errors: out.Errors,
			Seconds: out.Elapsed.Seconds(), Rate: out.Rate(), Unit: "ops/s", Latency: out.Samples.Summary(),
			Extra:     map[string]float64{"offered_ops/s": rate, "objects": float64(objects), "overrun_ms": ms(out.Overrun)},
			Note:      "latency from the intended send time",
			Transport: env.Transport, Observability: sd.obs, Path: sd.path,
		}
		row.Target = P99AtMost(targetP99HalfLoad, row.Latency)
		if row.Latency != nil {
			row.Extra["p99.9_ms"] = row.Latency.P999
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// ops returns the side's operations on method for up to n callers, each on
// its own object, activated first: via the owner, and through a node that
// does not own the object (nil on one node).
func (sd side) ops(ctx context.Context, method string, n int) (viaOwner, viaOther Op, err error) {
	env, class, name := sd.env, classOf(sd.path), fmt.Sprintf("bench-%s-%s", sd.env.RunID, method)
	if sd.path != "" {
		name += "-" + sd.path
	}
	direct := make([]string, n)
	for i := range direct {
		direct[i] = fmt.Sprintf("%s-%d", name, i)
	}
	forwarded, err := sd.top.forwardedObjects(class, name, n)
	if err != nil {
		return nil, nil, err
	}
	if err := warm(ctx, env, class, append(slices.Clone(direct), forwarded.names...)); err != nil {
		return nil, nil, err
	}
	switch sd.path {
	case PathTyped:
		call := func(ctx context.Context, cl *client.Client, name string) error {
			if method == "get" {
				_, err := client.Call(ctx, cl, class, client.ByName(name), examples.CounterGet, struct{}{})
				return err
			}
			_, err := client.Call(ctx, cl, class, client.ByName(name), examples.CounterIncrement, nil)
			return err
		}
		viaOwner = func(ctx context.Context, w int) error { return call(ctx, env.Client, direct[w]) }
		if len(forwarded.names) > 0 {
			viaOther = func(ctx context.Context, w int) error {
				return call(ctx, sd.top.seeds[forwarded.via[w]].client, forwarded.names[w])
			}
		}
	case PathHTTP:
		// The front door forwards as a node does: via the owner means to
		// the owner's door.
		owner := make([]string, n)
		for w, nm := range direct {
			if owner[w], err = sd.top.ownerHTTP(class, nm); err != nil {
				return nil, nil, err
			}
		}
		viaOwner = func(ctx context.Context, w int) error {
			return invokeHTTP(ctx, sd.http, owner[w], class, direct[w], method)
		}
		if len(forwarded.names) > 0 {
			viaOther = func(ctx context.Context, w int) error {
				return invokeHTTP(ctx, sd.http, sd.top.seeds[forwarded.via[w]].http, class, forwarded.names[w], method)
			}
		}
	default:
		viaOwner = func(ctx context.Context, w int) error {
			_, err := env.Client.Invoke(ctx, class, client.ByName(direct[w]), method, nil)
			return err
		}
		if len(forwarded.names) > 0 {
			viaOther = func(ctx context.Context, w int) error {
				_, err := sd.top.seeds[forwarded.via[w]].client.Invoke(ctx, class, client.ByName(forwarded.names[w]), method, nil)
				return err
			}
		}
	}
	return viaOwner, viaOther, nil
}

// invokePhase runs one closed-loop phase and returns its row.
func invokePhase(ctx context.Context, sd side, method, route string, c int, op Op) (Result, error) {
	env := sd.env
	load := Load{
		Name: fmt.Sprintf("invoke %s via %s c=%d%s", method, route, c, sd.over()), Concurrency: c,
		Warmup: env.Profile.Warmup, Duration: env.Profile.Phase, Unit: "ops", Op: op,
	}
	out, err := load.Closed(ctx, env.Progress)
	if err != nil {
		return Result{}, err
	}
	return Result{
		Scenario: "invoke", Case: method + " via " + route, Concurrency: c, Count: out.Count, Errors: out.Errors,
		Seconds: out.Elapsed.Seconds(), Rate: out.Rate(), Unit: "ops/s", Latency: out.Samples.Summary(),
		Transport: env.Transport, Observability: sd.obs, Path: sd.path,
	}, nil
}

// over names the side's transport, compared observability and compared
// path in progress lines: e.g. " over mTLS", " (metrics+tracing)",
// " (typed)", or nothing.
func (sd side) over() string {
	s := over(sd.env)
	if sd.obs != "" {
		s += " (" + sd.obs + ")"
	}
	if sd.path != "" {
		s += " (" + sd.path + ")"
	}
	return s
}

// over names env's transport in progress lines: " over mTLS", or nothing
// for plaintext.
func over(env *Env) string {
	if env.Transport == MTLS {
		return " over mTLS"
	}
	return ""
}

// invokeCeilings holds the etcd ceilings the invoke rows are printed
// beside; empty without etcd.
type invokeCeilings struct {
	get, put map[int]Ceiling
	batch    Ceiling
}

// measureInvokeCeilings measures (or looks up) the ceilings of every level
// before the first phase, so no ceiling runs between invocation phases.
func measureInvokeCeilings(ctx context.Context, env *Env, levels []int) (*invokeCeilings, error) {
	ic := &invokeCeilings{get: map[int]Ceiling{}, put: map[int]Ceiling{}}
	if env.Etcd == nil {
		return ic, nil
	}
	var err error
	for _, c := range levels {
		if ic.put[c], err = env.Ceiling(ctx, PutCeiling(c)); err != nil {
			return nil, err
		}
		if ic.get[c], err = env.Ceiling(ctx, GetCeiling(c)); err != nil {
			return nil, err
		}
	}
	if ic.batch, err = env.BestBatchedPut(ctx); err != nil {
		return nil, err
	}
	return ic, nil
}

// place adds the ceilings of method at concurrency c to row: for get the
// raw get ceiling (for scale only: gets are served from memory); for
// increment the 1-put txn ceiling at the same concurrency (one Txn per
// increment today) and the batched-put ceiling halved (an increment writes
// two keys: the value and the request-id record).
func (ic *invokeCeilings) place(row *Result, method string, c int) {
	if method == "get" {
		if g, ok := ic.get[c]; ok {
			row.Ceiling(g.Spec.String()+" (scale only)", g.Rate)
		}
		return
	}
	if p, ok := ic.put[c]; ok {
		row.Ceiling(p.Spec.String(), p.Rate)
	}
	if ic.batch.Rate > 0 {
		row.Ceiling(ic.batch.Spec.String()+" / 2 keys per increment", ic.batch.Rate/2)
	}
}

// warm calls increment once on every object of class, 32 at a time, so
// the measured phases find them active, with a value, and the direct client
// knows their owners.
func warm(ctx context.Context, env *Env, class string, names []string) error {
	return each(ctx, env, fmt.Sprintf("invoke: activate %d %s objects%s", len(names), class, over(env)), len(names), 32, func(ctx context.Context, i int) error {
		if _, err := env.Client.Invoke(ctx, class, client.ByName(names[i]), "increment", nil); err != nil {
			return fmt.Errorf("bench: activate %s %s: %w", class, names[i], err)
		}
		return nil
	})
}

// topology is what the invoke scenario knows of the cluster: where each
// partition is owned, and one client pinned to each node.
type topology struct {
	partitions int
	owner      map[int]string // partition → the owner's advertised address
	seeds      []seed
}

// seed is one node as a forwarding entry point.
type seed struct {
	addr      string // as dialled
	advertise string // as the cluster names it
	http      string // its front door's address; "" on a given cluster
	client    *client.Client
}

// discover asks every node for the cluster's status (partition owners,
// node addresses) through a client pinned to it.
func discover(ctx context.Context, env *Env) (*topology, error) {
	top := &topology{owner: map[int]string{}}
	var doors []string // in the order of env.Nodes
	if env.Cluster != nil {
		doors = env.Cluster.HTTPAddrs()
	}
	for i, addr := range env.Nodes {
		cl, err := env.Dial(addr, client.Options{NoDirect: true})
		if err != nil {
			top.close()
			return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
		}
		s := seed{addr: addr, client: cl}
		if i < len(doors) {
			s.http = doors[i]
		}
		top.seeds = append(top.seeds, s)
	}
	for i := range top.seeds {
		s := &top.seeds[i]
		cctx, cancel := context.WithTimeout(ctx, opTimeout)
		st, err := s.client.Admin().Status(cctx, &durablev1.StatusRequest{})
		cancel()
		if err != nil {
			top.close()
			return nil, fmt.Errorf("bench: status of %s: %w", s.addr, err)
		}
		addrOf := map[string]string{}
		for _, n := range st.GetNodes() {
			addrOf[n.GetId()] = n.GetAddress()
		}
		s.advertise = addrOf[st.GetAnsweredBy()]
		if i == 0 {
			top.partitions = int(st.GetPartitionCount())
			for _, p := range st.GetPartitions() {
				if p.GetOwner() == "" {
					top.close()
					return nil, fmt.Errorf("bench: partition %d has no owner", p.GetPartition())
				}
				top.owner[int(p.GetPartition())] = addrOf[p.GetOwner()]
			}
		}
	}
	if top.partitions < 1 {
		top.close()
		return nil, errors.New("bench: the cluster reports no partitions")
	}
	return top, nil
}

func (t *topology) close() {
	for _, s := range t.seeds {
		_ = s.client.Close()
	}
}

// ownerHTTP returns the front door of the node that owns class/name.
func (t *topology) ownerHTTP(class, name string) (string, error) {
	owner := t.owner[durable.IDFromName(class, name).Partition(t.partitions)]
	for _, s := range t.seeds {
		if s.advertise == owner && s.http != "" {
			return s.http, nil
		}
	}
	return "", fmt.Errorf("bench: no front door for the owner (%s) of %s %s", owner, class, name)
}

// forwardedObjects are the objects of the forwarded route: caller i calls
// names[i] through seeds[via[i]], a node that does not own it. Callers are
// spread over the nodes round robin.
type forwardedObjects struct {
	names []string
	via   []int
}

// forwardedObjects picks n objects of class, named prefix-fwd-<j>.
func (t *topology) forwardedObjects(class, prefix string, n int) (forwardedObjects, error) {
	var f forwardedObjects
	if len(t.seeds) < 2 {
		return f, nil
	}
	j := 0
	for i := range n {
		k := i % len(t.seeds)
		s := t.seeds[k]
		for ; ; j++ {
			if j > 100*n+1000 {
				return f, fmt.Errorf("bench: no object of %d names is owned away from %s", j, s.addr)
			}
			name := fmt.Sprintf("%s-fwd-%d", prefix, j)
			p := durable.IDFromName(class, name).Partition(t.partitions)
			if t.owner[p] != s.advertise {
				f.names, f.via = append(f.names, name), append(f.via, k)
				j++
				break
			}
		}
	}
	return f, nil
}
