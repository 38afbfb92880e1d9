package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/cli/clitest"
)

// TestMainIsAtMostFifteenLines is the "done when": a user's main
// with two classes is at most 15 lines and gets every command.
func TestMainIsAtMostFifteenLines(t *testing.T) {
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	lines := strings.Count(strings.TrimSuffix(string(src), "\n"), "\n") + 1
	require.LessOrEqual(t, lines, 15, "main.go has %d lines", lines)
	require.Contains(t, string(src), `"Greeter"`)
	require.Contains(t, string(src), `"Tally"`)
}

// TestEveryCommandServesTheUsersClasses runs the binary's command line
// in-process: `dev` serves both classes, `invoke` calls them (an unknown
// class exits 3), `status` lists them, `health` passes, `version` names the
// binary.
func TestEveryCommandServesTheUsersClasses(t *testing.T) {
	ctx := context.Background()
	dev := clitest.StartDev(t, options, "--nodes", "1", "--partitions", "8")
	require.Len(t, dev.Addrs, 1, dev.Out.String())
	addr := dev.Addrs[0]
	require.Contains(t, dev.Out.String(), "usermod dev is running")
	run := func(args ...string) string {
		t.Helper()
		out, err := clitest.Run(ctx, options, args...)
		require.NoError(t, err, "%v: %s", args, out)
		return strings.TrimSpace(out)
	}

	require.Equal(t, "hello ada, visit 1", run("invoke", "--addr", addr, "Greeter", "ada", "hello"))
	require.Equal(t, `{"total":2}`, run("invoke", "--addr", addr, "Tally", "t", "add", `{"n":2}`))
	require.Equal(t, `{"total":5}`, run("invoke", "--addr", addr, "Tally", "t", "add", `{"n":3}`))
	require.Equal(t, `{"total":5}`, run("invoke", "--addr", addr, "Tally", "t", "get"))
	require.Regexp(t, `dev-1\s+dc1\s+`+regexp.QuoteMeta(addr)+`\s+up\s+.*Greeter,Tally`, run("status", "--addr", addr))
	run("health", "--addr", addr)
	require.Regexp(t, `^usermod \S+ \(revision`, run("version"))

	_, err := clitest.Run(ctx, options, "invoke", "--addr", addr, "Counter", "c", "increment")
	require.Error(t, err, "durable's example classes are not this binary's")
	require.NoError(t, dev.Stop())
}

// TestTheBuiltBinaryRunsItsCommands builds main.go and runs the binary
// against a dev cluster: cli.Main's output and exit codes (0; 3 for an
// unknown class, with the error prefixed by the binary's name).
func TestTheBuiltBinaryRunsItsCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "usermod")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	dev := clitest.StartDev(t, options, "--nodes", "1", "--partitions", "8")
	require.Len(t, dev.Addrs, 1, dev.Out.String())
	invoke := func(args ...string) (string, string, int) {
		cmd := exec.Command(bin, append([]string{"invoke", "--addr", dev.Addrs[0]}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		return strings.TrimSpace(stdout.String()), stderr.String(), code
	}
	stdout, _, code := invoke("Tally", "t", "add", `{"n":4}`)
	require.Equal(t, 0, code)
	require.Equal(t, `{"total":4}`, stdout)
	_, stderr, code := invoke("Nope", "x", "get")
	require.Equal(t, 3, code, stderr)
	require.True(t, strings.HasPrefix(stderr, "usermod: "), stderr)

	version, err := exec.Command(bin, "version").Output()
	require.NoError(t, err)
	require.Regexp(t, `^usermod \S+ \(revision`, string(version))
	require.NoError(t, dev.Stop())
}
