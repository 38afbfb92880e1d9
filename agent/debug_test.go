package agent_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/agent"
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
