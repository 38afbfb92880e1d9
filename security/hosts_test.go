package security_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/security"
)

// TestHostFilterAllowsOnlyAddressesLocalhostAndGivenNames: the names a
// rebinding page could use (any DNS name it controls) are refused; IP
// literals, localhost and the configured names, with or without a port,
// in any case, with a trailing dot, are allowed; "*" allows everything.
func TestHostFilterAllowsOnlyAddressesLocalhostAndGivenNames(t *testing.T) {
	f := security.HostFilter{Allowed: []string{"node1.internal", "dash.example.com."}}
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.1:4700", true},
		{"10.1.2.3:4700", true},
		{"[::1]:4700", true},
		{"::1", true},
		{"[fe80::1]", true},
		{"localhost", true},
		{"LocalHost:4700", true},
		{"localhost.:4700", true},
		{"node1.internal:4700", true},
		{"NODE1.internal", true},
		{"dash.example.com", true},
		{"", true}, // no Host: not a browser
		{"evil.example", false},
		{"evil.example:4700", false},
		{"127.0.0.1.evil.example", false},
		{"localhost.evil.example", false},
		{"node1.internal.evil.example", false},
		{"sub.node1.internal", false},
		{"evil.example:4700:1", false},
	} {
		require.Equal(t, tc.ok, f.Allows(tc.host), "%q", tc.host)
	}
	require.False(t, security.HostFilter{}.Allows("node1.internal"), "the zero filter: addresses and localhost only")
	require.True(t, security.HostFilter{Allowed: []string{"*"}}.Allows("anything.example"))
}

func TestHostFilterRefusesWith403AndCounts(t *testing.T) {
	m := metrics.New()
	h := security.HostFilter{Metrics: m, What: "ops"}.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	req := httptest.NewRequest("POST", "http://evil.example:4711/api/requeue", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusForbidden, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	require.Contains(t, rec.Body.String(), `host \"evil.example:4711\" is not allowed`)
	require.Contains(t, rec.Body.String(), `"reason":"HOST_NOT_ALLOWED"`)
	require.Equal(t, 1.0, metrics.Value(m.AuthRefusals.WithLabelValues(security.HostNotAllowed, "ops")))

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1:4711/metrics", nil))
	require.Equal(t, http.StatusTeapot, rec.Code, "an address is served")
}

func TestValidateAllowedHostsReportsEveryBadName(t *testing.T) {
	require.NoError(t, security.ValidateAllowedHosts([]string{"node1", "dc1-n1.durable.svc.cluster.local", "wtsec_dc1-n1_1", "*", "10.0.0.1", "::1", "example.com."}))
	err := security.ValidateAllowedHosts([]string{"ok.example", "http://x.example", "x.example:4700", "", "-bad.example", "a..b"})
	require.Error(t, err)
	for _, bad := range []string{`"http://x.example"`, `"x.example:4700"`, `""`, `"-bad.example"`, `"a..b"`} {
		require.Contains(t, err.Error(), bad)
	}
	require.NotContains(t, err.Error(), `"ok.example"`)
}
