package main

import (
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
			root := newRootCmd()
			sub, _, err := root.Find([]string{tc.cmd})
			require.NoError(t, err)
			fs := sub.Flags()
			require.NoError(t, fs.Parse(nil))
			require.Equal(t, tc.want, nodeConfig(fs))

			help, err := run(context.Background(), tc.cmd, "--help")
			require.NoError(t, err)
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
