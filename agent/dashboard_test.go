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
