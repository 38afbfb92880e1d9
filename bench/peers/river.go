package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

const (
	riverDefaultConcurrency = 500
	riverInserters          = 2 // concurrent insert calls of -batch jobs each
)

// dueArgs is the job: it carries its sequence number and does nothing.
type dueArgs struct {
	Seq int `json:"seq"`
}

func (dueArgs) Kind() string { return "bench_due" }

type dueWorker struct {
	river.WorkerDefaults[dueArgs]
	rec *recorder
}

func (w *dueWorker) Work(_ context.Context, job *river.Job[dueArgs]) error {
	w.rec.fire(job.Args.Seq)
	return nil
}

// riverSystem runs a River client (workers included) against one PostgreSQL.
type riverSystem struct {
	cfg         config
	pool        *pgxpool.Pool
	client      *river.Client[pgx.Tx]
	unsubscribe func()
	consumed    chan struct{} // closed when the completion consumer returned
	queue       string
	concurrency int
	version     string
	durability  map[string]string
}

func openRiver(ctx context.Context, cfg config, rec *recorder) (system, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.pgDSN)
	if err != nil {
		return nil, fmt.Errorf("parse -pg: %w", err)
	}
	pcfg.MaxConns = int32(cfg.pgConns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	r := &riverSystem{
		cfg:  cfg,
		pool: pool,
		// A fresh queue per run, so that leftovers of an earlier run in the
		// same database are never worked.
		queue:       fmt.Sprintf("bench_%d", time.Now().UnixNano()),
		concurrency: cmp.Or(cfg.concurrency, riverDefaultConcurrency),
		durability:  map[string]string{},
		consumed:    make(chan struct{}),
	}
	if err := r.setUp(ctx, rec); err != nil {
		pool.Close()
		return nil, err
	}
	return r, nil
}

func (r *riverSystem) setUp(ctx context.Context, rec *recorder) error {
	if err := r.pool.QueryRow(ctx, "SHOW server_version").Scan(&r.version); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	r.durability["pg_server_version"] = r.version
	for _, key := range []string{"fsync", "synchronous_commit", "full_page_writes", "wal_level"} {
		var v string
		if err := r.pool.QueryRow(ctx, "SHOW "+key).Scan(&v); err != nil {
			return fmt.Errorf("postgres SHOW %s: %w", key, err)
		}
		r.durability["pg_"+key] = v
	}

	driver := riverpgxv5.New(r.pool)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}

	workers := river.NewWorkers()
	river.AddWorker(workers, &dueWorker{rec: rec})
	r.client, err = river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{r.queue: {MaxWorkers: r.concurrency}},
		Workers:           workers,
		FetchCooldown:     r.cfg.riverCool,
		FetchPollInterval: r.cfg.riverPoll,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return fmt.Errorf("river client: %w", err)
	}

	// The completer sends JobCompleted after committing a batch of
	// completions; events that do not fit the channel are dropped, so make
	// room for all of them.
	events, unsubscribe := r.client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: r.cfg.n + 1000,
		Kinds:    []river.EventKind{river.EventKindJobCompleted},
	})
	r.unsubscribe = unsubscribe
	go func() {
		defer close(r.consumed)
		for ev := range events {
			now := rec.now()
			if ev.Job.Queue != r.queue {
				continue
			}
			var args dueArgs
			if err := json.Unmarshal(ev.Job.EncodedArgs, &args); err != nil {
				args.Seq = -1
			}
			rec.completeAt(args.Seq, now)
		}
	}()

	if err := r.client.Start(ctx); err != nil {
		unsubscribe()
		return fmt.Errorf("start river client: %w", err)
	}
	return nil
}

func (r *riverSystem) Store() string {
	// server_version reads like "15.18 (Debian 15.18-0+deb12u1)".
	v, _, _ := strings.Cut(r.version, " ")
	return "postgresql " + v
}
func (r *riverSystem) Concurrency() int { return r.concurrency }

func (r *riverSystem) Settings() map[string]string {
	insert := "InsertManyFast (COPY FROM)"
	if r.cfg.riverInsert == "many" {
		insert = "InsertMany"
	}
	s := map[string]string{
		"library":        "github.com/riverqueue/river " + moduleVersion("github.com/riverqueue/river"),
		"max_workers":    strconv.Itoa(r.concurrency) + " (QueueConfig.MaxWorkers)",
		"fetch_poll":     r.cfg.riverPoll.String() + " (Config.FetchPollInterval; River default 1s)",
		"fetch_cooldown": r.cfg.riverCool.String() + " (Config.FetchCooldown; River default 100ms)",
		"scheduler":      "5s interval with 5s look-ahead (JobSchedulerIntervalDefault; not configurable through River's public API)",
		"completer":      "River's default batch completer (50ms tick, not configurable)",
		"pgx_pool":       strconv.Itoa(r.cfg.pgConns) + " connections (pgxpool MaxConns)",
		"enqueue":        fmt.Sprintf("%s, %d jobs per call, %d calls in parallel, ScheduledAt: T", insert, r.cfg.batch, riverInserters),
		"completion":     "JobCompleted event from Client.Subscribe (sent after the completer committed)",
		"handler":        "no-op",
		"migrations":     "rivermigrate up at start",
	}
	for k, v := range r.durability {
		s[k] = v
	}
	return s
}

func (r *riverSystem) Warmup(ctx context.Context, n int) (time.Duration, error) {
	// Nobody works the warm-up queue; its jobs are deleted right after.
	queue := r.queue + "_warmup"
	start := time.Now()
	if err := r.insert(ctx, queue, n, start.Add(time.Hour)); err != nil {
		return 0, err
	}
	took := time.Since(start)
	if _, err := r.client.JobDeleteMany(ctx, river.NewJobDeleteManyParams().Queues(queue).First(n)); err != nil {
		return 0, fmt.Errorf("delete warm-up jobs: %w", err)
	}
	return took, nil
}

func (r *riverSystem) Enqueue(ctx context.Context, n int, due time.Time) error {
	return r.insert(ctx, r.queue, n, due)
}

// insert inserts jobs 0..n-1 into queue, scheduled at due, in batches of
// cfg.batch from riverInserters goroutines.
func (r *riverSystem) insert(ctx context.Context, queue string, n int, due time.Time) error {
	batches := (n + r.cfg.batch - 1) / r.cfg.batch
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := &river.InsertOpts{Queue: queue, ScheduledAt: due}
	for range min(riverInserters, batches) {
		wg.Go(func() {
			params := make([]river.InsertManyParams, 0, r.cfg.batch)
			for {
				b := int(next.Add(1) - 1)
				if b >= batches || ctx.Err() != nil {
					return
				}
				params = params[:0]
				for i := b * r.cfg.batch; i < min(n, (b+1)*r.cfg.batch); i++ {
					params = append(params, river.InsertManyParams{Args: dueArgs{Seq: i}, InsertOpts: opts})
				}
				var err error
				if r.cfg.riverInsert == "many" {
					_, err = r.client.InsertMany(ctx, params)
				} else {
					_, err = r.client.InsertManyFast(ctx, params)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("batch %d: %w", b, err)
					}
					mu.Unlock()
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

func (r *riverSystem) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := r.client.Stop(ctx)
	r.unsubscribe()
	<-r.consumed
	r.pool.Close()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("river client did not stop within 30s: %w", err)
	}
	return err
}
