package cli

import (
	"bytes"
	"context"
	"regexp"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/node"
)

// TestHelpDefaultsAreTheEffectiveConfig: for each command that runs nodes,
// the node configuration it builds from no flags is its documented
// defaults, and --help shows those same values.
func TestHelpDefaultsAreTheEffectiveConfig(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want node.Config
	}{
		{"agent", node.DefaultConfig()},
		{"dev", devNodeDefaults()},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			root := Command(testOptions)
			sub, _, err := root.Find([]string{tc.cmd})
			require.NoError(t, err)
			fs := sub.Flags()
			require.NoError(t, fs.Parse(nil))
			require.Equal(t, tc.want, nodeConfig(fs))

			var out bytes.Buffer
			root.SetOut(&out)
			root.SetArgs([]string{tc.cmd, "--help"})
			require.NoError(t, root.ExecuteContext(context.Background()))
			help := out.String()
			checked := 0
			fs.VisitAll(func(f *pflag.Flag) {
				if f.DefValue == "" || f.DefValue == "0" || f.DefValue == "0s" || f.DefValue == "[]" || f.DefValue == "false" {
					return // pflag does not print zero defaults
				}
				re := regexp.MustCompile(`--` + regexp.QuoteMeta(f.Name) + `\b[^\n]*\(default "?` + regexp.QuoteMeta(f.DefValue) + `"?\)`)
				require.Regexp(t, re, help, "--%s", f.Name)
				checked++
			})
			require.Greater(t, checked, 10)
		})
	}
}

// TestOptionsNameTheBinaryAndItsFlags: Name is the binary's name in usage
// and `version`; --upstream exists only when the options take one.
func TestOptionsNameTheBinaryAndItsFlags(t *testing.T) {
	ctx := context.Background()
	chat := Options{Name: "chat"}
	var out bytes.Buffer
	root := Command(chat)
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	require.NoError(t, root.ExecuteContext(ctx))
	require.Regexp(t, `^chat \S+ \(revision`, out.String())
	for _, sub := range []string{"dev", "agent"} {
		cmd, _, err := Command(chat).Find([]string{sub})
		require.NoError(t, err)
		require.Nil(t, cmd.Flags().Lookup("upstream"), "%s of a binary without RegisterUpstream", sub)
		require.NotNil(t, cmd.Flags().Lookup("max-calls"), sub)
		cmd, _, err = Command(testOptions).Find([]string{sub})
		require.NoError(t, err)
		require.NotNil(t, cmd.Flags().Lookup("upstream"), "%s of durable", sub)
	}
}

func TestDevBannerPutsAddrAfterTheSubcommand(t *testing.T) {
	root := Command(testOptions)
	for _, tc := range []struct{ line, want string }{
		{"invoke Batcher foo add hello", "go run ./cmd/durable invoke --addr X Batcher foo add hello"},
		{"alarm get Batcher foo", "go run ./cmd/durable alarm get --addr X Batcher foo"},
		{"status", "go run ./cmd/durable status --addr X"},
		{"nope a b", "go run ./cmd/durable nope a b"},
	} {
		require.Equal(t, tc.want, tryLine(root, "go run ./cmd/durable", tc.line, " --addr X"), tc.line)
	}
}

// TestAllowedHostsAreCheckedBeforeAnythingStarts: a name that is not a
// host name (a URL, a port) is a usage error of agent and dev.
func TestAllowedHostsAreCheckedBeforeAnythingStarts(t *testing.T) {
	for _, args := range [][]string{
		{"agent", "--http-allowed-hosts", "node1,http://evil.example"},
		{"dev", "--http-allowed-hosts", "node1:4700", "--etcd-listen", "127.0.0.1:1", "--nodes", "0"},
	} {
		root := Command(testOptions)
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(args)
		err := root.ExecuteContext(context.Background())
		require.ErrorContains(t, err, "--http-allowed-hosts", "%v", args)
		require.Equal(t, 2, exitCode(err), "%v: %v", args, err)
	}
}
