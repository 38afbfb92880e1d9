package cli_test

import (
	"context"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/cli/clitest"
)

// run runs durable's command line in-process (clitest.Run).
func run(ctx context.Context, args ...string) (string, error) {
	return clitest.Run(ctx, cli.TestOptions, args...)
}

// TestDevWithoutNodesRunsEtcdAndTheSink: `dev --nodes 0` runs only the
// embedded etcd and the sink, and an agent started apart joins through it.
func TestDevWithoutNodesRunsEtcdAndTheSink(t *testing.T) {
	ctx := context.Background()
	dev := clitest.StartDev(t, cli.TestOptions, "--nodes", "0")
	require.NotEmpty(t, dev.Etcd, dev.Out.String())
	require.Empty(t, dev.Addrs)
	require.Contains(t, dev.Out.String(), "without nodes")

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	agentCtx, stopAgent := context.WithCancel(ctx)
	_, agentDone := clitest.Start(agentCtx, cli.TestOptions, "agent", "--etcd", dev.Etcd, "--listen", addr, "--node-id", "apart", "--log-level", "error", "--partitions", "8")
	require.Eventually(t, func() bool {
		out, err := run(ctx, "invoke", "--addr", addr, "Counter", "c", "increment")
		return err == nil && strings.TrimSpace(out) == `{"value":1}`
	}, 30*time.Second, 50*time.Millisecond, "the agent never served")
	stopAgent()
	require.NoError(t, <-agentDone)
	require.NoError(t, dev.Stop())
}

// TestDevClusterCommands runs `durable dev --nodes 2` in-process and drives
// it with the client commands: any node answers, status shows both nodes and
// every partition owned, drain moves a node's partitions, bad input exits
// with the right code.
func TestDevClusterCommands(t *testing.T) {
	ctx := context.Background()
	dev := clitest.StartDev(t, cli.TestOptions, "--nodes", "2", "--partitions", "16", "--metrics-listen", "127.0.0.1:0")
	addrs := dev.Addrs
	require.Len(t, addrs, 2, dev.Out.String())

	for i, want := range []string{`{"value":1}`, `{"value":2}`} {
		out, err := run(ctx, "invoke", "--addr", addrs[i], "Counter", "c", "increment")
		require.NoError(t, err)
		require.Equal(t, want, strings.TrimSpace(out), "through node %d", i)
	}

	out, err := run(ctx, "objects", "list", "--addr", addrs[1], "Counter")
	require.NoError(t, err)
	require.Regexp(t, `NAME\s+ID\s+PARTITION\n`, out)
	require.Regexp(t, `\nc\s+`+durable.IDFromName("Counter", "c").String()+`\s+\d+\n`, out)
	require.NotContains(t, out, "more:", "one object, one page")
	out, err = run(ctx, "objects", "list", "--addr", addrs[0], "--json", "--limit", "1", "Counter")
	require.NoError(t, err)
	require.Regexp(t, `"name":\s+"c"`, out)
	require.Regexp(t, `"next_page_token":\s+""`, out)
	_, err = run(ctx, "objects", "list", "--addr", addrs[0], "--limit", "-1", "Counter")
	require.Equal(t, 2, cli.ExitCode(err), "negative limit: %v", err)

	out, err = run(ctx, "locate", "--addr", addrs[0], "Counter", "c")
	require.NoError(t, err)
	require.Regexp(t, `partition\s+\d+`, out)
	require.Regexp(t, `owner\s+dev-\d at `, out)
	require.Regexp(t, `token\s+[1-9]\d*`, out)

	// dev returns once each node owns a partition; the leader may still be
	// moving some (a moving partition shows as unowned for a moment).
	require.Eventually(t, func() bool {
		out, err = run(ctx, "status", "--addr", strings.Join(addrs, ","))
		return err == nil && !strings.Contains(out, "(unowned)")
	}, 30*time.Second, 20*time.Millisecond, "partitions stayed unowned: %s", out)
	require.Contains(t, out, "16 partitions")
	require.Regexp(t, `dev-1\s+dc1\s+`+regexp.QuoteMeta(addrs[0])+`\s+up`, out)
	require.Regexp(t, `dev-2\s+dc1\s+`+regexp.QuoteMeta(addrs[1])+`\s+up`, out)
	require.NotContains(t, out, "(unowned)")

	out, err = run(ctx, "drain", "--addr", addrs[1])
	require.NoError(t, err)
	require.Contains(t, out, "node dev-2 drained")
	out, err = run(ctx, "status", "--addr", addrs[0])
	require.NoError(t, err)
	require.Regexp(t, `dev-1\s+dc1\s+\S+\s+up\s+16\s`, out, "all partitions on dev-1 after draining dev-2")
	require.Regexp(t, `dev-2\s+dc1\s+\S+\s+draining\s+0\s`, out)

	// The drained node still answers, by forwarding.
	out, err = run(ctx, "invoke", "--addr", addrs[1], "Counter", "c", "get")
	require.NoError(t, err)
	require.Equal(t, `{"value":2}`, strings.TrimSpace(out))

	out, err = run(ctx, "invoke", "--addr", addrs[0], "--location", "dc1", "Counter", "c", "get")
	require.NoError(t, err)
	require.Equal(t, `{"value":0}`, strings.TrimSpace(out), "c homed in dc1 is another counter than c")
	_, err = run(ctx, "invoke", "--addr", addrs[0], "--location", "dc9", "Counter", "c", "get")
	require.Equal(t, 2, cli.ExitCode(err), "unknown location: %v", err)
	require.ErrorContains(t, err, `location "dc9" is not a data center of this cluster`)
	_, err = run(ctx, "invoke", "--addr", addrs[0], "--location", "dc1", "--id", "Counter", "abc", "get")
	require.Equal(t, 2, cli.ExitCode(err), "a location beside an id: %v", err)
	_, err = run(ctx, "invoke", "--addr", addrs[0], "Nope", "x", "get")
	require.Equal(t, 3, cli.ExitCode(err), "unknown class: %v", err)
	_, err = run(ctx, "invoke", "--addr", addrs[0], "--id", "Counter", "abc", "get")
	require.Equal(t, 2, cli.ExitCode(err), "malformed id: %v", err)
	_, err = run(ctx, "drain", "--addr", strings.Join(addrs, ","))
	require.ErrorContains(t, err, "drain acts on one node")

	require.NoError(t, dev.Stop())
}

// TestDevSecure runs `durable dev --secure` and uses the environment it
// prints: the admin client calls, a client without a certificate is
// refused at the handshake, the loadgen client may not drain.
func TestDevSecure(t *testing.T) {
	ctx := context.Background()
	dev := clitest.StartDev(t, cli.TestOptions, "--secure", "--nodes", "2", "--partitions", "16", "--certs-dir", t.TempDir())
	addrs := dev.Addrs
	require.Len(t, addrs, 2, dev.Out.String())
	m := regexp.MustCompile(`export DURABLE_TLS_CA=(\S+) DURABLE_TLS_CERT=(\S+) DURABLE_TLS_KEY=(\S+)`).FindStringSubmatch(dev.Out.String())
	require.NotNil(t, m, "dev --secure did not print its environment: %s", dev.Out.String())
	creds := []string{"--tls-ca", m[1], "--tls-cert", m[2], "--tls-key", m[3]}

	// Through both nodes, one of them forwarding over mutual TLS.
	out, err := run(ctx, append([]string{"invoke", "--addr", strings.Join(addrs, ",")}, append(creds, "Counter", "c", "increment")...)...)
	require.NoError(t, err, out)
	require.Equal(t, `{"value":1}`, strings.TrimSpace(out))
	out, err = run(ctx, append([]string{"invoke", "--addr", addrs[1]}, append(creds, "Counter", "c", "increment")...)...)
	require.NoError(t, err, out)
	require.Equal(t, `{"value":2}`, strings.TrimSpace(out))

	_, err = run(ctx, "status", "--addr", addrs[0], "--tls-ca", creds[1], "--timeout", "2s")
	require.Error(t, err, "no client certificate: refused")
	require.Equal(t, 4, cli.ExitCode(err), "%v", err)

	loadgen := strings.Replace(creds[3], "admin.pem", "loadgen.pem", 1)
	out, err = run(ctx, "drain", "--addr", addrs[0], "--tls-ca", creds[1], "--tls-cert", loadgen, "--tls-key", strings.Replace(loadgen, ".pem", "-key.pem", 1))
	require.Error(t, err, out)
	require.Contains(t, err.Error(), "PermissionDenied")
	require.NoError(t, dev.Stop())
}

func TestCertsRefusesBadInputAndWritesNothing(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"certs"}, // no --dir
		{"certs", "--dir", "D", "--client", "ops"},
		{"certs", "--dir", "D", "--client", "ops=root"},
		{"certs", "--dir", "D", "--token", "t="},
		{"certs", "--dir", "D", "--nodes", "../evil"},
	} {
		dir := t.TempDir()
		for i, a := range args {
			if a == "D" {
				args[i] = dir
			}
		}
		_, err := run(ctx, args...)
		require.Error(t, err, "%v", args)
		entries, _ := os.ReadDir(dir)
		require.Empty(t, entries, "%v wrote something", args)
	}
	dir := t.TempDir()
	out, err := run(ctx, "certs", "--dir", dir, "--nodes", "n1", "--client", "ops=admin+invoke")
	require.NoError(t, err)
	require.Contains(t, out, "DURABLE_TLS_CERT="+dir+"/clients/")
}
