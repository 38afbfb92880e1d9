package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
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

// TestDashboardShowsTheClusterAndANodesLoss loads the dashboard of a
// 3-node cluster in headless Chromium: it shows the three nodes and every
// partition owned; after a node is killed it shows the node lost with
// where its partitions went, and no partition left on it. Screenshots go
// to $DURABLE_ARTIFACTS (default: a temporary directory), named in the log.
func TestDashboardShowsTheClusterAndANodesLoss(t *testing.T) {
	chrome := chromium(t)
	c := nodetest.Start(t, nodetest.Options{
		Nodes: 3,
		Register: func(reg *node.Registry) error {
			return examples.Register(reg, examples.Config{Upstream: "http://127.0.0.1:1"})
		},
		Agent: func(cfg *agent.Config) { cfg.MetricsListen = "127.0.0.1:0" },
	})
	c.WaitSettled()
	page := "http://" + c.Agent(0).MetricsAddr() + "/"

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.Flag("headless", "new"), chromedp.WindowSize(1400, 1100))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	ctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	// The first action starts the browser: no timeout on its context (it
	// would stop the browser); later ones run with their own.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(page)), "load %s", page)

	dir := os.Getenv("DURABLE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("durable-dashboard-%d", time.Now().UnixNano()))
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	shot := func(name string) {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100: PNG
		require.NoError(t, err)
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, png, 0o644))
		t.Logf("screenshot: %s", path)
	}
	// waitPage polls a condition in the page until it holds.
	waitPage := func(what, expr string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](expr))
			cancel()
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
				text, _ := chromedp.Run(ectx, chromedp.Evaluate[string](`document.body.innerText`))
				cancel()
				shot("failed.png")
				t.Fatalf("the dashboard never showed %s (err %v); page text:\n%s", what, err, text)
			}
			time.Sleep(100 * time.Millisecond) // polling a browser: no event to wait on
		}
	}

	waitPage("three nodes up, every partition owned", `document.querySelectorAll('#nodes tbody tr.up').length === 3 &&
		document.querySelectorAll('#partitions div').length === 8 &&
		[...document.querySelectorAll('#partitions div')].every(d => d.dataset.owner !== "")`)
	waitPage("the data center and its leader", `[...document.querySelectorAll('#dcs tbody tr')].some(r => r.cells[0].textContent === "dc1" && r.cells[1].textContent.startsWith("node-") && r.cells[7].textContent === "up")`)
	shot("dashboard-3-nodes.png")

	victim := c.Nodes[2].Config.ID
	c.Kill(2)
	waitPage(victim+" lost, its partitions moved", fmt.Sprintf(`(() => {
		const row = document.querySelector('#nodes tbody tr.lost[data-node=%q]');
		const cells = [...document.querySelectorAll('#partitions div')];
		return row !== null && row.cells[3].textContent.includes("partitions moved to node-") &&
			cells.length === 8 && cells.every(d => d.dataset.owner !== %q && d.dataset.owner !== "") &&
			document.querySelectorAll('#nodes tbody tr.up').length === 2 &&
			[...document.querySelectorAll('#changes li')].some(li => li.textContent.startsWith(%q + " (dc1) lost"));
	})()`, victim, victim, victim))
	shot("dashboard-node-lost.png")
}
