package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const envPrefix = "DURABLE_"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "durable",
		Short:         "Durable objects with alarms, on etcd",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(newDevCmd(), newAgentCmd(), newInvokeCmd(), newAlarmCmd(), newStatusCmd(), newLocateCmd(), newDrainCmd(), newSinkCmd(), newHealthCmd(), newLoadCmd(), newBenchCmd())
	return root
}

// applyEnv sets every flag the command line left alone from DURABLE_<NAME>,
// where NAME is the flag's name in upper case with '-' as '_'.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
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
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}

// exitCode maps errors to exit codes: 2 for usage and bad input, 3 for
// "not found", 4 for unavailable, 1 otherwise.
func exitCode(err error) int {
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.InvalidArgument, codes.FailedPrecondition:
			return 2
		case codes.NotFound:
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
