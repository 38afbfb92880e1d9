package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/durable-run/durable/bench"
)

// newBenchCmd is `durable bench`: one subcommand per registered scenario,
// plus `all`.
func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput and latency, each beside the raw etcd ceiling of the same run",
		Long: "Run benchmark scenarios against an embedded cluster (an in-process etcd with fsync on and\n" +
			"--nodes in-process nodes serving the example classes) or against a given one (--addr, --etcd),\n" +
			"and print a table (or --json) of throughput and latency percentiles, each beside the raw etcd\n" +
			"ceiling measured in the same run. Progress goes to stderr. See docs/performance.md." + envHelp,
		// Unknown scenarios are usage errors (exit 2), not cobra's plain
		// "unknown command".
		Args: cobra.ArbitraryArgs,
	}
	pf := cmd.PersistentFlags()
	d := bench.DefaultClusterConfig()
	pf.Bool("short", false, "quick profile: fewer cases, 1s phases; 'bench all --short' takes about a minute (13s more with --mtls)")
	pf.Bool("json", false, "print the report as JSON instead of tables")
	pf.Int("nodes", d.Nodes, "nodes of the embedded cluster (1-16)")
	pf.Int("partitions", d.Partitions, "partitions of the embedded cluster")
	pf.Duration("lease-ttl", d.LeaseTTL, "lease TTL of the embedded cluster's nodes (whole seconds)")
	pf.String("addr", "", "measure a given cluster instead: its nodes' gRPC addresses, comma-separated (secured: the --tls-* and --token flags; its etcd, --etcd: the --etcd-* flags, as its nodes use them)")
	addClientSecurityFlags(pf)
	pf.StringSlice("etcd", nil, "etcd endpoints: the given cluster's (for the ceilings), or, without --addr, an etcd to run the embedded nodes on")
	// The given cluster's etcd is reached as its nodes reach it (the
	// ceilings write under /durable-bench-ceiling/: with etcd's auth on, a
	// user allowed there, such as root).
	addEtcdTLSFlags(pf)
	addEtcdLoginFlags(pf)
	pf.Duration("duration", 0, "measure each phase this long (default 5s, 1s with --short); soak: how long alarms fall due (default 5m, 1m with --short)")
	pf.Int("alarms", 0, "alarms per case of the alarms and failover scenarios (default: the profile's)")
	pf.Bool("mtls", true, "invoke: also measure every row on a second embedded cluster secured with mutual TLS 1.3, beside the plaintext rows (--mtls=false: plaintext only)")
	pf.String("observability", bench.ObsMetrics, "what the embedded nodes measure of themselves: metrics (as nodes run by default), off (no metric updates on the hot paths, no tracing), metrics+tracing (every span sampled unless OTEL_TRACES_SAMPLER says otherwise, exported to a discarding exporter), or compare: invoke (its plaintext rows) and alarms (its rates) are measured on all three, phase by phase, each row with its ratio to off")
	pf.String("paths", "", "invoke: compare: measure every row through three paths to the same storage work, phase by phase: an untyped class over gRPC, the typed Counter (client.Call) and the untyped class through the nodes' HTTP front door, each row with its ratio to the gRPC one (embedded cluster only)")
	pf.Bool("peers", false, "with all: also run the peers scenario (asynq and River via bench/peers/run.sh)")
	pf.String("peers-dir", "bench/peers", "the bench/peers directory of a checkout of this repository")
	pf.Bool("quiet", false, "no progress bars, only a line per phase")
	pf.Bool("verbose", false, "show the nodes' and etcd's warnings on stderr")
	pf.String("cpuprofile", "", "write a CPU profile of the whole run (embedded cluster included) to this file")
	pf.String("memprofile", "", "write an allocation profile of the whole run to this file")
	pf.String("trace", "", "write an execution trace (runtime/trace) of the whole run to this file, for `go tool trace` (scheduler latency, GC, blocking)")

	var names []string
	for _, s := range bench.Scenarios() {
		short := "Run the " + s.Name() + " scenario"
		if d, ok := s.(bench.Describer); ok {
			short = "Measure " + d.Description()
		}
		sub := &cobra.Command{
			Use: s.Name(), Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return runBench(cmd, []bench.Scenario{s}) },
		}
		if _, ok := s.(bench.SoakScenario); ok {
			sub.Flags().Float64("rate", 20000, "alarms due per second")
			sub.Flags().Duration("period", 5*time.Second, "how often each object fires (objects = rate × period; under the nodes' idle timeout)")
		}
		if _, ok := s.(bench.AlarmsScenario); ok {
			sub.Flags().StringSlice("cases", nil, "run only these cases, comma-separated: "+strings.Join(bench.AlarmCases, ", ")+" (default: all)")
		}
		if _, ok := s.(bench.ObjectsScenario); ok {
			sub.Flags().Int("objects", 0, "objects to activate and leave parked (default 1,000,000; 100,000 with --short)")
		}
		cmd.AddCommand(sub)
		names = append(names, s.Name())
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown scenario %q: want %s or all", args[0], strings.Join(names, ", "))}
		}
		return cmd.Help()
	}
	var always []string
	for _, s := range bench.Scenarios() {
		if _, ok := s.(bench.Optional); !ok {
			always = append(always, s.Name())
		}
	}
	cmd.AddCommand(&cobra.Command{
		Use: "all", Short: "Run every scenario in order: " + strings.Join(always, ", ") + " (and peers with --peers; never soak)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			peers, _ := cmd.Flags().GetBool("peers")
			return runBench(cmd, allScenarios(peers))
		},
	})
	check := &cobra.Command{
		Use:   "check",
		Short: "Run 'bench all --short' and compare each row's ratio to its etcd ceiling with a baseline: fail if one fell below half of it",
		Long: "Run 'bench all --short' (or read a saved --report of it) and compare each row's ratio to its own\n" +
			"etcd ceiling with the ratio in --baseline. It fails (exit 1) only when a ratio fell below " + fmt.Sprint(bench.RegressionFactor) + "× its\n" +
			"baseline's; absolute numbers are never compared, and rows in one side only are reported, not\n" +
			"failures. --write-baseline records the run's ratios instead (on a quiet machine).",
		Args: cobra.NoArgs,
		RunE: runBenchCheck,
	}
	check.Flags().String("baseline", "bench/baseline-short.json", "the baseline file")
	check.Flags().String("report", "", "compare this report (from 'bench all --short --json') instead of running the bench")
	check.Flags().Bool("write-baseline", false, "write the run's ratios to --baseline instead of comparing")
	check.Flags().String("commit", "", "with --write-baseline: the commit measured, noted in the file")
	cmd.AddCommand(check)
	return cmd
}

// allScenarios returns what 'bench all' runs: every scenario but the
// optional ones, and peers if asked for.
func allScenarios(peers bool) []bench.Scenario {
	var run []bench.Scenario
	for _, s := range bench.Scenarios() {
		_, optional := s.(bench.Optional)
		_, isPeers := s.(bench.PeersScenario)
		if !optional || (peers && isPeers) {
			run = append(run, s)
		}
	}
	return run
}

// runBenchCheck is 'bench check'.
func runBenchCheck(cmd *cobra.Command, _ []string) error {
	fs := cmd.Flags()
	path, _ := fs.GetString("baseline")
	reportPath, _ := fs.GetString("report")
	write, _ := fs.GetBool("write-baseline")
	commit, _ := fs.GetString("commit")
	out := cmd.OutOrStdout()
	var rep *bench.Report
	if reportPath != "" {
		data, err := os.ReadFile(reportPath)
		if err != nil {
			return usageError{fmt.Errorf("--report: %w", err)}
		}
		rep = &bench.Report{}
		if err := json.Unmarshal(data, rep); err != nil {
			return fmt.Errorf("--report %s: %w", reportPath, err)
		}
		if rep.Error != "" {
			return fmt.Errorf("the run of %s stopped early: %s", reportPath, rep.Error)
		}
	} else {
		if err := fs.Set("short", "true"); err != nil {
			return err
		}
		peers, _ := fs.GetBool("peers")
		var err error
		if rep, err = measure(cmd, allScenarios(peers)); err != nil {
			return err
		}
	}
	if rep.Params.Profile != bench.ShortProfile().Name {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: the report's profile is %q; the baseline is of %q\n", rep.Params.Profile, bench.ShortProfile().Name)
	}
	if write {
		b := bench.NewBaseline(rep, commit)
		var buf strings.Builder
		if err := b.WriteJSON(&buf); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(buf.String()), 0o644); err != nil {
			return fmt.Errorf("write the baseline: %w", err)
		}
		fmt.Fprintf(out, "wrote %d rows' ratios to %s\n", len(b.Rows), path)
		return nil
	}
	b, err := bench.ReadBaseline(path)
	if err != nil {
		return usageError{err}
	}
	c := bench.CompareBaseline(b, rep)
	if err := c.WriteTable(out, b); err != nil {
		return err
	}
	if c.Failed() {
		return fmt.Errorf("bench check: %d row(s) fell below %.1f× their baseline's ratio to the etcd ceiling", c.Regressions, bench.RegressionFactor)
	}
	return nil
}

// benchOptions turns the flags into bench options; bad flags are usage
// errors.
func benchOptions(cmd *cobra.Command, scenarios []bench.Scenario) (bench.Options, error) {
	fs := cmd.Flags()
	short, _ := fs.GetBool("short")
	nodes, _ := fs.GetInt("nodes")
	partitions, _ := fs.GetInt("partitions")
	ttl, _ := fs.GetDuration("lease-ttl")
	addr, _ := fs.GetString("addr")
	etcd, _ := fs.GetStringSlice("etcd")
	duration, _ := fs.GetDuration("duration")
	alarms, _ := fs.GetInt("alarms")

	opts := bench.Options{Profile: bench.FullProfile(), Etcd: etcd}
	if short {
		opts.Profile = bench.ShortProfile()
	}
	var errs []error
	switch {
	case duration < 0:
		errs = append(errs, fmt.Errorf("--duration %s must not be negative", duration))
	case duration > 0:
		opts.Profile.Phase = duration
	}
	if alarms < 0 {
		errs = append(errs, fmt.Errorf("--alarms %d must not be negative", alarms))
	}
	opts.Profile.Alarms = alarms
	for _, a := range strings.Split(addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			opts.Addrs = append(opts.Addrs, a)
		}
	}
	if len(opts.Addrs) > 0 {
		for _, f := range []string{"nodes", "partitions", "lease-ttl", "mtls", "observability", "paths"} {
			if fs.Changed(f) {
				errs = append(errs, fmt.Errorf("--%s describes the embedded cluster; it does not go with --addr", f))
			}
		}
		sec, err := clientSecurity(fs)
		if err == nil {
			opts.DialOptions, err = sec.DialOptions()
		}
		if err != nil {
			errs = append(errs, err)
		}
		if ec, err := etcdClientConfig(fs); err != nil {
			errs = append(errs, err)
		} else {
			opts.EtcdLogin = bench.EtcdLogin{TLS: ec.TLS, User: ec.User, Password: ec.Password}
		}
		switch {
		case sec.TLS.Cert != "":
			opts.Transport = bench.MTLS
		case sec.Enabled():
			opts.Transport = "tls"
		}
		if len(etcd) == 0 {
			for _, s := range scenarios {
				if s.Name() == (bench.EtcdScenario{}).Name() {
					errs = append(errs, errors.New("the etcd scenario needs the given cluster's etcd: add --etcd"))
				}
			}
		}
	} else {
		for _, f := range []string{"tls-ca", "tls-cert", "tls-key", "tls-server-name", "token", "token-file", "etcd-ca", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file"} {
			if fs.Changed(f) {
				errs = append(errs, fmt.Errorf("--%s reaches a given cluster (--addr); the embedded one is reached as it was started", f))
			}
		}
		if nodes < 1 || nodes > 16 {
			errs = append(errs, fmt.Errorf("--nodes must be between 1 and 16, got %d", nodes))
		}
		if partitions < 1 || partitions > 65536 {
			errs = append(errs, fmt.Errorf("--partitions must be between 1 and 65536, got %d", partitions))
		}
		if ttl < time.Second || ttl%time.Second != 0 {
			errs = append(errs, fmt.Errorf("--lease-ttl %s must be a whole number of seconds, at least 1s", ttl))
		}
		opts.Cluster = bench.ClusterConfig{Nodes: nodes, Partitions: partitions, LeaseTTL: ttl, EtcdEndpoints: etcd}
		opts.Etcd = nil
		switch obs, _ := fs.GetString("observability"); obs {
		case bench.ObsOff, bench.ObsMetrics, bench.ObsTracing:
			opts.Cluster.Observability = obs
		case "compare": // the run's own cluster keeps metrics; invoke starts the others
		default:
			errs = append(errs, fmt.Errorf("--observability %q must be off, metrics, metrics+tracing or compare", obs))
		}
	}
	if p, _ := fs.GetString("paths"); p != "" && p != "compare" {
		errs = append(errs, fmt.Errorf("--paths %q must be compare or empty", p))
	}
	if err := errors.Join(errs...); err != nil {
		return opts, usageError{err}
	}
	return opts, nil
}

func runBench(cmd *cobra.Command, scenarios []bench.Scenario) error {
	asJSON, _ := cmd.Flags().GetBool("json")
	rep, runErr := measure(cmd, scenarios)
	if rep != nil && (asJSON || len(rep.Results) > 0) {
		out := cmd.OutOrStdout()
		var werr error
		if asJSON {
			werr = rep.WriteJSON(out)
		} else {
			werr = rep.WriteTable(out)
		}
		if werr != nil {
			return errors.Join(runErr, fmt.Errorf("write the report: %w", werr))
		}
	}
	return runErr
}

// measure runs scenarios as the flags say, showing progress on stderr,
// and returns the report (nil if the flags are wrong).
func measure(cmd *cobra.Command, scenarios []bench.Scenario) (*bench.Report, error) {
	opts, err := benchOptions(cmd, scenarios)
	if err != nil {
		return nil, err
	}
	fs := cmd.Flags()
	peersDir, _ := fs.GetString("peers-dir")
	mtls, _ := fs.GetBool("mtls")
	obs, _ := fs.GetString("observability")
	paths, _ := fs.GetString("paths")
	for i, s := range scenarios {
		switch s.(type) {
		case bench.PeersScenario:
			scenarios[i] = bench.PeersScenario{Dir: peersDir}
		case bench.InvokeScenario:
			scenarios[i] = bench.InvokeScenario{MTLS: mtls && len(opts.Addrs) == 0, CompareObservability: obs == "compare", ComparePaths: paths == "compare"}
		case bench.AlarmsScenario:
			var cases []string
			if fs.Lookup("cases") != nil {
				cases, _ = fs.GetStringSlice("cases")
			}
			if err := bench.ValidateCases(cases); err != nil {
				return nil, usageError{fmt.Errorf("alarms: --cases: %w", err)}
			}
			scenarios[i] = bench.AlarmsScenario{CompareObservability: obs == "compare", Cases: cases}
		case bench.ObjectsScenario:
			if len(opts.Addrs) > 0 {
				return nil, usageError{errors.New("objects: it needs the embedded cluster (it reads the memory of the process the nodes run in): leave out --addr")}
			}
			if fs.Lookup("objects") != nil {
				n, _ := fs.GetInt("objects")
				if n < 0 {
					return nil, usageError{fmt.Errorf("objects: --objects %d: must be positive", n)}
				}
				scenarios[i] = bench.ObjectsScenario{Objects: n}
			}
		case bench.SoakScenario:
			// The soak's --duration is the whole soak, not a phase.
			rate, _ := fs.GetFloat64("rate")
			period, _ := fs.GetDuration("period")
			duration, _ := fs.GetDuration("duration")
			soak := bench.SoakScenario{Rate: rate, Period: period, Duration: duration}
			if err := soak.WithDefaults(opts.Profile).Validate(); err != nil {
				return nil, usageError{fmt.Errorf("soak: %w", err)}
			}
			if len(opts.Addrs) > 0 {
				return nil, usageError{errors.New("soak: it needs the embedded cluster (it records every alarm's run and reads the memory of the process the nodes run in): leave out --addr")}
			}
			scenarios[i] = soak
			// Nor is it the phases' length (the ceiling it is placed beside).
			if short, _ := fs.GetBool("short"); short {
				opts.Profile.Phase = bench.ShortProfile().Phase
			} else {
				opts.Profile.Phase = bench.FullProfile().Phase
			}
		}
	}
	quiet, _ := fs.GetBool("quiet")
	verbose, _ := fs.GetBool("verbose")
	stderr := cmd.ErrOrStderr()
	opts.Progress = bench.NewProgress(stderr, !quiet && isTerminal(stderr))
	opts.Log = slog.New(slog.DiscardHandler)
	if verbose {
		opts.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	stopProfiles, err := startProfiles(fs)
	if err != nil {
		return nil, err
	}
	rep, runErr := bench.Run(cmd.Context(), scenarios, opts)
	if err := stopProfiles(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	return rep, runErr
}

// startProfiles starts the CPU profile and arranges the allocation profile
// that --cpuprofile and --memprofile ask for; the returned function writes
// them.
func startProfiles(fs *pflag.FlagSet) (func() error, error) {
	cpu, _ := fs.GetString("cpuprofile")
	mem, _ := fs.GetString("memprofile")
	var cpuFile, traceFile *os.File
	if path, _ := fs.GetString("trace"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return nil, usageError{fmt.Errorf("--trace: %w", err)}
		}
		if err := trace.Start(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("start the execution trace: %w", err)
		}
		traceFile = f
	}
	stopTrace := func() error {
		if traceFile == nil {
			return nil
		}
		trace.Stop()
		return traceFile.Close()
	}
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			stopTrace()
			return nil, usageError{fmt.Errorf("--cpuprofile: %w", err)}
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			stopTrace()
			return nil, fmt.Errorf("start the CPU profile: %w", err)
		}
		cpuFile = f
	}
	return func() error {
		errs := []error{stopTrace()}
		if cpuFile != nil {
			pprof.StopCPUProfile()
			errs = append(errs, cpuFile.Close())
		}
		if mem != "" {
			f, err := os.Create(mem)
			if err != nil {
				return errors.Join(append(errs, fmt.Errorf("--memprofile: %w", err))...)
			}
			errs = append(errs, pprof.Lookup("allocs").WriteTo(f, 0), f.Close())
		}
		return errors.Join(errs...)
	}, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
