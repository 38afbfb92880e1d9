package agent_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/nodetest"
	"github.com/durable-run/durable/security"
)

// httpReply is one front-door answer.
type httpReply struct {
	Status int
	Header http.Header
	Body   string
	// Error is the decoded error body, when the status is not 200.
	Error struct {
		Error       string `json:"error"`
		Reason      string `json:"reason"`
		Retryable   bool   `json:"retryable"`
		ObjectError bool   `json:"object_error"`
	}
}

// httpDo sends method url with body and headers (name, value pairs).
func httpDo(t *testing.T, hc *http.Client, method, url, body string, headers ...string) httpReply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := httpReply{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	if resp.StatusCode != http.StatusOK && resp.Header.Get("Content-Type") == "application/json" {
		require.NoError(t, json.Unmarshal(b, &out.Error), "error body %s", b)
	}
	return out
}

func TestHTTPFrontDoorInvokesThroughAnyNodeAndMapsErrors(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 2, Register: registerExamples, Agent: func(cfg *agent.Config) {
		cfg.HTTPListen = "127.0.0.1:0"
	}})
	base := "http://" + c.Agent(0).HTTPAddr()
	hc := &http.Client{}
	const jsonType = "application/json"

	// A counter that node 1 owns, reached through node 0, which forwards.
	var name string
	for i := range 64 {
		n := fmt.Sprint("c", i)
		r := httpDo(t, hc, "POST", base+"/v1/objects/Counter/"+n+"/get", "")
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		if r.Header.Get("Durable-Owner") == c.Addr(1) {
			name = n
			break
		}
	}
	require.NotEmpty(t, name, "some counter is owned by node 1")
	counter := base + "/v1/objects/Counter/" + name
	r := httpDo(t, hc, "POST", counter+"/increment", "", "Content-Type", jsonType)
	require.Equal(t, http.StatusOK, r.Status, r.Body)
	assert.JSONEq(t, `{"value":1}`, r.Body)
	assert.Equal(t, jsonType, r.Header.Get("Content-Type"))
	assert.Equal(t, c.Addr(1), r.Header.Get("Durable-Owner"))

	t.Run("IdempotencyKeyAppliesOnce", func(t *testing.T) {
		for range 2 {
			r := httpDo(t, hc, "POST", counter+"/increment", "5", "Content-Type", jsonType, "Idempotency-Key", "req-1")
			require.Equal(t, http.StatusOK, r.Status, r.Body)
			assert.JSONEq(t, `{"value":6}`, r.Body)
		}
		r := httpDo(t, hc, "POST", counter+"/get?timeout=5s", "")
		assert.JSONEq(t, `{"value":6}`, r.Body)
		// The same key for another call is refused, not replayed.
		r = httpDo(t, hc, "POST", counter+"/increment", "7", "Idempotency-Key", "req-1")
		assert.Equal(t, http.StatusBadRequest, r.Status, r.Body)
		assert.Equal(t, "REQUEST_ID_REUSED", r.Error.Reason)
	})

	t.Run("ByID", func(t *testing.T) {
		id := r.Header.Get("Durable-Object-Id")
		require.NotEmpty(t, id)
		r := httpDo(t, hc, "POST", base+"/v1/objects/Counter/id/"+id+"/get", "")
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		assert.JSONEq(t, `{"value":6}`, r.Body)
	})

	t.Run("LocationHint", func(t *testing.T) {
		r := httpDo(t, hc, "POST", counter+"/get?location=dc1", "")
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		assert.JSONEq(t, `{"value":0}`, r.Body, "the hint names another object")
		assert.Equal(t, durable.IDFromName("Counter", name, durable.WithLocation("dc1")).String(), r.Header.Get("Durable-Object-Id"))
	})

	for _, tc := range []struct {
		name, path, body string
		headers          []string
		status           int
		reason           string
	}{
		{"UnknownClass", "/v1/objects/Nope/x/get", "", nil, http.StatusNotFound, "UNKNOWN_CLASS"},
		{"UnknownMethod", "/v1/objects/Counter/x/nope", "", nil, http.StatusNotFound, "UNKNOWN_METHOD"},
		{"BadJSONDeclared", "/v1/objects/Counter/x/increment", "{nope", []string{"Content-Type", jsonType}, http.StatusBadRequest, "BAD_PAYLOAD"},
		{"BadJSONForATypedMethod", "/v1/objects/Counter/x/increment", `"one"`, nil, http.StatusBadRequest, "BAD_PAYLOAD"},
		{"ObjectsOwnError", "/v1/objects/Reminder/r/set", `{"message": "no time"}`, []string{"Content-Type", jsonType}, http.StatusUnprocessableEntity, "OBJECT_ERROR"},
		{"BadTimeout", "/v1/objects/Counter/x/get", "", []string{agent.TimeoutHeader, "forever"}, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"TimeoutAboveMax", "/v1/objects/Counter/x/get", "", []string{agent.TimeoutHeader, "1h"}, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"LongIdempotencyKey", "/v1/objects/Counter/x/get", "", []string{"Idempotency-Key", strings.Repeat("k", 129)}, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"BadID", "/v1/objects/Counter/id/zz/get", "", nil, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"UnknownLocation", "/v1/objects/Counter/x/get?location=dc9", "", nil, http.StatusBadRequest, "INVALID_ARGUMENT"},
		{"CrossOriginPost", "/v1/objects/Counter/x/increment", "", []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden, "CROSS_ORIGIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httpDo(t, hc, "POST", base+tc.path, tc.body, tc.headers...)
			assert.Equal(t, tc.status, r.Status, r.Body)
			assert.Equal(t, tc.reason, r.Error.Reason, r.Body)
			assert.False(t, r.Error.Retryable)
			assert.Equal(t, tc.reason == "OBJECT_ERROR", r.Error.ObjectError)
		})
	}

	t.Run("Admin", func(t *testing.T) {
		r := httpDo(t, hc, "GET", base+"/v1/admin/status", "")
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		var st struct {
			Nodes []struct {
				ID string `json:"id"`
			} `json:"nodes"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.Body), &st))
		assert.Len(t, st.Nodes, 2)

		r = httpDo(t, hc, "POST", base+"/v1/objects/Reminder/r1/set", `{"message": "hi", "in": "1h"}`, "Content-Type", jsonType)
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		r = httpDo(t, hc, "GET", base+"/v1/admin/alarms/Reminder/r1", "")
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		assert.Contains(t, r.Body, `"class":"Reminder"`)
		r = httpDo(t, hc, "GET", base+"/v1/admin/alarms/Reminder/none", "")
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		assert.JSONEq(t, `{"alarm":null}`, r.Body)
		r = httpDo(t, hc, "GET", base+"/v1/admin/alarms?class=Reminder", "")
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		assert.Contains(t, r.Body, `"name":"r1"`)
		r = httpDo(t, hc, "GET", base+"/v1/admin/dead-letters?limit=5", "")
		require.Equal(t, http.StatusOK, r.Status, r.Body)
		assert.JSONEq(t, `{"dead_letters":[], "truncated":false, "next_page_token":""}`, r.Body)
		r = httpDo(t, hc, "GET", base+"/v1/admin/dead-letters?limit=many", "")
		assert.Equal(t, http.StatusBadRequest, r.Status, r.Body)
		r = httpDo(t, hc, "GET", base+"/v1/admin/alarms/Nope/r1", "")
		assert.Equal(t, http.StatusNotFound, r.Status, r.Body)
		r = httpDo(t, hc, "POST", base+"/v1/admin/dead-letters/purge", `{}`, "Content-Type", jsonType)
		assert.Equal(t, http.StatusBadRequest, r.Status, "purging everything must be asked for: %s", r.Body)
	})
}

func TestHTTPFrontDoorChecksCertificatesTokensAndClassGrants(t *testing.T) {
	p := newTestPKI(t)
	policy := p.policy(fmt.Sprintf(`{"clients": {"loadgen": {"roles": ["invoke"], "classes": ["Batcher"]}}, "tokens": [
	  {"name": "counters", "sha256": %q, "roles": ["invoke"], "classes": ["Counter"]},
	  {"name": "reader", "sha256": %q, "roles": ["read"]}
	]}`, security.TokenSHA256("counter-token"), security.TokenSHA256("reader-token")))
	c := nodetest.Start(t, nodetest.Options{Nodes: 1, Register: registerExamples, Agent: func(cfg *agent.Config) {
		cfg.Security = agent.Security{TLS: p.node(cfg.Node.ID), Policy: policy, ClientCertOptional: true}
		cfg.HTTPListen = "127.0.0.1:0"
	}})
	caPEM, err := os.ReadFile(filepath.Join(p.dir, "ca.pem"))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}}}
	loadgen := p.client("loadgen")
	cert, err := tls.LoadX509KeyPair(loadgen.Cert, loadgen.Key)
	require.NoError(t, err)
	mtls := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}}}
	base := "https://" + c.Agent(0).HTTPAddr()
	bearer := func(token string) []string { return []string{"Authorization", "Bearer " + token} }

	for _, tc := range []struct {
		name, method, path string
		headers            []string
		status             int
		reason             string
		cert               bool // with loadgen's client certificate
	}{
		{"CertInvokesGrantedClass", "POST", "/v1/objects/Batcher/b/count", nil, http.StatusOK, "", true},
		{"CertInvokesOtherClass", "POST", "/v1/objects/Counter/c/get", nil, http.StatusForbidden, "PERMISSION_DENIED", true},
		{"CertCannotReadStatus", "GET", "/v1/admin/status", nil, http.StatusForbidden, "PERMISSION_DENIED", true},
		{"CertAndTokenAddUp", "GET", "/v1/admin/status", bearer("reader-token"), http.StatusOK, "", true},
		{"InvokeGrantedClass", "POST", "/v1/objects/Counter/c/increment", bearer("counter-token"), http.StatusOK, "", false},
		{"InvokeOtherClass", "POST", "/v1/objects/Batcher/b/count", bearer("counter-token"), http.StatusForbidden, "PERMISSION_DENIED", false},
		{"NoToken", "POST", "/v1/objects/Counter/c/increment", nil, http.StatusUnauthorized, "UNAUTHENTICATED", false},
		{"BadToken", "POST", "/v1/objects/Counter/c/increment", bearer("guess"), http.StatusUnauthorized, "UNAUTHENTICATED", false},
		{"ReaderCannotInvoke", "POST", "/v1/objects/Counter/c/increment", bearer("reader-token"), http.StatusForbidden, "PERMISSION_DENIED", false},
		{"ReaderReadsStatus", "GET", "/v1/admin/status", bearer("reader-token"), http.StatusOK, "", false},
		{"InvokerCannotReadStatus", "GET", "/v1/admin/status", bearer("counter-token"), http.StatusForbidden, "PERMISSION_DENIED", false},
		{"ReaderCannotDrain", "POST", "/v1/admin/drain", bearer("reader-token"), http.StatusForbidden, "PERMISSION_DENIED", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := hc
			if tc.cert {
				client = mtls
			}
			r := httpDo(t, client, tc.method, base+tc.path, "", tc.headers...)
			assert.Equal(t, tc.status, r.Status, r.Body)
			assert.Equal(t, tc.reason, r.Error.Reason, r.Body)
			if tc.status == http.StatusUnauthorized {
				assert.NotEmpty(t, r.Header.Get("WWW-Authenticate"))
			}
		})
	}

}
