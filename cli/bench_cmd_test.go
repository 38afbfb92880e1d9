package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/bench"
	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/cli/clitest"
	"github.com/durable-run/durable/security"
)

func TestBenchListsEveryScenarioAndAll(t *testing.T) {
	out, err := run(context.Background(), "bench", "--help")
	require.NoError(t, err)
	for _, s := range bench.Scenarios() {
		require.Regexp(t, `\n\s+`+s.Name()+`\s`, out)
	}
	require.Regexp(t, `\n\s+all\s+Run every scenario in order: etcd, invoke`, out)
	require.NotContains(t, strings.SplitN(out, "all", 2)[1], "soak,", "the soak is not part of all")
}

func TestBenchRejectsBadFlagsAsUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"etcd", "--nodes", "0"}, "--nodes must be between 1 and 16"},
		{[]string{"etcd", "--nodes", "17"}, "--nodes must be between 1 and 16"},
		{[]string{"invoke", "--partitions", "0"}, "--partitions must be between 1 and 65536"},
		{[]string{"invoke", "--lease-ttl", "1500ms"}, "--lease-ttl 1.5s must be a whole number of seconds"},
		{[]string{"all", "--duration", "-1s"}, "--duration -1s must not be negative"},
		{[]string{"invoke", "--addr", "127.0.0.1:1", "--nodes", "2"}, "--nodes describes the embedded cluster"},
		{[]string{"invoke", "--addr", "127.0.0.1:1", "--mtls"}, "--mtls describes the embedded cluster"},
		{[]string{"etcd", "--addr", "127.0.0.1:1"}, "the etcd scenario needs the given cluster's etcd: add --etcd"},
		{[]string{"all", "--addr", "127.0.0.1:1"}, "add --etcd"},
		{[]string{"nope"}, `unknown scenario "nope": want etcd, invoke, alarms, failover, overload, peers, soak, objects or all`},
		{[]string{"soak", "--addr", "127.0.0.1:1"}, "soak: it needs the embedded cluster"},
		{[]string{"soak", "--duration", "1s"}, "duration 1s must be at least the period 5s"},
		{[]string{"soak", "--rate", "-5"}, "rate -5 must be positive"},
		{[]string{"soak", "--period", "1500us"}, "period 1.5ms must be a whole number of milliseconds"},
		{[]string{"alarms", "--alarms", "-1"}, "--alarms -1 must not be negative"},
		{[]string{"alarms", "--cases", "same-instant,bogus"}, `alarms: --cases: unknown case "bogus": want same-instant, spread, memory`},
		{[]string{"objects", "--objects", "-1"}, "--objects -1: must be positive"},
		{[]string{"objects", "--addr", "127.0.0.1:1"}, "objects: it needs the embedded cluster"},
		{[]string{"invoke", "--observability", "some"}, `--observability "some" must be off, metrics, metrics+tracing or compare`},
		{[]string{"invoke", "--addr", "127.0.0.1:1", "--observability", "compare"}, "--observability describes the embedded cluster"},
		{[]string{"invoke", "--paths", "all"}, `--paths "all" must be compare or empty`},
		{[]string{"invoke", "--addr", "127.0.0.1:1", "--paths", "compare"}, "--paths describes the embedded cluster"},
		{[]string{"invoke", "--tls-ca", "ca.pem"}, "--tls-ca reaches a given cluster (--addr)"},
		{[]string{"invoke", "--etcd-cert", "c.pem"}, "--etcd-cert reaches a given cluster (--addr)"},
		{[]string{"etcd", "--addr", "127.0.0.1:1", "--etcd", "https://127.0.0.1:1", "--etcd-cert", "c.pem"}, "--etcd-cert and --etcd-key go together"},
		{[]string{"invoke", "--addr", "127.0.0.1:1", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := run(context.Background(), append([]string{"bench"}, tc.args...)...)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, 2, cli.ExitCode(err))
		})
	}
}

// TestBenchEtcdShortJSON runs `durable bench etcd --short --json` for real
// (in-process etcd with fsync, one node), with the phase length from the
// environment, and reads the report back.
func TestBenchEtcdShortJSON(t *testing.T) {
	t.Setenv("DURABLE_DURATION", "200ms")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := run(ctx, "bench", "etcd", "--short", "--json", "--quiet", "--nodes", "1", "--partitions", "8")
	require.NoError(t, err)
	// Progress lines (stderr) and the report (stdout) share run's buffer:
	// the report is the JSON object at the end.
	i := strings.Index(out, "{\n")
	require.GreaterOrEqual(t, i, 0, out)
	var rep bench.Report
	require.NoError(t, json.Unmarshal([]byte(out[i:]), &rep), out)
	require.Equal(t, bench.ReportVersion, rep.Version)
	require.Equal(t, 0.2, rep.Params.PhaseSeconds)
	require.Equal(t, "short", rep.Params.Profile)
	require.Equal(t, 1, rep.Params.Nodes)
	require.True(t, rep.Params.EmbeddedEtcd)
	var cases []string
	for _, r := range rep.Results {
		require.Equal(t, "etcd", r.Scenario)
		require.Positive(t, r.Rate, r.Case)
		cases = append(cases, r.Case)
	}
	require.Equal(t, []string{"put, 1 per txn", "put, 64 per txn", "put, 512 per txn", "get, linearizable"}, cases)
	require.Contains(t, out, "etcd 1-put txn c=64 ", "a progress line per phase")
}

// TestBenchMeasuresASecuredClustersEtcd runs `durable bench etcd --addr`
// against `dev --secure`, whose etcd serves TLS only and requires client
// certificates: the ceilings' clients reach it with --etcd-ca, --etcd-cert
// and --etcd-key, as the nodes do (as etcd's root, who may write the
// ceilings' keys), and without them the bench stops at its first dial.
func TestBenchMeasuresASecuredClustersEtcd(t *testing.T) {
	t.Setenv("DURABLE_DURATION", "200ms")
	certs := t.TempDir()
	dev := clitest.StartDev(t, cli.TestOptions, "--secure", "--nodes", "1", "--partitions", "8", "--certs-dir", certs)
	require.True(t, strings.HasPrefix(dev.Etcd, "https://"), "dev --secure serves etcd over TLS: %s", dev.Etcd)
	p := security.Paths{Dir: certs}
	admin, root := p.Client("admin"), p.EtcdClient("root")
	args := []string{"bench", "etcd", "--short", "--json", "--quiet", "--addr", dev.Addrs[0], "--etcd", dev.Etcd,
		"--tls-ca", admin.CA, "--tls-cert", admin.Cert, "--tls-key", admin.Key}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	_, err := run(ctx, args...)
	require.ErrorContains(t, err, "does not answer", "no etcd credentials: refused")

	out, err := run(ctx, append(args, "--etcd-ca", root.CA, "--etcd-cert", root.Cert, "--etcd-key", root.Key)...)
	require.NoError(t, err, out)
	var rep bench.Report
	i := strings.Index(out, "{\n")
	require.GreaterOrEqual(t, i, 0, out)
	require.NoError(t, json.Unmarshal([]byte(out[i:]), &rep), out)
	require.False(t, rep.Params.EmbeddedEtcd)
	require.NotEmpty(t, rep.Results)
	for _, r := range rep.Results {
		require.Positive(t, r.Rate, r.Case)
	}
}

// TestBenchCheckComparesASavedReport writes a baseline from one saved
// report and checks others against it: a ratio at 0.4× its baseline's
// fails with exit 1, one at 0.6× passes, and the table names both.
func TestBenchCheckComparesASavedReport(t *testing.T) {
	dir := t.TempDir()
	report := func(name string, ratio float64) string {
		r := bench.Result{Scenario: "invoke", Case: "get via owner", Concurrency: 64, Rate: 1000 * ratio, Unit: "ops/s"}
		r.Ceiling("etcd get c=64", 1000)
		rep := &bench.Report{Version: bench.ReportVersion, Params: bench.Params{Profile: "short"}, Results: []bench.Result{r}}
		var b strings.Builder
		require.NoError(t, rep.WriteJSON(&b))
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
		return path
	}
	baseline := filepath.Join(dir, "baseline.json")
	out, err := run(context.Background(), "bench", "check", "--report", report("base.json", 0.5), "--baseline", baseline, "--write-baseline", "--commit", "abc1234")
	require.NoError(t, err)
	require.Contains(t, out, "wrote 1 rows' ratios")

	out, err = run(context.Background(), "bench", "check", "--report", report("slower.json", 0.3), "--baseline", baseline)
	require.NoError(t, err, "0.6× the baseline's ratio passes")
	require.Contains(t, out, "invoke / get via owner / c=64")

	out, err = run(context.Background(), "bench", "check", "--report", report("regressed.json", 0.2), "--baseline", baseline)
	require.ErrorContains(t, err, "1 row(s) fell below 0.5× their baseline's ratio")
	require.Equal(t, 1, cli.ExitCode(err))
	require.Contains(t, out, bench.CheckRegressed)
}
