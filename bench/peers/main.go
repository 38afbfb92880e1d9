// Command peers runs the scenario "N delayed jobs all due at one instant" on two
// job systems a user might pick instead of durable: asynq (Redis) and River
// (PostgreSQL).
//
// For each system it starts the workers in this process, enqueues N jobs that
// are all due at one instant T, and records, per job, when its handler started
// (lateness = start − T) and when its completion was observed (River: the
// JobCompleted event, sent after the completer committed; asynq: handler
// return, before asynq acknowledges to Redis). It reports enqueue rate,
// fires/s = N / (last completion − T), exact lateness percentiles, early,
// duplicate and missing jobs, as a human line and optionally as JSON.
//
// Both APIs take the due instant at enqueue time, so T is fixed before the
// enqueue starts: a warm-up batch measures the enqueue rate, and T is set to
// now + 1.5 × (estimated enqueue time) + lead. The actual gap between the end
// of the enqueue and T is reported as lead_ms; a run whose enqueue overran T
// is an error.
//
// Start the stores with run.sh, which also runs this program:
//
//	./run.sh -system all -n 10000 -json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"time"
)

// config holds the command-line settings shared by both systems.
type config struct {
	n           int
	lead        time.Duration
	concurrency int // 0: the system's default
	timeout     time.Duration
	grace       time.Duration
	warmup      int
	alignSecond bool

	redisAddr   string
	redisPool   int
	enqueuers   int
	asynqTick   time.Duration // DelayedTaskCheckInterval
	asynqPoll   time.Duration // TaskCheckInterval
	pgDSN       string
	pgConns     int
	batch       int
	riverPoll   time.Duration // FetchPollInterval
	riverCool   time.Duration // FetchCooldown
	riverInsert string        // "fast" (InsertManyFast, COPY) or "many" (InsertMany)
}

// Result is one system's outcome; it is printed as JSON with -json.
type Result struct {
	System           string            `json:"system"`
	Store            string            `json:"store"`
	N                int               `json:"n"`
	Concurrency      int               `json:"concurrency"`
	EnqueuePerS      float64           `json:"enqueue_per_s"`
	FiresPerS        float64           `json:"fires_per_s"`
	DrainPerS        float64           `json:"drain_per_s"`
	LatenessMS       Percentiles       `json:"lateness_ms"`
	Early            int               `json:"early"`
	Duplicates       int               `json:"duplicates"`
	Missing          int               `json:"missing"`
	NotCompleted     int               `json:"not_completed"`
	LeadMS           float64           `json:"lead_ms"`
	FirstFireMS      float64           `json:"first_fire_ms"`
	LastCompletionMS float64           `json:"last_completion_ms"`
	Settings         map[string]string `json:"settings"`
}

// system is one job system under test, connected and with its workers
// running. Handlers must call rec.fire first thing; completions are reported
// with rec.complete.
type system interface {
	// Store names the backing store and its version, e.g. "redis 7.0.15".
	Store() string
	// Concurrency is the number of jobs the workers may run at once.
	Concurrency() int
	// Settings lists every setting that matters for the measurement.
	Settings() map[string]string
	// Warmup enqueues n throwaway jobs that no worker will run, removes them,
	// and returns how long the enqueue took.
	Warmup(ctx context.Context, n int) (time.Duration, error)
	// Enqueue enqueues jobs 0..n-1, all due at due.
	Enqueue(ctx context.Context, n int, due time.Time) error
	// Close stops the workers and releases connections.
	Close(ctx context.Context) error
}

// opener connects to a system's store and starts its workers.
type opener func(ctx context.Context, cfg config, rec *recorder) (system, error)

var openers = map[string]opener{
	"asynq": openAsynq,
	"river": openRiver,
}

func main() {
	var cfg config
	sys := flag.String("system", "all", "system to run: asynq, river or all")
	asJSON := flag.Bool("json", false, "print results as a JSON array on stdout (human lines go to stderr)")
	flag.IntVar(&cfg.n, "n", 10_000, "number of jobs, all due at one instant")
	flag.DurationVar(&cfg.lead, "lead", 2*time.Second, "minimum gap between the end of the enqueue and the due instant")
	flag.IntVar(&cfg.concurrency, "concurrency", 0, "workers per system (0: asynq 100, River 500)")
	flag.DurationVar(&cfg.timeout, "timeout", 120*time.Second, "how long after the due instant to wait before counting jobs as missing")
	flag.DurationVar(&cfg.grace, "grace", time.Second, "how long to keep watching for duplicates after the last completion")
	flag.IntVar(&cfg.warmup, "warmup", 2000, "throwaway jobs enqueued first to estimate the enqueue rate")
	flag.BoolVar(&cfg.alignSecond, "align-second", false, "round the due instant up to a whole second (asynq stores due times in whole seconds)")

	flag.StringVar(&cfg.redisAddr, "redis", "127.0.0.1:16379", "Redis address (asynq)")
	flag.IntVar(&cfg.redisPool, "redis-pool", 128, "Redis connection pool size, shared by the asynq client and server")
	flag.IntVar(&cfg.enqueuers, "enqueuers", 64, "concurrent goroutines calling asynq Client.Enqueue")
	flag.DurationVar(&cfg.asynqTick, "asynq-delayed-check", 10*time.Millisecond, "asynq Config.DelayedTaskCheckInterval (default in asynq: 5s)")
	flag.DurationVar(&cfg.asynqPoll, "asynq-task-check", 10*time.Millisecond, "asynq Config.TaskCheckInterval (default in asynq: 1s)")

	flag.StringVar(&cfg.pgDSN, "pg", "postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable", "PostgreSQL DSN (River)")
	flag.IntVar(&cfg.pgConns, "pg-conns", 16, "pgx pool size for River")
	flag.IntVar(&cfg.batch, "batch", 1000, "jobs per River insert call")
	flag.DurationVar(&cfg.riverPoll, "river-fetch-poll", 10*time.Millisecond, "River Config.FetchPollInterval (default in River: 1s)")
	flag.DurationVar(&cfg.riverCool, "river-fetch-cooldown", time.Millisecond, "River Config.FetchCooldown (default in River: 100ms)")
	flag.StringVar(&cfg.riverInsert, "river-insert", "fast", "River insert API: fast (InsertManyFast, COPY FROM) or many (InsertMany)")
	flag.Parse()

	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(2)
	}
	var names []string
	switch *sys {
	case "all":
		names = []string{"asynq", "river"}
	case "asynq", "river":
		names = []string{*sys}
	default:
		fmt.Fprintf(os.Stderr, "peers: unknown -system %q (want asynq, river or all)\n", *sys)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	human := io.Writer(os.Stdout)
	if *asJSON {
		human = os.Stderr
	}
	results := []Result{}
	failed := false
	for _, name := range names {
		res, err := run(ctx, name, cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "peers: %s: %v\n", name, err)
			failed = true
			continue
		}
		fmt.Fprintln(human, res.line())
		results = append(results, res)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			fmt.Fprintln(os.Stderr, "peers:", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func (c config) validate() error {
	switch {
	case c.n < 1:
		return errors.New("-n must be at least 1")
	case c.lead <= 0:
		return errors.New("-lead must be positive")
	case c.concurrency < 0:
		return errors.New("-concurrency must not be negative")
	case c.timeout <= 0:
		return errors.New("-timeout must be positive")
	case c.warmup < 1 || c.warmup > 10_000:
		return errors.New("-warmup must be in [1, 10000]")
	case c.enqueuers < 1, c.redisPool < 1, c.pgConns < 2, c.batch < 1:
		return errors.New("-enqueuers, -redis-pool and -batch must be at least 1, -pg-conns at least 2")
	case c.riverInsert != "fast" && c.riverInsert != "many":
		return errors.New("-river-insert must be fast or many")
	}
	return nil
}

// run measures one system end to end.
func run(ctx context.Context, name string, cfg config) (Result, error) {
	rec := newRecorder(cfg.n)
	sys, err := openers[name](ctx, cfg, rec)
	if err != nil {
		return Result{}, err
	}
	closed := false
	defer func() {
		if !closed {
			_ = sys.Close(context.WithoutCancel(ctx))
		}
	}()

	// Estimate the enqueue time, then fix the due instant.
	warm := min(cfg.warmup, cfg.n)
	took, err := sys.Warmup(ctx, warm)
	if err != nil {
		return Result{}, fmt.Errorf("warm-up: %w", err)
	}
	estimate := time.Duration(1.5 * float64(took) * float64(cfg.n) / float64(warm))
	due := time.Now().Add(estimate + cfg.lead)
	if cfg.alignSecond {
		due = ceilSecond(due)
	}

	start := time.Now()
	if err := sys.Enqueue(ctx, cfg.n, due); err != nil {
		return Result{}, fmt.Errorf("enqueue: %w", err)
	}
	end := time.Now()
	lead := due.Sub(end)
	if lead < 0 {
		return Result{}, fmt.Errorf("enqueue finished %v after the due instant; raise -lead", -lead)
	}

	// Wait for every completion, the timeout, or an interrupt.
	deadline := time.NewTimer(time.Until(due) + cfg.timeout)
	defer deadline.Stop()
	select {
	case <-rec.allDone:
		// Keep the workers running a little to catch duplicate deliveries.
		select {
		case <-time.After(cfg.grace):
		case <-ctx.Done():
		}
	case <-deadline.C:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	s := rec.summarize(due)
	closed = true
	if err := sys.Close(context.WithoutCancel(ctx)); err != nil {
		return Result{}, fmt.Errorf("close: %w", err)
	}
	if s.Strays > 0 {
		return Result{}, fmt.Errorf("%d callbacks for unknown jobs (stale jobs in the store?)", s.Strays)
	}

	settings := sys.Settings()
	settings["due_estimate"] = fmt.Sprintf("T = now + 1.5 x enqueue time estimated from %d warm-up jobs (%v) + lead %v", warm, took.Round(time.Millisecond), cfg.lead)
	settings["align_second"] = strconv.FormatBool(cfg.alignSecond)
	settings["timeout"] = cfg.timeout.String()
	settings["grace"] = cfg.grace.String()
	return Result{
		System:           name,
		Store:            sys.Store(),
		N:                cfg.n,
		Concurrency:      sys.Concurrency(),
		EnqueuePerS:      throughput(cfg.n, end.Sub(start)),
		FiresPerS:        s.FiresPerSecond,
		DrainPerS:        s.DrainPerSecond,
		LatenessMS:       s.Lateness,
		Early:            s.Early,
		Duplicates:       s.Duplicates,
		Missing:          s.Missing,
		NotCompleted:     s.NotCompleted,
		LeadMS:           ms(lead),
		FirstFireMS:      ms(s.FirstFire),
		LastCompletionMS: ms(s.LastCompletion),
		Settings:         settings,
	}, nil
}

// line is the human-readable one-line form of r.
func (r Result) line() string {
	l := r.LatenessMS
	return fmt.Sprintf("%s (%s) n=%d conc=%d: enqueue %.0f/s, fires %.0f/s (drain %.0f/s), lateness ms p50 %.1f p90 %.1f p99 %.1f max %.1f, early %d, dup %d, missing %d, not completed %d; lead %.0f ms, first start T%+.0f ms, last completion T%+.0f ms",
		r.System, r.Store, r.N, r.Concurrency, r.EnqueuePerS, r.FiresPerS, r.DrainPerS,
		l.P50, l.P90, l.P99, l.Max, r.Early, r.Duplicates, r.Missing, r.NotCompleted,
		r.LeadMS, r.FirstFireMS, r.LastCompletionMS)
}

// ceilSecond rounds t up to a whole second of wall-clock time, keeping the
// monotonic reading consistent.
func ceilSecond(t time.Time) time.Time {
	frac := time.Duration(t.UnixNano() % int64(time.Second))
	if frac == 0 {
		return t
	}
	return t.Add(time.Second - frac)
}

// parseSeq parses a job sequence number from a payload; -1 if it is not one.
func parseSeq(b []byte) int {
	v, err := strconv.Atoi(string(b))
	if err != nil || v < 0 || v > math.MaxInt32 {
		return -1
	}
	return v
}

// moduleVersion is the version of module path linked into this binary.
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				return m.Version
			}
		}
	}
	return "(unknown version)"
}
