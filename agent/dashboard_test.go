package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
	"github.com/durable-run/durable/security"
)

// chromium returns the path of a headless-capable Chromium (Debian's
// package). Without one the test is skipped, except under CI=true, where
// it fails (.ci/run installs it).
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and no Chromium found (apt-get install chromium)")
	}
	t.Skip("no Chromium found (apt-get install chromium)")
	return ""
}

// browser is a headless Chromium showing one page, for a test.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots
}

// openPage starts Chromium (extra: allocator flags) on page; it stops at
// cleanup. Screenshots go to $DURABLE_ARTIFACTS (default: a temporary
// directory), named in the log.
func openPage(t *testing.T, page string, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox,
		chromedp.Flag("headless", "new"), chromedp.WindowSize(1400, 1100))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), append(opts, extra...)...)
	t.Cleanup(acancel)
	ctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	// The first action starts the browser: no timeout on its context (it
	// would stop the browser); later ones run with their own.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(page)), "load %s", page)

	dir := os.Getenv("DURABLE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("durable-dashboard-%d", time.Now().UnixNano()))
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return &browser{t: t, ctx: ctx, dir: dir}
}

// shot saves a screenshot of the whole page as name.
func (b *browser) shot(name string) {
	b.t.Helper()
	sctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	require.NoError(b.t, err)
	path := filepath.Join(b.dir, name)
	require.NoError(b.t, os.WriteFile(path, png, 0o644))
	b.t.Logf("screenshot: %s", path)
}

// wait polls a condition in the page until it holds.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ectx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			ectx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
			text, _ := chromedp.Run(ectx, chromedp.Evaluate[string](`document.body.innerText`))
			cancel()
			b.shot("failed.png")
			b.t.Fatalf("the dashboard never showed %s (err %v); page text:\n%s", what, err, text)
		}
		time.Sleep(100 * time.Millisecond) // polling a browser: no event to wait on
	}
}

// run runs actions in the page (clicks, typing).
func (b *browser) run(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	require.NoError(b.t, chromedp.Do(ctx, actions...))
}

// TestDashboardShowsTheClusterAndANodesLoss loads the dashboard of a
// 3-node cluster in headless Chromium: it shows the three nodes and every
// partition owned; after a node is killed it shows the node lost with
// where its partitions went, and no partition left on it.
func TestDashboardShowsTheClusterAndANodesLoss(t *testing.T) {
	chromium(t)
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 3,
		Register: func(reg *node.Registry) error {
			return examples.Register(reg, examples.Config{Upstream: "http://127.0.0.1:1"})
		},
		Agent: func(cfg *agent.Config) { cfg.MetricsListen = "127.0.0.1:0" },
	})
	c.WaitSettled()
	b := openPage(t, "http://"+c.Agent(0).MetricsAddr()+"/")

	b.wait("three nodes up, every partition owned", `document.querySelectorAll('#nodes tbody tr.up').length === 3 &&
		document.querySelectorAll('#partitions div').length === 8 &&
		[...document.querySelectorAll('#partitions div')].every(d => d.dataset.owner !== "")`)
	b.wait("the data center and its leader", `[...document.querySelectorAll('#dcs tbody tr')].some(r => r.cells[0].textContent === "dc1" && r.cells[1].textContent.startsWith("node-") && r.cells[7].textContent === "up")`)
	b.shot("dashboard-3-nodes.png")

	victim := c.Nodes[2].Config.ID
	c.Kill(2)
	b.wait(victim+" lost, its partitions moved", fmt.Sprintf(`(() => {
		const row = document.querySelector('#nodes tbody tr.lost[data-node=%q]');
		const cells = [...document.querySelectorAll('#partitions div')];
		return row !== null && row.cells[3].textContent.includes("partitions moved to node-") &&
			cells.length === 8 && cells.every(d => d.dataset.owner !== %q && d.dataset.owner !== "") &&
			document.querySelectorAll('#nodes tbody tr.up').length === 2 &&
			[...document.querySelectorAll('#changes li')].some(li => li.textContent.startsWith(%q + " (dc1) lost"));
	})()`, victim, victim, victim))
	b.shot("dashboard-node-lost.png")
}

// flaky is a class whose alarm always fails (it ends as a dead letter);
// any method sets its alarm an hour ahead.
type flaky struct{ st durable.State }

func (f *flaky) Invoke(ctx context.Context, _ string, _ []byte) ([]byte, error) {
	return nil, f.st.Storage().SetAlarm(ctx, f.st.Clock().Now().Add(time.Hour))
}

func (*flaky) Alarm(context.Context, durable.AlarmInfo) error {
	return errors.New("flaky: the upstream is down")
}

// registerFlaky registers the examples and Flaky.
func registerFlaky(reg *node.Registry) error {
	if err := registerExamples(reg); err != nil {
		return err
	}
	return node.RegisterClass(reg, "Flaky", func(_ context.Context, st durable.State) (*flaky, error) { return &flaky{st: st}, nil })
}

func byName(name string) *durablev1.ObjectRef {
	return &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: name}}
}

// TestDashboardRequeuesADeadLetter: the dashboard lists two dead letters
// of Flaky; requeueing the one whose object has an alarm pending shows the
// refusal (ALARM_PENDING) next to its row, which stays; requeueing the
// other removes its row, its dead letter is gone and its alarm is set
// again, scheduled now.
func TestDashboardRequeuesADeadLetter(t *testing.T) {
	chromium(t)
	c := nodetest.Start(t, nodetest.Options{Nodes: 1, Register: registerFlaky, Agent: func(cfg *agent.Config) {
		cfg.MetricsListen = "127.0.0.1:0"
	}})
	_, err := c.Invoke(0, "Flaky", "busy", "arm", nil)
	require.NoError(t, err)
	sched := time.UnixMilli(1_700_000_000_000)
	buryDeadLetter(t, c, "Flaky", "idle", sched)
	buryDeadLetter(t, c, "Flaky", "busy", sched)

	b := openPage(t, "http://"+c.Agent(0).MetricsAddr()+"/")
	row := func(name string) string {
		return fmt.Sprintf(`document.querySelector('#dead tbody tr[data-object=%q]')`, name)
	}
	b.wait("both dead letters", row("idle")+" !== null && "+row("busy")+" !== null")

	b.run(chromedp.Click(chromedp.CSS(`#dead tbody tr[data-object="busy"] button`)))
	b.wait("the refusal next to busy's row", `(() => {
		const note = `+row("busy")+`?.querySelector('.note.error');
		return note != null && note.textContent.startsWith("ALARM_PENDING: ") && note.textContent.includes("alarm pending");
	})()`)
	b.shot("dashboard-requeue-refused.png")

	clicked := time.Now()
	b.run(chromedp.Click(chromedp.CSS(`#dead tbody tr[data-object="idle"] button`)))
	b.wait("idle's row gone, busy's kept", row("idle")+" === null && "+row("busy")+" !== null")
	b.shot("dashboard-requeued.png")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin := c.Dial(0).Admin()
	dead, err := admin.ListDeadLetters(ctx, &durablev1.ListDeadLettersRequest{Class: "Flaky"})
	require.NoError(t, err)
	require.Len(t, dead.GetDeadLetters(), 1)
	require.Equal(t, "busy", dead.GetDeadLetters()[0].GetAlarm().GetName(), "the refused requeue kept its dead letter")
	got, err := admin.GetAlarm(ctx, &durablev1.GetAlarmRequest{Class: "Flaky", Object: byName("idle")})
	require.NoError(t, err)
	require.NotNil(t, got.GetAlarm(), "idle's alarm is set again (it fails, and retries for minutes)")
	require.GreaterOrEqual(t, got.GetAlarm().GetScheduledUnixMs(), clicked.UnixMilli(), "scheduled by the requeue, not the dead letter's time")
}

// httpsClient trusts the test PKI's CA.
func httpsClient(t *testing.T, p *testPKI) *http.Client {
	pem, err := os.ReadFile(filepath.Join(p.dir, "ca.pem"))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(pem))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// call sends one request to the dashboard's API and returns the status and
// body.
func call(t *testing.T, hc *http.Client, method, url, token string, header map[string]string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

var jsonBody = map[string]string{"Content-Type": "application/json"}

// requeueBody is /api/requeue's body for the dead letter of Flaky/name
// scheduled at sched, as the page sends it.
func requeueBody(name string, sched time.Time) string {
	return fmt.Sprintf(`{"class": "Flaky", "object": {"name": %q}, "scheduled_unix_ms": "%d"}`, name, sched.UnixMilli())
}

// TestDashboardAPINeedsATokenAndRequeueNeedsAdmin: on a secured node the
// dashboard's data needs a token with the read role (401 with a Bearer
// challenge without one) and /api/requeue the admin role.
func TestDashboardAPINeedsATokenAndRequeueNeedsAdmin(t *testing.T) {
	p := newTestPKI(t)
	policy := p.policy(`{"tokens": [
	  {"name": "viewer", "sha256": "` + security.TokenSHA256("read-token") + `", "roles": ["read"]},
	  {"name": "ops", "sha256": "` + security.TokenSHA256("admin-token") + `", "roles": ["admin"]}
	]}`)
	c := nodetest.Start(t, nodetest.Options{Nodes: 1, Register: registerFlaky, Agent: func(cfg *agent.Config) {
		cfg.Security = agent.Security{TLS: p.node(cfg.Node.ID), Policy: policy, ClientCertOptional: true}
		cfg.MetricsListen = "127.0.0.1:0"
	}})
	hc := httpsClient(t, p)
	base := "https://" + c.Agent(0).MetricsAddr()
	sched := time.UnixMilli(1_700_000_000_000)
	buryDeadLetter(t, c, "Flaky", "f", sched)

	code, _ := call(t, hc, "GET", base+"/", "", nil, "")
	require.Equal(t, http.StatusOK, code, "the page itself is open")
	req, err := http.NewRequest("GET", base+"/api/status", nil)
	require.NoError(t, err)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Equal(t, `Bearer realm="durable"`, resp.Header.Get("WWW-Authenticate"))
	code, body := call(t, hc, "GET", base+"/api/status", "read-token", nil, "")
	require.Equal(t, http.StatusOK, code, body)
	code, body = call(t, hc, "GET", base+"/api/dead", "read-token", nil, "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"name":"f"`)

	code, body = call(t, hc, "POST", base+"/api/requeue", "", jsonBody, requeueBody("f", sched))
	require.Equal(t, http.StatusUnauthorized, code, body)
	code, body = call(t, hc, "POST", base+"/api/requeue", "read-token", jsonBody, requeueBody("f", sched))
	require.Equal(t, http.StatusForbidden, code, body)
	require.Contains(t, body, "may not admin")
	code, body = call(t, hc, "POST", base+"/api/requeue", "admin-token", map[string]string{
		"Content-Type": "application/json", "Origin": "http://evil.example"}, requeueBody("f", sched))
	require.Equal(t, http.StatusForbidden, code, "a cross-origin requeue is refused, admin token or not: %s", body)

	code, body = call(t, hc, "POST", base+"/api/requeue", "admin-token", map[string]string{
		"Content-Type": "application/json", "Origin": base}, requeueBody("f", sched))
	require.Equal(t, http.StatusOK, code, body)
	var out struct {
		Alarm *struct {
			Name string `json:"name"`
		} `json:"alarm"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &out), body)
	require.NotNil(t, out.Alarm, "the reply has the alarm as set again: %s", body)
	require.Equal(t, "f", out.Alarm.Name)
	code, body = call(t, hc, "GET", base+"/api/dead", "read-token", nil, "")
	require.Equal(t, http.StatusOK, code, body)
	require.NotContains(t, body, `"name":"f"`, "the dead letter was requeued")
	rec, err := alarmstore.New(c.Client, keyspace.New(c.Prefix)).Get(context.Background(),
		c.Node(0).PartitionOf(durable.IDFromName("Flaky", "f")), "Flaky", durable.IDFromName("Flaky", "f"))
	require.NoError(t, err)
	require.NotNil(t, rec, "f's alarm is set again")
}

// TestDashboardRequeueTakesOnlySameOriginJSON: even on an unsecured node,
// /api/requeue takes only a POST of application/json from no or its own
// origin, and answers a refused requeue with the Admin error's reason.
func TestDashboardRequeueTakesOnlySameOriginJSON(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 1, Register: registerFlaky, Agent: func(cfg *agent.Config) {
		cfg.MetricsListen = "127.0.0.1:0"
	}})
	hc := &http.Client{Timeout: 20 * time.Second}
	base := "http://" + c.Agent(0).MetricsAddr()
	url := base + "/api/requeue"
	sched := time.UnixMilli(1_700_000_000_000)
	buryDeadLetter(t, c, "Flaky", "f", sched)
	_, err := c.Invoke(0, "Flaky", "busy", "arm", nil)
	require.NoError(t, err)
	buryDeadLetter(t, c, "Flaky", "busy", sched)

	for _, tc := range []struct {
		name, method string
		header       map[string]string
		body         string
		code         int
		says         string
	}{
		{"cross-origin", "POST", map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, requeueBody("f", sched), http.StatusForbidden, "cross-origin"},
		{"cross-site fetch", "POST", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, requeueBody("f", sched), http.StatusForbidden, "cross-origin"},
		{"form", "POST", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "class=Flaky", http.StatusUnsupportedMediaType, "application/json"},
		{"text", "POST", map[string]string{"Content-Type": "text/plain"}, requeueBody("f", sched), http.StatusUnsupportedMediaType, "application/json"},
		{"GET", "GET", nil, "", http.StatusMethodNotAllowed, "POST"},
		{"not a request", "POST", jsonBody, `{"klass": 1}`, http.StatusBadRequest, "not a RequeueDeadLetterRequest"},
		{"alarm pending", "POST", jsonBody, requeueBody("busy", sched), http.StatusConflict, `"reason":"ALARM_PENDING"`},
		{"no such dead letter", "POST", jsonBody, requeueBody("f", sched.Add(time.Second)), http.StatusBadRequest, "has no dead letter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(t, hc, tc.method, url, "", tc.header, tc.body)
			require.Equal(t, tc.code, code, body)
			require.Contains(t, body, tc.says)
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dead, err := c.Dial(0).Admin().ListDeadLetters(ctx, &durablev1.ListDeadLettersRequest{Class: "Flaky"})
	require.NoError(t, err)
	require.Len(t, dead.GetDeadLetters(), 2, "no refused request requeued")

	code, body := call(t, hc, "POST", url, "", map[string]string{"Content-Type": "application/json; charset=utf-8", "Origin": base}, requeueBody("f", sched))
	require.Equal(t, http.StatusOK, code, "same origin: %s", body)
}

// TestDashboardAsksForATokenOnASecuredNode: on a secured node the page
// asks for a token; a wrong one is refused and asked for again; with a
// read token it shows the cluster and its dead letter, and requeueing it
// says the token lacks the admin role.
func TestDashboardAsksForATokenOnASecuredNode(t *testing.T) {
	chromium(t)
	p := newTestPKI(t)
	policy := p.policy(`{"tokens": [{"name": "viewer", "sha256": "` + security.TokenSHA256("read-token") + `", "roles": ["read"]}]}`)
	c := nodetest.Start(t, nodetest.Options{Nodes: 1, Register: registerFlaky, Agent: func(cfg *agent.Config) {
		cfg.Security = agent.Security{TLS: p.node(cfg.Node.ID), Policy: policy, ClientCertOptional: true}
		cfg.MetricsListen = "127.0.0.1:0"
	}})
	buryDeadLetter(t, c, "Flaky", "f", time.UnixMilli(1_700_000_000_000))

	// The test CA is not one Chromium trusts.
	b := openPage(t, "https://"+c.Agent(0).MetricsAddr()+"/", chromedp.Flag("ignore-certificate-errors", true))
	login := `!document.querySelector('#login').hidden && document.querySelector('#login').innerText.includes("tokens/viewer.token")`
	b.wait("the token form", login+` && document.querySelector('#summary').textContent === "waiting for a token"`)
	b.shot("dashboard-token-form.png")

	b.run(chromedp.SendKeys(chromedp.ID("token"), "guess"), chromedp.Click(chromedp.CSS(`#login button`)))
	b.wait("the wrong token refused", login+` && document.querySelector('#login-note').textContent.startsWith("this token was refused")`)

	b.run(chromedp.SendKeys(chromedp.ID("token"), "read-token"), chromedp.Click(chromedp.CSS(`#login button`)))
	b.wait("the cluster and the dead letter", `document.querySelector('#login').hidden && !document.querySelector('#forget').hidden &&
		document.querySelectorAll('#nodes tbody tr.up').length === 1 &&
		document.querySelector('#dead tbody tr[data-object="f"]') !== null`)

	b.run(chromedp.Click(chromedp.CSS(`#dead tbody tr[data-object="f"] button`)))
	b.wait("the requeue refused for want of the admin role", `(() => {
		const note = document.querySelector('#dead tbody tr[data-object="f"] .note.error');
		return note !== null && note.textContent.startsWith("this token may not requeue dead letters: it needs the admin role");
	})()`)
	b.shot("dashboard-token-read-only.png")
}
