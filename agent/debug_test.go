package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
)

func TestDebugServerServesProfiles(t *testing.T) {
	d, err := agent.ServeDebug("127.0.0.1:0")
	require.NoError(t, err)
	get := func(path string) (int, string, error) {
		resp, err := http.Get("http://" + d.Addr() + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	code, body, err := get("/debug/pprof/")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine")
	code, body, err = get("/debug/pprof/goroutine?debug=1")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine profile:")
	code, _, err = get("/metrics")
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, code, "only the profiles are served")

	require.NoError(t, d.Close())
	_, _, err = get("/debug/pprof/")
	require.Error(t, err, "still serving after Close")
}

func TestAgentServesNoProfilesUnlessAsked(t *testing.T) {
	h := startKV(t)
	require.Empty(t, h.Nodes[0].Agent().DebugAddr())
}

// TestMetricsAreServedOverHTTP: with MetricsListen, a node serves its
// metrics (the durable_ families, the RPCs', the Go runtime's) and its
// health; profiles only with Pprof.
func TestMetricsAreServedOverHTTP(t *testing.T) {
	h := nodetest.StartOne(t, nodetest.Options{
		Register: func(reg *node.Registry) error {
			return examples.Register(reg, examples.Config{Upstream: "http://127.0.0.1:1"})
		},
		Agent: func(cfg *agent.Config) { cfg.MetricsListen = "127.0.0.1:0" },
	})
	a := h.Nodes[0].Agent()
	require.NotEmpty(t, a.MetricsAddr())
	_, err := h.Dial().Invoke(context.Background(), "Counter", client.ByName("m"), "increment", nil)
	require.NoError(t, err)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + a.MetricsAddr() + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, want := range []string{
		`durable_invocations_total{class="Counter",code="OK",method="increment"} 1`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Invoke",grpc_service="durable.v1.Objects",grpc_type="unary"} 1`,
		"durable_partitions_owned 8", "durable_leader 1", "durable_leader_term 1", "durable_serving 1",
		"durable_alarms_overdue 0", "durable_commit_duration_seconds_count 1", "go_goroutines", `durable_build_info{`,
	} {
		require.True(t, strings.Contains(body, want), "/metrics lacks %q", want)
	}
	code, body = get("/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "SERVING\n", body)
	code, _ = get("/debug/pprof/")
	require.Equal(t, http.StatusNotFound, code, "profiles without Pprof")
}

// TestGrafanaDashboardUsesOnlyMetricsWeExport: every durable_ metric the
// Grafana dashboard in deploy/ queries is one a node exports (a rename
// must update it), and the operations guide lists every metric.
func TestGrafanaDashboardUsesOnlyMetricsWeExport(t *testing.T) {
	h := startKV(t)
	exported := map[string]bool{}
	for _, n := range h.Nodes[0].Agent().Metrics().Names() {
		exported[n] = true
	}
	require.Contains(t, exported, "durable_alarm_lateness_seconds")
	require.Contains(t, exported, "durable_alarms_overdue", "the agent's gauges are named too")

	b, err := os.ReadFile("../deploy/grafana/durable.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	used := 0
	name := regexp.MustCompile(`durable_[a-z_]+`)
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q", p.Title)
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && exported[b] {
						base = b
					}
				}
				require.True(t, exported[base], "panel %q queries %s, which no node exports", p.Title, m)
				used++
			}
		}
	}
	require.Greater(t, used, 20)

	doc, err := os.ReadFile("../docs/operations.md")
	require.NoError(t, err)
	for n := range exported {
		require.Contains(t, string(doc), n, "docs/operations.md does not list %s", n)
	}
}
