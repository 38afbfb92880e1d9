package agent_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
	"github.com/durable-run/durable/security"
)

// TestUnsecuredNodeAnswersOnlyItsOwnHostNames plays DNS rebinding against
// an unsecured node's HTTP listeners: a page of evil.example has pointed
// its name at the node's address, so its requests carry Host and Origin
// evil.example (same origin: the CSRF check passes). Each is refused with
// 403 and counted, on the operations listener (dashboard, metrics), the
// profiles and the front door; nothing is requeued or drained. Requests
// by IP address, localhost or a name given in HTTPAllowedHosts are served.
func TestUnsecuredNodeAnswersOnlyItsOwnHostNames(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 1, Register: registerFlaky, Agent: func(cfg *agent.Config) {
		cfg.MetricsListen, cfg.HTTPListen, cfg.DebugListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.Security.HTTPAllowedHosts = []string{"node1.internal"}
	}})
	a := c.Agent(0)
	sched := time.UnixMilli(1_700_000_000_000)
	buryDeadLetter(t, c, "Flaky", "f", sched)
	hc := &http.Client{Timeout: 20 * time.Second}

	// send asks addr for path as host, with the page's Origin.
	send := func(method, addr, path, host, body string) httpReply {
		t.Helper()
		_, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Host = net.JoinHostPort(host, port)
		req.Header.Set("Origin", "http://"+req.Host)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return httpReply{Status: resp.StatusCode, Body: string(b)}
	}

	refused := []struct{ method, addr, path, body string }{
		{"POST", a.MetricsAddr(), "/api/requeue", requeueBody("f", sched)},
		{"GET", a.MetricsAddr(), "/api/status", ""},
		{"GET", a.MetricsAddr(), "/metrics", ""},
		{"GET", a.DebugAddr(), "/debug/pprof/", ""},
		{"POST", a.HTTPAddr(), "/v1/admin/drain", "{}"},
		{"POST", a.HTTPAddr(), "/v1/objects/Flaky/f/arm", ""},
	}
	for _, r := range refused {
		got := send(r.method, r.addr, r.path, "evil.example", r.body)
		require.Equal(t, http.StatusForbidden, got.Status, "%s %s: %s", r.method, r.path, got.Body)
		require.Contains(t, got.Body, `host \"evil.example:`, r.path)
		require.Contains(t, got.Body, "--http-allowed-hosts", r.path)
		require.Contains(t, got.Body, "DNS rebinding", r.path)
	}
	m := a.Metrics().AuthRefusals
	require.Equal(t, 4.0, metrics.Value(m.WithLabelValues(security.HostNotAllowed, "ops")), "the operations listener's and the profiles' refusals")
	require.Equal(t, 2.0, metrics.Value(m.WithLabelValues(security.HostNotAllowed, "http")), "the front door's")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dead, err := c.Dial(0).Admin().ListDeadLetters(ctx, &durablev1.ListDeadLettersRequest{Class: "Flaky"})
	require.NoError(t, err)
	require.Len(t, dead.GetDeadLetters(), 1, "nothing requeued")
	require.True(t, a.Serving(), "not drained")

	for _, host := range []string{"127.0.0.1", "localhost", "LOCALHOST", "::1", "node1.internal", "Node1.Internal."} {
		got := send("GET", a.MetricsAddr(), "/api/status", host, "")
		require.Equal(t, http.StatusOK, got.Status, "%s: %s", host, got.Body)
		got = send("GET", a.HTTPAddr(), "/v1/admin/status", host, "")
		require.Equal(t, http.StatusOK, got.Status, "%s: %s", host, got.Body)
	}
	got := send("POST", a.MetricsAddr(), "/api/requeue", "node1.internal", requeueBody("f", sched))
	require.Equal(t, http.StatusOK, got.Status, "its own name and origin: %s", got.Body)
}

// TestSecuredNodeHasNoHostFilter: behind TLS the attacker's name fails
// the browser's handshake, so a secured node answers any Host (a proxy's,
// a load balancer's) and leaves the rest to the guard.
func TestSecuredNodeHasNoHostFilter(t *testing.T) {
	p := newTestPKI(t)
	policy := p.policy(`{"tokens": [{"name": "viewer", "sha256": "` + security.TokenSHA256("read-token") + `", "roles": ["read"]}]}`)
	c := nodetest.Start(t, nodetest.Options{Nodes: 1, Register: registerFlaky, Agent: func(cfg *agent.Config) {
		cfg.Security = agent.Security{TLS: p.node(cfg.Node.ID), Policy: policy, ClientCertOptional: true}
		cfg.MetricsListen = "127.0.0.1:0"
	}})
	req, err := http.NewRequest("GET", "https://"+c.Agent(0).MetricsAddr()+"/api/status", nil)
	require.NoError(t, err)
	req.Host = "proxy.example"
	req.Header.Set("Authorization", "Bearer read-token")
	resp, err := httpsClient(t, p).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
