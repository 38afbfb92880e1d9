package chaos

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
)

// skipIfShort skips a chaos run under -short, except under CI=true, where
// the chaos runs are required.
func skipIfShort(t *testing.T) {
	t.Helper()
	if !testing.Short() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true requires the chaos runs: do not pass -short")
	}
	t.Skip("chaos runs for a while; skipped with -short")
}

// profile reads the chaos run's length, seed and faults from the
// environment: DURABLE_CHAOS_DURATION (default 40s: the short profile that
// `make test` and CI run), DURABLE_CHAOS_SEED (default: the clock, printed
// so a failure can be replayed) and DURABLE_CHAOS_FAULTS (comma-separated
// names; default every fault the target supports).
func profile(t *testing.T, supported []string) (time.Duration, uint64, []string) {
	d := 40 * time.Second
	if v := os.Getenv("DURABLE_CHAOS_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("DURABLE_CHAOS_DURATION: %v", err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("DURABLE_CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("DURABLE_CHAOS_SEED: %v", err)
		}
	}
	names := supported
	if v := os.Getenv("DURABLE_CHAOS_FAULTS"); v != "" {
		names = strings.Split(v, ",")
		for _, n := range names {
			if Faults[n] == nil {
				t.Fatalf("DURABLE_CHAOS_FAULTS: unknown fault %q", n)
			}
		}
	}
	t.Logf("chaos profile: %s of faults %v, seed %d (replay with DURABLE_CHAOS_SEED=%d)", d, names, seed, seed)
	return d, seed, names
}

// TestChaosProcesses runs the workload against real `durable agent`
// processes (two data centers, 3 + 2 nodes) on a 3-member etcd while faults
// are injected by signals, then checks the history.
func TestChaosProcesses(t *testing.T) {
	skipIfShort(t)
	duration, seed, names := profile(t, []string{"kill-node", "kill-leader", "pause-node", "kill-dc", "kill-etcd", "overload", "cpu-starve"})
	tm := Timing{LeaseTTL: 2 * time.Second, DCGrace: 3 * time.Second, Stabilise: 3 * time.Second}
	c := StartProcs(t, ProcOptions{
		Bin: BuildBinary(t, t.TempDir()), DCs: []string{"dc1", "dc2", "dc1", "dc2", "dc1"},
		LeaseTTL: tm.LeaseTTL, DCGrace: tm.DCGrace, Stabilise: tm.Stabilise, Partitions: 32,
	})
	rep := Run(t, c, c.Addrs(), c.SinkURL, RunOptions{Duration: duration, Seed: seed, Faults: names, Timing: tm})
	if dir := os.Getenv("DURABLE_CHAOS_LOGS"); dir != "" || !rep.OK() {
		if dir == "" {
			dir = os.TempDir()
		}
		c.KeepLogs(dir)
		t.Logf("node logs kept in %s", dir)
	}
}

// RunOptions configures Run.
type RunOptions struct {
	Duration time.Duration
	Seed     uint64
	Faults   []string
	Timing   Timing
	// SinkHTTP reads the sink (nil: http.DefaultClient); the compose
	// demo's serves HTTPS with a certificate of its own CA.
	SinkHTTP *http.Client
}

// Run drives the workload against target through the nodes at addrs while
// injecting faults for opts.Duration, waits for every alarm to come due and
// settle, checks the history and fails t on any violation. The report is
// logged, and written to $DURABLE_CHAOS_REPORT if set.
func Run(t *testing.T, target Target, addrs, sinkURL string, opts RunOptions) Report {
	t.Helper()
	cl, err := client.Dial(addrs, target.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	w := &Workload{Client: cl, Prefix: strings.TrimSuffix(embedetcd.UniquePrefix(t), "/"), Seed: opts.Seed}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	time.Sleep(2 * time.Second) // calm before the faults
	faults, err := Inject(target, opts.Faults, opts.Seed, opts.Timing, time.Now().Add(opts.Duration), time.Second, log)
	if err != nil {
		stop()
		<-done
		t.Fatalf("inject faults: %v", err)
	}
	time.Sleep(2 * time.Second) // calm after them
	stop()
	<-done
	w.FinalReads()

	// Every alarm set is due by LastDue; acknowledged ones must have run
	// by then plus the worst retry delay (the flaky ones retry after 2-2.5 s)
	// plus a failover.
	settle := 2*opts.Timing.LeaseTTL + opts.Timing.DCGrace + 5*time.Second
	time.Sleep(time.Until(w.LastDue().Add(settle)))
	rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	events, err := ReadEvents(rctx, opts.SinkHTTP, sinkURL)
	if err != nil {
		t.Fatal(err)
	}
	alarms, ops := w.Recorded()
	rep := Check(History{Alarms: alarms, Ops: ops, Events: events, Faults: faults}, settle)
	t.Logf("%d faults injected\n%s", len(faults), rep)
	if path := os.Getenv("DURABLE_CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(rep.String()), 0o644); err != nil {
			t.Errorf("write report: %v", err)
		}
	}
	if path := os.Getenv("DURABLE_CHAOS_HISTORY"); path != "" || !rep.OK() {
		var f *os.File
		var err error
		if path != "" {
			f, err = os.Create(path)
		} else {
			f, err = os.CreateTemp("", "durable-chaos-history-*.json")
		}
		if err == nil {
			_ = json.NewEncoder(f).Encode(History{Alarms: alarms, Ops: ops, Events: events, Faults: faults})
			f.Close()
			t.Logf("history written to %s", f.Name())
		}
	}
	if !rep.OK() {
		t.Errorf("chaos check failed (seed %d)", opts.Seed)
	}
	return rep
}
