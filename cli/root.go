package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const envPrefix = "DURABLE_"

// newRootCmd builds the command tree of a binary with opts, whose defaults
// are applied (see Options.withDefaults).
func newRootCmd(opts Options) *cobra.Command {
	root := &cobra.Command{
		Use:           opts.Name,
		Short:         opts.Short,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().String("log-format", "text", "log format: text (key=value) or json (one object per line)")
	root.AddCommand(newDevCmd(opts), newAgentCmd(opts), newInvokeCmd(), newAlarmCmd(), newObjectsCmd(), newStatusCmd(), newLocateCmd(), newDrainCmd(), newSinkCmd(), newHealthCmd(), newLoadCmd(), newBenchCmd(), newVersionCmd(opts.Name), newCertsCmd(), newEtcdAuthCmd(), newInspectCmd())
	return root
}

// applyEnv sets every flag the command line left alone from DURABLE_<NAME>,
// where NAME is the flag's name in upper case with '-' as '_'.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Annotations[noEnv] != nil {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// envHelp is appended to commands whose flags can come from the environment.
const envHelp = "\nEvery flag can also be set as DURABLE_<FLAG> (upper case, '-' as '_'), e.g. DURABLE_ETCD."

func newLogger(cmd *cobra.Command) (*slog.Logger, error) {
	lvl, _ := cmd.Flags().GetString("log-level")
	var level slog.Level
	if err := level.UnmarshalText([]byte(lvl)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", lvl)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format, _ := cmd.Flags().GetString("log-format"); format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: want text or json", format)}
	}
}

func newVersionCmd(name string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version: module version, VCS revision, Go version and platform",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionInfo()
			if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
				b, err := json.MarshalIndent(v, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s (revision %s%s, built %s, %s, %s)\n", name, v.Version, v.Revision, dirty(v.Modified), v.Time, v.Go, v.Platform)
			return nil
		},
	}
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

// version is what `durable version` prints.
type version struct {
	Version  string `json:"version"`
	Revision string `json:"revision"`
	Modified bool   `json:"modified"`
	Time     string `json:"time"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// versionInfo reads the build information the Go toolchain recorded.
func versionInfo() version {
	v := version{Version: "unknown", Revision: "unknown", Time: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Version = bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func dirty(modified bool) string {
	if modified {
		return ", modified"
	}
	return ""
}

// exitCode maps errors to exit codes: 2 for usage and bad input, 3 for
// "not found" (a class or a method), 4 for unavailable, 1 otherwise.
func exitCode(err error) int {
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.InvalidArgument, codes.FailedPrecondition:
			return 2
		case codes.NotFound, codes.Unimplemented: // an unknown class or method
			return 3
		case codes.Unavailable, codes.DeadlineExceeded:
			return 4
		}
		return 1
	}
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

type usageError struct{ error }
