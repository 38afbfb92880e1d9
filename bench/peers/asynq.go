package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

const (
	asynqTaskType           = "bench:due"
	asynqDefaultConcurrency = 100
)

// asynqSystem runs an asynq server and client against one Redis.
type asynqSystem struct {
	cfg         config
	rdb         *redis.Client
	client      *asynq.Client
	inspector   *asynq.Inspector
	srv         *asynq.Server
	queue       string
	concurrency int
	version     string
	persistence map[string]string
}

func openAsynq(ctx context.Context, cfg config, rec *recorder) (system, error) {
	rdb := redis.NewClient(&redis.Options{Addr: cfg.redisAddr, PoolSize: cfg.redisPool})
	a := &asynqSystem{
		cfg: cfg,
		rdb: rdb,
		// A fresh queue per run, so that leftovers of an earlier run in the
		// same Redis are never served.
		queue:       fmt.Sprintf("bench-%d", time.Now().UnixNano()),
		concurrency: cmp.Or(cfg.concurrency, asynqDefaultConcurrency),
		persistence: map[string]string{},
	}
	if err := a.inspectRedis(ctx); err != nil {
		_ = rdb.Close()
		return nil, err
	}
	a.client = asynq.NewClientFromRedisClient(rdb)
	a.inspector = asynq.NewInspectorFromRedisClient(rdb)

	mux := asynq.NewServeMux()
	mux.HandleFunc(asynqTaskType, func(_ context.Context, t *asynq.Task) error {
		seq := parseSeq(t.Payload())
		rec.fire(seq)
		// Completion is taken at handler return: asynq marks the task done
		// in Redis only after the handler returned, and offers no hook after
		// that acknowledgement.
		rec.complete(seq)
		return nil
	})
	a.srv = asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              a.concurrency,
		Queues:                   map[string]int{a.queue: 1},
		DelayedTaskCheckInterval: cfg.asynqTick,
		TaskCheckInterval:        cfg.asynqPoll,
		LogLevel:                 asynq.WarnLevel,
	})
	if err := a.srv.Start(mux); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("start asynq server: %w", err)
	}
	return a, nil
}

// inspectRedis records the Redis version and persistence settings.
func (a *asynqSystem) inspectRedis(ctx context.Context) error {
	info, err := a.rdb.Info(ctx, "server").Result()
	if err != nil {
		return fmt.Errorf("redis at %s: %w", a.cfg.redisAddr, err)
	}
	a.version = "unknown"
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			a.version = v
		}
	}
	for _, key := range []string{"appendonly", "appendfsync", "save"} {
		vals, err := a.rdb.ConfigGet(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("redis CONFIG GET %s: %w", key, err)
		}
		v := vals[key]
		if v == "" {
			v = "(empty)"
		}
		a.persistence["redis_"+key] = v
	}
	return nil
}

func (a *asynqSystem) Store() string    { return "redis " + a.version }
func (a *asynqSystem) Concurrency() int { return a.concurrency }

func (a *asynqSystem) Settings() map[string]string {
	s := map[string]string{
		"library":                  "github.com/hibiken/asynq " + moduleVersion("github.com/hibiken/asynq"),
		"concurrency":              strconv.Itoa(a.concurrency) + " (Config.Concurrency)",
		"delayed_task_check":       a.cfg.asynqTick.String() + " (Config.DelayedTaskCheckInterval; asynq default 5s)",
		"task_check":               a.cfg.asynqPoll.String() + " (Config.TaskCheckInterval, idle dequeue poll; asynq default 1s)",
		"redis_pool":               strconv.Itoa(a.cfg.redisPool) + " connections shared by client and server",
		"enqueue":                  fmt.Sprintf("Client.EnqueueContext with ProcessAt(T) from %d goroutines (asynq has no batch enqueue)", a.cfg.enqueuers),
		"due_time_resolution":      "1s: asynq stores ProcessAt as a Unix-seconds score, so a task may start up to 1s before T unless -align-second",
		"completion":               "handler return; asynq acknowledges the task to Redis after that",
		"handler":                  "no-op",
		"retention_after_complete": "none (task deleted on completion)",
	}
	for k, v := range a.persistence {
		s[k] = v
	}
	return s
}

func (a *asynqSystem) Warmup(ctx context.Context, n int) (time.Duration, error) {
	// Nobody serves the warm-up queue; its tasks are deleted right after.
	queue := a.queue + "-warmup"
	start := time.Now()
	if err := a.enqueue(ctx, queue, n, start.Add(time.Hour)); err != nil {
		return 0, err
	}
	took := time.Since(start)
	if err := a.inspector.DeleteQueue(queue, true); err != nil {
		return 0, fmt.Errorf("delete warm-up queue: %w", err)
	}
	return took, nil
}

func (a *asynqSystem) Enqueue(ctx context.Context, n int, due time.Time) error {
	return a.enqueue(ctx, a.queue, n, due)
}

// enqueue schedules tasks 0..n-1 on queue at due from cfg.enqueuers
// goroutines, each task's payload being its sequence number.
func (a *asynqSystem) enqueue(ctx context.Context, queue string, n int, due time.Time) error {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(a.cfg.enqueuers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				task := asynq.NewTask(asynqTaskType, []byte(strconv.Itoa(i)))
				if _, err := a.client.EnqueueContext(ctx, task, asynq.Queue(queue), asynq.ProcessAt(due)); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("task %d: %w", i, err)
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

func (a *asynqSystem) Close(context.Context) error {
	a.srv.Shutdown()
	// Remove what is left of this run's queue (nothing, unless jobs went
	// missing) so that repeated runs against one Redis stay clean.
	err := a.inspector.DeleteQueue(a.queue, true)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		err = nil
	}
	return errors.Join(err, a.rdb.Close())
}
