package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/node"
)

// One etcd (without fsync: these tests check behaviour, never speed) serves
// every test; each cluster works under its own prefix.
var sharedEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &sharedEtcd) }

// tiny is a profile that runs every phase briefly with two callers.
func tiny() Profile {
	return Profile{
		Name: "tiny", Phase: 300 * time.Millisecond, Warmup: 50 * time.Millisecond,
		Concurrency: []int{2}, Batches: []Batch{{Clients: 2, Size: 8}},
	}
}

// tinyRunTimeout bounds one tiny run: seconds on a calm machine, but CI
// runs them under the race detector beside other test binaries.
const tinyRunTimeout = 5 * time.Minute

// tinyLeaseTTL is the tiny clusters' lease: 2 s, or 6 s under the race
// detector, which slows everything several times (a 2 s lease starved on
// a loaded CI machine, and the run failed for it).
func tinyLeaseTTL() time.Duration {
	if raceEnabled {
		return 6 * time.Second
	}
	return 2 * time.Second
}

func tinyCluster(nodes int) ClusterConfig {
	return ClusterConfig{Nodes: nodes, Partitions: 16, LeaseTTL: tinyLeaseTTL(), EtcdEndpoints: sharedEtcd.Endpoints()}
}

// requireSane checks what any measured row must satisfy, whatever the
// machine's speed.
func requireSane(t *testing.T, r Result) {
	t.Helper()
	require.Positive(t, r.Count, "%s: count", r.Case)
	require.Positive(t, r.Rate, "%s: rate", r.Case)
	require.Positive(t, r.Seconds, "%s: seconds", r.Case)
	require.NotEmpty(t, r.Unit, "%s: unit", r.Case)
	require.Zero(t, r.Errors, "%s: errors", r.Case)
	l := r.Latency
	require.NotNil(t, l, "%s: latency", r.Case)
	require.Positive(t, l.P50, "%s: p50", r.Case)
	require.True(t, l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max, "%s: percentiles out of order: %+v", r.Case, *l)
	for _, c := range r.Ceilings {
		require.Positive(t, c.Rate, "%s: ceiling %s", r.Case, c.Name)
		require.InDelta(t, r.Rate/c.Rate, c.Ratio, 1e-9, "%s: ratio to %s", r.Case, c.Name)
	}
}

// TestEtcdAndInvokeTinyRun runs the etcd and invoke scenarios end to end on
// a two-node embedded cluster and checks that every case measured something
// sane, that the invoke rows stand beside their ceilings and targets, and
// that the run leaves no key behind.
func TestEtcdAndInvokeTinyRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	rep, err := Run(ctx, []Scenario{EtcdScenario{}, InvokeScenario{}}, Options{Profile: tiny(), Cluster: tinyCluster(2)})
	require.NoError(t, err)
	require.Empty(t, rep.Error)
	require.Equal(t, []string{"etcd", "invoke"}, rep.Params.Scenarios)
	require.Equal(t, "embedded", rep.Params.Cluster)
	require.NotZero(t, rep.Machine.CPUs)

	byCase := map[string]Result{}
	for _, r := range rep.Results {
		requireSane(t, r)
		byCase[r.Scenario+"/"+r.Case] = r
	}
	for _, c := range []string{
		"etcd/put, 1 per txn", "etcd/put, 8 per txn", "etcd/get, linearizable",
		"invoke/get via owner", "invoke/get via non-owner", "invoke/get open loop, ½ target rate",
		"invoke/increment via owner", "invoke/increment via non-owner", "invoke/increment open loop, ½ target rate",
	} {
		require.Contains(t, byCase, c)
	}
	require.Len(t, rep.Results, 9, "each ceiling is measured once: invoke reuses the etcd scenario's")

	for _, c := range []string{"invoke/get via owner", "invoke/get via non-owner"} {
		require.Len(t, byCase[c].Ceilings, 1, c)
		require.Contains(t, byCase[c].Ceilings[0].Name, "etcd get c=2")
	}
	for _, c := range []string{"invoke/increment via owner", "invoke/increment via non-owner"} {
		cs := byCase[c].Ceilings
		require.Len(t, cs, 2, c)
		require.Equal(t, "etcd 1-put txn c=2", cs[0].Name)
		require.Equal(t, "etcd batched put 2×8 / 2 keys per increment", cs[1].Name)
		require.InDelta(t, byCase["etcd/put, 8 per txn"].Rate/2, cs[1].Rate, 1e-9)
	}
	require.Equal(t, &Target{Metric: "rate", Op: ">=", Value: 20000, Met: byCase["invoke/get via owner"].Rate >= 20000},
		byCase["invoke/get via owner"].Target)
	require.Equal(t, 10000.0, byCase["invoke/increment via owner"].Target.Value)
	open := byCase["invoke/increment open loop, ½ target rate"]
	require.Equal(t, "p99_ms", open.Target.Metric)
	require.InDelta(t, float64(targetWritesPerSec)/2, open.Extra["offered_ops/s"], 1e-9)

	resp, err := sharedEtcd.Client()
	require.NoError(t, err)
	defer resp.Close()
	left, err := resp.Get(ctx, "/durable-bench", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, left.Count, "the run's keys are gone")
}

// TestInvokeOverMTLSTinyRun measures invoke on plaintext, then again on a
// second cluster secured with mutual TLS: every row exists for both
// transports, every call succeeded, each mTLS row is compared with its
// plaintext row and placed beside the same ceilings, and the run leaves no
// key and no certificate behind.
func TestInvokeOverMTLSTinyRun(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where the cluster writes its certificates
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	rep, err := Run(ctx, []Scenario{InvokeScenario{MTLS: true}}, Options{Profile: tiny(), Cluster: tinyCluster(2)})
	require.NoError(t, err)

	rows := map[string]Result{}
	for _, r := range rep.Results {
		requireSane(t, r)
		if r.Scenario == "invoke" {
			rows[r.Transport+"/"+r.Case] = r
		}
	}
	cases := []string{
		"get via owner", "get via non-owner", "get open loop, ½ target rate",
		"increment via owner", "increment via non-owner", "increment open loop, ½ target rate",
	}
	for _, c := range cases {
		plain, ok := rows["plaintext/"+c]
		require.True(t, ok, "no plaintext row %q", c)
		require.Nil(t, plain.VsPlaintext, c)
		m, ok := rows["mtls/"+c]
		require.True(t, ok, "no mtls row %q", c)
		require.NotNil(t, m.VsPlaintext, c)
		require.InDelta(t, m.Rate/plain.Rate, m.VsPlaintext.Rate, 1e-9, c)
		require.InDelta(t, m.Latency.P50/plain.Latency.P50, m.VsPlaintext.P50, 1e-9, c)
		require.Len(t, m.Ceilings, len(plain.Ceilings), c)
		for i, pc := range plain.Ceilings {
			require.Equal(t, pc.Name, m.Ceilings[i].Name, "%s: beside the same ceilings", c)
			require.Equal(t, pc.Rate, m.Ceilings[i].Rate, "%s: beside the same ceilings", c)
		}
	}
	require.Len(t, rows, 2*len(cases))

	resp, err := sharedEtcd.Client()
	require.NoError(t, err)
	defer resp.Close()
	left, err := resp.Get(ctx, "/durable-bench", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, left.Count, "the run's keys are gone")
	pki, err := filepath.Glob(filepath.Join(tmp, "durable-bench-pki-*"))
	require.NoError(t, err)
	require.Empty(t, pki, "the certificates are gone")
}

// TestAlarmsTinyRun runs the alarms scenario end to end with a few hundred
// alarms: every alarm fires once, not early, and the rows are sane.
// TestObservabilityTinyRun measures invoke and alarms in one run on nodes
// without metrics, with metrics and with metrics and tracing: every row
// exists for all three, every call succeeded and every alarm ran once,
// each metrics and tracing row is compared with its off row, and the run
// leaves no key behind.
func TestObservabilityTinyRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	p := tiny()
	p.Alarms = 120 // three clusters under -race beside other packages' tests: keep the arming short
	rep, err := Run(ctx, []Scenario{InvokeScenario{CompareObservability: true}, AlarmsScenario{CompareObservability: true}},
		Options{Profile: p, Cluster: tinyCluster(2)})
	require.NoError(t, err)

	rows := map[string]Result{}
	for _, r := range rep.Results {
		if r.Scenario == "etcd" || r.Unit == "bytes/alarm" {
			continue
		}
		requireSane(t, r)
		require.NotEmpty(t, r.Observability, "%s %s", r.Scenario, r.Case)
		rows[r.Scenario+"/"+r.Observability+"/"+r.Case] = r
	}
	cases := []string{
		"invoke/get via owner", "invoke/get via non-owner", "invoke/get open loop, ½ target rate",
		"invoke/increment via owner", "invoke/increment via non-owner", "invoke/increment open loop, ½ target rate",
		"alarms/same instant", fmt.Sprintf("alarms/spread, 20000/s for %s", time.Duration(p.Alarms)*time.Second/20000),
	}
	for _, c := range cases {
		sc, name, _ := strings.Cut(c, "/")
		off, ok := rows[sc+"/"+ObsOff+"/"+name]
		require.True(t, ok, "no off row %q", c)
		require.Nil(t, off.VsOff, c)
		for _, obs := range []string{ObsMetrics, ObsTracing} {
			r, ok := rows[sc+"/"+obs+"/"+name]
			require.True(t, ok, "no %s row %q", obs, c)
			require.Contains(t, []string{"", Plaintext}, r.Transport, c)
			require.NotNil(t, r.VsOff, "%s %s", obs, c)
			require.InDelta(t, r.Rate/off.Rate, r.VsOff.Rate, 1e-9, c)
			if sc == "alarms" {
				require.EqualValues(t, p.Alarms, r.Count, c)
				require.Zero(t, r.Extra["duplicate_runs"], c)
			}
		}
	}
	require.Len(t, rows, 3*len(cases))

	resp, err := sharedEtcd.Client()
	require.NoError(t, err)
	defer resp.Close()
	left, err := resp.Get(ctx, "/durable-bench", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Zero(t, left.Count, "the run's keys are gone")
}

// TestInvokePathsTinyRun measures invoke through the untyped gRPC path,
// typed dispatch and the HTTP front door in one run: every row exists for
// all three, every call succeeded, and each typed and http row is compared
// with its grpc row.
func TestInvokePathsTinyRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	rep, err := Run(ctx, []Scenario{InvokeScenario{ComparePaths: true}}, Options{Profile: tiny(), Cluster: tinyCluster(2)})
	require.NoError(t, err)

	rows := map[string]Result{}
	for _, r := range rep.Results {
		if r.Scenario != "invoke" {
			continue
		}
		requireSane(t, r)
		rows[r.Path+"/"+r.Case] = r
	}
	cases := []string{
		"get via owner", "get via non-owner", "get open loop, ½ target rate",
		"increment via owner", "increment via non-owner", "increment open loop, ½ target rate",
	}
	for _, c := range cases {
		base, ok := rows[PathGRPC+"/"+c]
		require.True(t, ok, "no grpc row %q", c)
		require.Nil(t, base.VsGRPC, c)
		for _, p := range []string{PathTyped, PathHTTP} {
			r, ok := rows[p+"/"+c]
			require.True(t, ok, "no %s row %q", p, c)
			require.NotNil(t, r.VsGRPC, "%s %s", p, c)
			require.InDelta(t, r.Rate/base.Rate, r.VsGRPC.Rate, 1e-9, c)
		}
	}
	require.Len(t, rows, 3*len(cases))
}

func TestAlarmsTinyRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	p := tiny()
	p.Alarms = 300
	rep, err := Run(ctx, []Scenario{AlarmsScenario{}}, Options{Profile: p, Cluster: tinyCluster(2)})
	require.NoError(t, err)
	byCase := map[string]Result{}
	for _, r := range rep.Results {
		byCase[r.Scenario+"/"+r.Case] = r
	}
	for _, c := range []string{"alarms/same instant", "alarms/spread, 20000/s for 15ms"} {
		r, ok := byCase[c]
		require.True(t, ok, "no row %q in %v", c, byCase)
		requireSane(t, r)
		require.EqualValues(t, 300, r.Count)
		require.Zero(t, r.Extra["duplicate_runs"])
		require.NotNil(t, r.Target)
	}
	mem := byCase["alarms/memory per pending alarm"]
	require.EqualValues(t, 300, mem.Count)
	require.Positive(t, mem.Rate, "the schedulers hold the pending alarms")
	require.Equal(t, "bytes/alarm", mem.Unit)

	// --cases runs only the cases named.
	rep, err = Run(ctx, []Scenario{AlarmsScenario{Cases: []string{"spread"}}}, Options{Profile: p, Cluster: tinyCluster(2)})
	require.NoError(t, err)
	var cases []string
	for _, r := range rep.Results {
		if r.Scenario == "alarms" {
			cases = append(cases, r.Case)
		}
	}
	require.Equal(t, []string{"spread, 20000/s for 15ms"}, cases)
}

// TestOverloadTinyRun offers 2×, 5× and 10× the measured capacity of
// new-object calls and runs alarms on a loaded one-node cluster: every
// phase measured something, including lease losses and lost tenures, and
// every refusal carried a retry-after.
func TestOverloadTinyRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	p := tiny()
	p.Alarms = 300
	rep, err := Run(ctx, []Scenario{OverloadScenario{AlarmLeaseTTL: tinyLeaseTTL()}}, Options{Profile: p, Cluster: tinyCluster(2)})
	require.NoError(t, err)
	var cases []string
	for _, r := range rep.Results {
		cases = append(cases, r.Case)
		require.Positive(t, r.Count, "%s: count", r.Case)
		if !strings.HasSuffix(r.Case, "capacity offered") {
			continue
		}
		for _, k := range []string{"refused", "refused_without_retry_after", "lease_losses", "partitions_lost"} {
			require.Contains(t, r.Extra, k, "%s: %s not measured", r.Case, k)
		}
		require.Zero(t, r.Extra["refused_without_retry_after"], "%s", r.Case)
		// Lease losses and refusals are measured, not asserted: under the
		// race detector, with the load generated in the same process and
		// other test binaries on the two cores, a 2 s lease can starve at
		// 5× (a CI run lost two) and a 300 ms phase may offer too little to
		// be refused at 10× (another offered too little). The targets are
		// the benchmark's (durable bench overload reports them met or
		// missed); refusals are tested deterministically in
		// node/overload_test.go.
	}
	require.Equal(t, []string{"capacity, new objects", "2× capacity offered", "5× capacity offered", "10× capacity offered",
		fmt.Sprintf("alarms on one node (TTL %s), 300 over 150ms", tinyLeaseTTL())}, cases)
}

// TestFailoverTinyRun crashes one node of three holding a few hundred
// overdue alarms: they all fire, on the survivors, after the crash.
func TestFailoverTinyRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	p := tiny()
	p.Alarms = 200
	rep, err := Run(ctx, []Scenario{FailoverScenario{}}, Options{Profile: p, Cluster: tinyCluster(3)})
	require.NoError(t, err)
	require.Len(t, rep.Results, 1)
	r := rep.Results[0]
	requireSane(t, r)
	require.EqualValues(t, 200, r.Count)
	require.Equal(t, 400.0, r.Extra["stored_not_due"])
	require.Zero(t, r.Extra["duplicate_runs"])
	require.GreaterOrEqual(t, r.Extra["last_s"], r.Extra["first_s"])
	require.Equal(t, "first_ms", r.Target.Metric)
	require.Equal(t, float64((tinyLeaseTTL() + 2*time.Second).Milliseconds()), r.Target.Value, "lease TTL + 2s")
}

// TestInvokeAloneMeasuresItsCeilings: without the etcd scenario before it,
// invoke measures the ceilings it needs itself, and they are reported as
// etcd rows.
func TestInvokeAloneMeasuresItsCeilings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	rep, err := Run(ctx, []Scenario{InvokeScenario{}}, Options{Profile: tiny(), Cluster: tinyCluster(1)})
	require.NoError(t, err)
	var etcdRows, invokeRows int
	for _, r := range rep.Results {
		requireSane(t, r)
		switch r.Scenario {
		case "etcd":
			etcdRows++
		case "invoke":
			invokeRows++
			if strings.Contains(r.Case, "via owner") {
				require.NotEmpty(t, r.Ceilings, r.Case)
			}
		}
	}
	require.Equal(t, 3, etcdRows, "put c=2, get c=2 and the batched put")
	require.Equal(t, 4, invokeRows, "one node: no forwarded cases")
}

// echo replies with its payload.
type echo struct{}

func (echo) Invoke(_ context.Context, _ string, payload []byte) ([]byte, error) { return payload, nil }

// killer is shaped like a scenario that needs the embedded cluster: it
// registers its own class before the nodes start, calls it, then kills a
// node and waits for the survivors to own every partition.
type killer struct{ prepared bool }

func (*killer) Name() string { return "killer" }

func (k *killer) Prepare(reg *node.Registry, cfg *node.Config) error {
	k.prepared = cfg.Prefix != ""
	return node.RegisterClass(reg, "Echo", func(context.Context, durable.State) (*echo, error) { return &echo{}, nil })
}

func (k *killer) Run(ctx context.Context, env *Env) ([]Result, error) {
	resp, err := env.Client.Invoke(ctx, "Echo", client.ByName("x"), "say", []byte("hello"))
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := env.Cluster.Kill(1); err != nil {
		return nil, err
	}
	if err := env.Cluster.WaitSettled(ctx, nil); err != nil {
		return nil, err
	}
	return []Result{{
		Scenario: "killer", Case: string(resp.GetPayload()), Count: 1, Seconds: time.Since(start).Seconds(), Rate: 1, Unit: "kills/s",
	}}, nil
}

func TestScenarioPreparesClassesAndKillsNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
	defer cancel()
	k := &killer{}
	rep, err := Run(ctx, []Scenario{k}, Options{Profile: tiny(), Cluster: tinyCluster(2)})
	require.NoError(t, err)
	require.True(t, k.prepared)
	require.Len(t, rep.Results, 1)
	require.Equal(t, "hello", rep.Results[0].Case)
}

// TestStoppedRunKeepsWhatItMeasured: a run whose context ends returns the
// error and a report that says why it stopped.
func TestStoppedRunKeepsWhatItMeasured(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stopper := stopScenario{cancel: cancel}
	rep, err := Run(ctx, []Scenario{stopper, InvokeScenario{}}, Options{Profile: tiny(), Cluster: tinyCluster(1)})
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, rep)
	require.Contains(t, rep.Error, "before invoke")
	require.Len(t, rep.Results, 1, "the stopper's row")
}

// stopScenario reports one row and ends the run's context.
type stopScenario struct{ cancel context.CancelFunc }

func (stopScenario) Name() string { return "stop" }

func (s stopScenario) Run(context.Context, *Env) ([]Result, error) {
	s.cancel()
	return []Result{{Scenario: "stop", Case: "stop", Count: 1, Rate: 1, Seconds: 1, Unit: "ops/s"}}, nil
}

// TestObservabilityOffSkipsMetricsOnly: nodes of an off cluster answer
// calls but count none of them; nodes with metrics (and with tracing) count
// every one. The off half is what the cost comparison measures against.
func TestObservabilityOffSkipsMetricsOnly(t *testing.T) {
	for _, tc := range []struct {
		obs     string
		counted bool
	}{
		{ObsOff, false},
		{ObsMetrics, true},
		{ObsTracing, true},
	} {
		t.Run(tc.obs, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tinyRunTimeout)
			defer cancel()
			cfg := tinyCluster(1)
			cfg.Observability = tc.obs
			c, err := StartCluster(ctx, cfg)
			require.NoError(t, err)
			defer func() { require.NoError(t, c.Close()) }()
			require.Equal(t, tc.obs, c.Observability())
			cl, err := client.Dial(c.Addrs()[0], client.Options{})
			require.NoError(t, err)
			defer cl.Close()
			for range 3 {
				_, err := cl.Invoke(ctx, counterClass, client.ByName("obs"), "increment", nil)
				require.NoError(t, err)
			}
			m := c.Agent(0).Metrics()
			require.Equal(t, tc.counted, m.Enabled())
			want := 0.0
			if tc.counted {
				want = 3
			}
			require.Equal(t, want, metrics.Value(m.Invocations))
		})
	}
}
