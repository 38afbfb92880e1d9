package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func sampleReport() *Report {
	get := Result{
		Scenario: "invoke", Case: "get via owner", Concurrency: 64, Count: 123456, Seconds: 5,
		Rate: 24691.2, Unit: "ops/s", Latency: &Latency{P50: 0.4321, P90: 1.5, P99: 12.345, Max: 250.5, Mean: 0.9},
		Target: AtLeast(20000, 24691.2), Note: "best via the owner",
	}
	get.Ceiling("etcd get c=64 (scale only)", 20000)
	inc := Result{Scenario: "invoke", Case: "increment via owner", Concurrency: 64, Count: 40000, Seconds: 5, Rate: 8000, Unit: "ops/s"}
	inc.Ceiling("etcd 1-put txn c=64", 10000)
	inc.Ceiling("etcd batched put 16×64 / 2 keys per increment", 60000)
	inc.Target = AtLeast(10000, inc.Rate)
	return &Report{
		Version: ReportVersion, Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Finished: time.Date(2026, 1, 2, 3, 5, 5, 0, time.UTC),
		Machine: Machine{OS: "linux", Arch: "amd64", CPUs: 2, CPUModel: "AMD EPYC", GoVersion: "go1.26.8",
			LoadAverage: []float64{1.5, 0.25, 3}},
		Params: Params{Profile: "short", PhaseSeconds: 1, WarmupSeconds: 0.25, Cluster: "embedded", Nodes: 3,
			Partitions: 256, LeaseTTLSeconds: 3, EmbeddedEtcd: true, Scenarios: []string{"etcd", "invoke"}},
		Timings: []Timing{{Step: "setup", Seconds: 2.04}, {Step: "etcd", Seconds: 5.5}, {Step: "invoke", Seconds: 14}},
		Results: []Result{
			{Scenario: "etcd", Case: "put, 1 per txn", Concurrency: 64, Count: 50000, Seconds: 5, Rate: 10000, Unit: "puts/s",
				Latency: &Latency{P50: 5, P90: 9, P99: 13, Max: 20, Mean: 6}, Note: "best 1-put txn throughput"},
			get, inc,
			{Scenario: "invoke", Case: "get open loop, ½ target rate", Count: 60000, Seconds: 5, Rate: 12000, Unit: "ops/s",
				Latency: &Latency{P50: 0.3, P90: 2, P99: 9.5, Max: 30, Mean: 1}, Target: P99AtMost(10, &Latency{P99: 9.5}),
				Extra: map[string]float64{"offered_ops/s": 12345.6, "objects": 64}},
		},
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	rep := sampleReport()
	var buf bytes.Buffer
	require.NoError(t, rep.WriteJSON(&buf))
	var back Report
	require.NoError(t, json.Unmarshal(buf.Bytes(), &back))
	require.Equal(t, *rep, back)

	// The field names are the documented, stable ones.
	var raw map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &raw))
	for _, k := range []string{"version", "started", "finished", "machine", "params", "timings", "results"} {
		require.Contains(t, raw, k)
	}
	row := raw["results"].([]any)[1].(map[string]any)
	for _, k := range []string{"scenario", "case", "concurrency", "count", "errors", "seconds", "rate", "unit", "latency", "ceilings", "target", "note"} {
		require.Contains(t, row, k)
	}
	require.Equal(t, map[string]any{"p50_ms": 0.4321, "p90_ms": 1.5, "p99_ms": 12.345, "max_ms": 250.5, "mean_ms": 0.9}, row["latency"])
	require.Equal(t, map[string]any{"name": "etcd get c=64 (scale only)", "rate": 20000.0, "ratio": 24691.2 / 20000}, row["ceilings"].([]any)[0])
	require.Equal(t, map[string]any{"metric": "rate", "op": ">=", "value": 20000.0, "met": true}, row["target"])
}

func TestWriteTableShowsEveryRowWithItsCeilingsAndTargets(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, sampleReport().WriteTable(&buf))
	out := buf.String()
	t.Log("\n" + out)
	for _, want := range []string{
		"machine: linux/amd64, 2 CPUs (AMD EPYC), go1.26.8; load average 1.50 0.25 3.00 at start",
		"embedded cluster: 3 nodes, 256 partitions, lease TTL 3s, in-process etcd (fsync on); profile short: 1s per phase after 0.25s warm-up",
		"took:    1m0s (setup 2.0s, etcd 5.5s, invoke 14.0s)",
		"\netcd\n", "\ninvoke\n",
		"put, 1 per txn", "10,000 puts/s",
		"get via owner", "123,456", "24,691 ops/s", "0.432", "1.50", "12.3", "251",
		"1.23× etcd get c=64 (scale only) = 20,000/s", ">= 20,000 ops/s: met",
		"0.80× etcd 1-put txn c=64 = 10,000/s", "0.13× etcd batched put 16×64 / 2 keys per increment = 60,000/s",
		">= 10,000 ops/s: MISSED", "p99 <= 10.0 ms: met",
		"get via owner c=64: best via the owner",
		"get open loop, ½ target rate: objects=64, offered_ops/s=12,346",
	} {
		require.Contains(t, out, want)
	}
	// Columns are aligned: every row of a table starts its rate at the
	// same place as the header's "rate" column ends.
	lines := strings.Split(out, "\n")
	var header string
	for _, l := range lines {
		if strings.Contains(l, "case") && strings.Contains(l, "target") {
			header = l
			break
		}
	}
	require.NotEmpty(t, header)
	end := strings.Index(header, "rate") + len("rate")
	for _, l := range lines {
		if strings.HasPrefix(l, "  get via owner  ") || strings.HasPrefix(l, "  increment via owner  ") {
			require.Equal(t, "ops/s", l[end-5:end], "rate column of %q", l)
		}
	}
}

func TestNumberFormats(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{thousands(0), "0"}, {thousands(999), "999"}, {thousands(1000), "1,000"},
		{thousands(1234567.6), "1,234,568"}, {thousands(-1234), "-1,234"},
		{number(12.34), "12.3"}, {number(12), "12"}, {number(123.4), "123"},
		{fmtMS(0.01234), "0.012"}, {fmtMS(1.234), "1.23"}, {fmtMS(12.34), "12.3"}, {fmtMS(1234.5), "1,235"},
	} {
		require.Equal(t, tc.want, tc.got)
	}
}
