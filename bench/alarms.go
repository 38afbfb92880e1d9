package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable/bench/benchclass"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/node"
)

// AlarmsScenario measures alarms fired and committed:
//
//   - same instant: N objects each arm an alarm for one instant T; the rate
//     is N over the time from T until the last alarm's completion (the
//     deletion of its record, in the object's commit) is durable;
//   - spread: alarms due at a steady rate (the target's 20,000/s) for a few
//     seconds; lateness at that load;
//   - memory (embedded cluster): the node heap per alarm held in the
//     look-ahead window, after a restart loaded them from etcd.
//
// Lateness is the handler's start minus the scheduled time. Completion is
// seen through an etcd watch of the alarms' index entries: their deletion
// is the commit of the alarm's success. Targets (DESIGN §7): ≥ 20,000
// alarms/s; lateness p50 ≤ 5 ms, p99 ≤ 50 ms at that load; ≤ 200 bytes of
// heap per alarm in the window.
//
// With CompareObservability, both rates are measured on three clusters
// (as InvokeScenario's): nodes without metrics updates or tracing, with
// metrics, with metrics and tracing, case by case, each row with its
// ratios to the off one (Result.VsOff). Memory is measured once, with
// metrics.
type AlarmsScenario struct {
	// CompareObservability also measures the rates on nodes with other
	// observability (an embedded cluster only).
	CompareObservability bool
	// Cases, when not empty, are the only cases run, of AlarmCases.
	Cases []string
}

// AlarmCases names the cases of the alarms scenario, in the order they run.
var AlarmCases = []string{"same-instant", "spread", "memory"}

// ValidateCases checks that every one of cases is one of AlarmCases.
func ValidateCases(cases []string) error {
	for _, c := range cases {
		if !slices.Contains(AlarmCases, c) {
			return fmt.Errorf("unknown case %q: want %s", c, strings.Join(AlarmCases, ", "))
		}
	}
	return nil
}

// runs reports whether the case named c is to run.
func (s AlarmsScenario) runs(c string) bool { return len(s.Cases) == 0 || slices.Contains(s.Cases, c) }

// Name implements Scenario.
func (AlarmsScenario) Name() string { return "alarms" }

// Description implements Describer.
func (AlarmsScenario) Description() string {
	return "alarms due at one instant and at a steady rate: fires/s committed, lateness, heap per pending alarm"
}

// Prepare implements Preparer: the nodes run BenchAlarm, reporting to this
// process.
func (AlarmsScenario) Prepare(reg *node.Registry, _ *node.Config) error {
	return prepareAlarmClass(reg)
}

func prepareAlarmClass(reg *node.Registry) error {
	if _, err := reg.Lookup(benchclass.AlarmClass); err == nil {
		return nil // another scenario registered it
	}
	return benchclass.Register(reg, benchclass.Process)
}

// The DESIGN §7 alarm targets.
const (
	targetAlarmsPerSec  = 20000
	targetLatenessP50   = 5  // ms
	targetLatenessP99   = 50 // ms
	targetBytesPerAlarm = 200
)

// Run implements Scenario.
func (s AlarmsScenario) Run(ctx context.Context, env *Env) (_ []Result, err error) {
	if env.Etcd == nil {
		return nil, fmt.Errorf("the alarms scenario watches etcd for the alarms' commits: %w", ErrNoEtcd)
	}
	burst := burstSize(env.Profile)
	rate, pending := float64(targetAlarmsPerSec), burst
	spread := 5 * time.Second
	switch {
	case env.Profile.Alarms > 0:
		spread = time.Duration(float64(time.Second) * float64(burst) / rate)
	case env.Profile.Short:
		spread, pending = time.Second, burst/2
	}
	ceil, err := env.BestBatchedPut(ctx)
	if err != nil && !errors.Is(err, ErrNoEtcd) {
		return nil, err
	}
	var rows []Result
	add := func(r Result) {
		if ceil.Rate > 0 {
			// A completion deletes the record and its index entry.
			r.Ceiling(ceil.Spec.String()+" / 2 keys per alarm", ceil.Rate/2)
		}
		rows = append(rows, r)
	}

	envs, obs, closeObs, err := env.observabilities(ctx, s.CompareObservability, "alarms")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, closeObs()) }()

	// Case by case, the observabilities taking turns.
	for i, e := range envs {
		if !s.runs("same-instant") {
			break
		}
		r, err := alarmRun(ctx, e, obs[i], "same instant", burst, 0)
		if err != nil {
			return rows, err
		}
		r.Target = AtLeast(targetAlarmsPerSec, r.Rate)
		add(r)
	}
	n := int(rate * spread.Seconds())
	for i, e := range envs {
		if !s.runs("spread") {
			break
		}
		r, err := alarmRun(ctx, e, obs[i], fmt.Sprintf("spread, %.0f/s for %s", rate, spread), n, spread)
		if err != nil {
			return rows, err
		}
		r.Target = P99AtMost(targetLatenessP99, r.Latency)
		if r.Latency != nil {
			r.Note = fmt.Sprintf("p50 target %d ms: %s", targetLatenessP50, metOrMissed(r.Latency.P50 <= targetLatenessP50))
		}
		add(r)
	}
	compareObservability(rows)

	if !s.runs("memory") {
		return rows, nil
	}
	if env.Cluster == nil {
		env.Progress.Linef("%-36s skipped: needs the embedded cluster", "alarms memory")
		return rows, nil
	}
	m, err := alarmMemory(ctx, env, pending)
	if err != nil {
		return rows, err
	}
	return append(rows, m), nil
}

// burstSize is the number of alarms of the "same instant" case (and of the
// peers' runs).
func burstSize(p Profile) int {
	switch {
	case p.Alarms > 0:
		return p.Alarms
	case p.Short:
		return 20000
	}
	return 100000
}

func metOrMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// alarmRun arms n objects with alarms due from an instant T on, spread
// evenly over spread (0: all at T), waits until every alarm's completion is
// committed, and returns the row, its Observability obs (which also keeps
// the objects' names apart from other observabilities' in this process's
// log of runs).
func alarmRun(ctx context.Context, env *Env, obs, label string, n int, spread time.Duration) (Result, error) {
	row := Result{Scenario: "alarms", Case: label, Unit: "alarms/s", Observability: obs}
	tag := strings.Fields(label)[0]
	if obs != "" {
		tag += "-" + strings.ReplaceAll(obs, "+", "-")
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%s-%s-%d", env.RunID, tag, i)
	}
	due := func(t time.Time, i int) time.Time {
		if spread <= 0 {
			return t
		}
		return t.Add(time.Duration(int64(spread) * int64(i) / int64(n)))
	}
	T, armRate, err := armAlarms(ctx, env, label, n, func(ctx context.Context, i int, T time.Time) error {
		return arm(ctx, env, names[i], due(T, i))
	})
	if err != nil {
		return row, err
	}
	benchclass.Process.Expect(names)
	w := watchCommits(ctx, env, benchclass.AlarmClass, nil)
	defer w.stop()
	// A minute past the last due time, or as long as n alarms take at
	// 5,000/s if that is longer: 1,000,000 due at one instant need more
	// than a minute here, and a slow drain is a result, not a failure.
	grace := max(time.Minute, time.Duration(n/5000)*time.Second)
	last, err := w.wait(ctx, env, label, n, due(T, n-1).Add(grace))
	if err != nil {
		return row, err
	}
	fires, dups, err := collectFires(ctx, env, names)
	if err != nil {
		return row, err
	}
	var lateness Samples
	early := 0
	for _, f := range fires {
		d := f.Start.Sub(f.Scheduled)
		if d < 0 {
			early++
		}
		lateness.Add(d)
	}
	if early > 0 {
		return row, fmt.Errorf("%s: %d alarms started before their time", label, early)
	}
	elapsed := last.Sub(T)
	row.Count, row.Seconds = int64(n), elapsed.Seconds()
	row.Rate = Rate(int64(n), elapsed)
	row.Latency = lateness.Summary()
	row.Extra = map[string]float64{"arm_invocations/s": armRate, "duplicate_runs": float64(dups)}
	if spread > 0 {
		row.Extra["offered_alarms/s"] = float64(n) / spread.Seconds()
	}
	what := "alarms " + label
	if obs != "" {
		what += " (" + obs + ")"
	}
	env.Progress.Linef("%-36s %s alarms/s committed, lateness p50 %.1f ms p99 %.1f ms max %.1f ms",
		what, thousands(row.Rate), row.Latency.P50, row.Latency.P99, row.Latency.Max)
	return row, nil
}

// armAlarms arms n objects with armOne, which arms object i for alarms
// from an instant T on (and is safe to repeat), and returns T and the rate
// of the arming invocations. T is chosen so that arming ends before it: the
// first few thousand objects are armed for a T far ahead to time the
// arming, then everything is armed for T.
func armAlarms(ctx context.Context, env *Env, label string, n int, armOne func(ctx context.Context, i int, T time.Time) error) (time.Time, float64, error) {
	const lead = 2 * time.Second
	probe := min(n, 2000)
	far := time.Now().Add(time.Hour)
	start := time.Now()
	if err := each(ctx, env, "alarms "+label+": time arming", probe, 256, func(ctx context.Context, i int) error {
		return armOne(ctx, i, far)
	}); err != nil {
		return time.Time{}, 0, err
	}
	perArm := time.Since(start) / time.Duration(probe)
	// Arming slows down as objects pile up in memory: leave it room, the
	// more so the more there are.
	margin := time.Duration(3)
	if n > 50000 {
		margin = 5
	}
	T := time.Now().Add(perArm*time.Duration(n)*margin/2 + lead).Truncate(time.Millisecond)
	start = time.Now()
	if err := each(ctx, env, "alarms "+label+": arm", n, 256, func(ctx context.Context, i int) error {
		return armOne(ctx, i, T)
	}); err != nil {
		return time.Time{}, 0, err
	}
	rate := Rate(int64(n), time.Since(start))
	if late := time.Since(T); late > 0 {
		return time.Time{}, 0, fmt.Errorf("%s: arming ended %s after the alarms' time; the numbers would mean nothing", label, late)
	}
	return T, rate, nil
}

func arm(ctx context.Context, env *Env, name string, t time.Time) error {
	_, err := env.Client.Invoke(ctx, benchclass.AlarmClass, client.ByName(name), "arm", []byte(strconv.FormatInt(t.UnixMilli(), 10)))
	if err != nil {
		return fmt.Errorf("arm %s: %w", name, err)
	}
	return nil
}

// each runs fn for 0 ≤ i < n with conc callers, showing progress; it stops
// at the first error. A call a node refused as overloaded is tried again
// after the retry-after it gave, and one that ran past opTimeout is sent
// again (up to setupAttempts times): a bench's setup must not give up on a
// node shedding load or a machine stalling for a moment (nor count it as
// the scenario's failure). Every fn is safe to repeat: arming or disarming
// an alarm, reading, warming an object up.
func each(ctx context.Context, env *Env, label string, n, conc int, fn func(ctx context.Context, i int) error) error {
	bar := env.Progress.Counted(label, int64(n))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				err := untilAdmitted(ctx, func(ctx context.Context) error {
					var err error
					for range setupAttempts {
						octx, ocancel := context.WithTimeout(ctx, opTimeout)
						err = fn(octx, int(i))
						timedOut := errors.Is(octx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
						ocancel()
						if !timedOut {
							break
						}
					}
					return err
				})
				if err != nil {
					cancel(err)
					return
				}
				bar.Set(done.Add(1))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		bar.Done("failed")
		return err
	}
	bar.Done(fmt.Sprintf("%d done", n))
	return nil
}

// setupAttempts bounds how often each sends one setup call that ran past
// its opTimeout.
const setupAttempts = 3

// untilAdmitted runs call until it is not refused as overloaded (or
// busy), waiting the retry-after of each refusal.
func untilAdmitted(ctx context.Context, call func(ctx context.Context) error) error {
	for {
		err := call(ctx)
		after, refused := client.RetryAfter(err)
		if err == nil || !refused || after <= 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(after):
		}
	}
}

// commitWatch follows the commits of a bench class's alarm completions:
// each deletes the alarm's index entry (due/<p>/<ms>/<class>/<id>), which
// an etcd watch reports a moment after the Txn applied. (A completion that
// sets the next alarm, as BenchSoak's do, deletes it too: the next one has
// another due time, hence another key.)
type commitWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	// each, if not nil, is told of every response's commits as they come,
	// from the watch's goroutine.
	each func(at time.Time, n int)
	// fired counts the runs seen, for the message of a timeout.
	fired func() int

	mu    sync.Mutex
	count int
	last  time.Time
	err   error
}

// watchCommits starts following the alarm completions of class; each, if
// not nil, is told of them as they come (see commitWatch.each).
func watchCommits(ctx context.Context, env *Env, class string, each func(at time.Time, n int)) *commitWatch {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	w := &commitWatch{cancel: cancel, done: make(chan struct{}), each: each, fired: benchclass.Process.Count}
	marker := "/" + class + "/"
	ch := env.Etcd.Watch(wctx, env.keys().DuesPrefix(), clientv3.WithPrefix(), clientv3.WithFilterPut())
	go func() {
		defer close(w.done)
		for wr := range ch {
			now := time.Now()
			n := 0
			for _, ev := range wr.Events {
				if strings.Contains(string(ev.Kv.Key), marker) {
					n++
				}
			}
			if n > 0 && w.each != nil {
				w.each(now, n)
			}
			w.mu.Lock()
			if err := wr.Err(); err != nil && w.err == nil {
				w.err = err
			}
			if n > 0 {
				w.count += n
				w.last = now
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *commitWatch) stop() {
	w.cancel()
	<-w.done
}

// wait returns the time of the n-th commit, showing progress; it gives up
// at deadline.
func (w *commitWatch) wait(ctx context.Context, env *Env, label string, n int, deadline time.Time) (time.Time, error) {
	count, last, err := w.waitUpTo(ctx, env, label, n, deadline)
	if err == nil && count < n {
		err = fmt.Errorf("%s: only %d of %d alarms committed by %s (fired: %d)",
			label, count, n, deadline.Format(time.TimeOnly), w.fired())
	}
	return last, err
}

// waitUpTo waits, showing progress, until n commits or deadline, whichever
// comes first, and returns the commits counted and the time of the last.
// Reaching deadline is no error.
func (w *commitWatch) waitUpTo(ctx context.Context, env *Env, label string, n int, deadline time.Time) (int, time.Time, error) {
	bar := env.Progress.Counted("alarms "+label+": fired and committed", int64(n))
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		w.mu.Lock()
		count, last, err := w.count, w.last, w.err
		w.mu.Unlock()
		bar.Set(int64(count))
		switch {
		case err != nil:
			bar.Done("failed")
			return count, last, fmt.Errorf("watch the alarms' commits: %w", err)
		case count >= n:
			bar.Done(fmt.Sprintf("%d committed", count))
			return count, last, nil
		case time.Now().After(deadline):
			bar.Done(fmt.Sprintf("timed out: %d of %d committed", count, n))
			return count, last, nil
		}
		select {
		case <-ctx.Done():
			bar.Done("stopped")
			return count, last, context.Cause(ctx)
		case <-tick.C:
		}
	}
}

// collectFires returns the first run of each object and the number of
// further runs: from this process's log on an embedded cluster, otherwise
// read back from the objects.
func collectFires(ctx context.Context, env *Env, names []string) ([]benchclass.Fire, int, error) {
	if env.Cluster != nil {
		fires, dups := benchclass.Process.Snapshot()
		for i, f := range fires {
			if f.Start.IsZero() {
				return nil, 0, fmt.Errorf("the alarm of %s committed but its run was not seen", names[i])
			}
		}
		return fires, dups, nil
	}
	fires := make([]benchclass.Fire, len(names))
	err := each(ctx, env, "alarms: read the runs back", len(names), 64, func(ctx context.Context, i int) error {
		out, err := env.Client.Invoke(ctx, benchclass.AlarmClass, client.ByName(names[i]), "result", nil)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(out.GetPayload(), &fires[i]); err != nil {
			return fmt.Errorf("result of %s: %q: %w", names[i], out.GetPayload(), err)
		}
		return nil
	})
	return fires, 0, err
}

// alarmMemory measures the node heap per alarm in the look-ahead window:
// pending alarms are armed for an hour ahead, every node is restarted with
// a look-ahead window of two hours (so no object is in memory and the
// windows, loaded from etcd, hold every alarm), and the live heap
// allocated by the nodes' schedulers is read from the allocation profile,
// recording every allocation while the windows load. (The process's whole
// heap is no measure: the in-process etcd's raft log and caches change by
// more than that as the nodes restart.) The alarms are then disarmed and
// the nodes restarted with their own window. Due an hour ahead, none fires
// however long arming a million takes (an alarm due 45 s after the
// arming started fired before a million were armed, and the windows never
// held them all).
func alarmMemory(ctx context.Context, env *Env, pending int) (Result, error) {
	row := Result{Scenario: "alarms", Case: "memory per pending alarm", Unit: "bytes/alarm"}
	c := env.Cluster
	names := make([]string, pending)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%s-pending-%d", env.RunID, i)
	}
	at := time.Now().Add(time.Hour)
	if err := each(ctx, env, "alarms memory: arm", pending, 256, func(ctx context.Context, i int) error {
		return arm(ctx, env, names[i], at)
	}); err != nil {
		return row, err
	}
	windows := make([]time.Duration, c.Size())
	rate := runtime.MemProfileRate
	runtime.MemProfileRate = 1 // record every allocation from here on
	defer func() { runtime.MemProfileRate = rate }()
	if err := restartAll(ctx, c, func(i int, cfg *node.Config) {
		windows[i], cfg.AlarmWindow = cfg.AlarmWindow, 2*time.Hour
	}); err != nil {
		return row, err
	}
	bar := env.Progress.Counted("alarms memory: reload the windows", int64(pending))
	for {
		held := 0
		for i := range c.Size() {
			if a := c.Agent(i); a != nil {
				held += a.Node.ScheduledAlarms()
			}
		}
		bar.Set(int64(held))
		if held >= pending {
			break
		}
		select {
		case <-ctx.Done():
			bar.Done("stopped")
			return row, context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
	sched := liveHeapOf("durable/alarmstore.(*Schedule)")
	runtime.MemProfileRate = rate
	bar.Done("loaded")
	perAlarm := float64(sched) / float64(pending)
	row.Count, row.Rate = int64(pending), perAlarm
	row.Target = &Target{Metric: "rate", Op: "<=", Value: targetBytesPerAlarm, Met: perAlarm <= targetBytesPerAlarm}
	row.Note = "live heap allocated by the nodes' alarm schedules after a restart loaded the windows, per alarm"
	row.Extra = map[string]float64{"schedule_heap_MB": float64(sched) / (1 << 20)}
	env.Progress.Linef("%-36s %.0f bytes per alarm in the window", "alarms memory", perAlarm)
	// Later scenarios run on the nodes as configured, without these alarms.
	if err := each(ctx, env, "alarms memory: disarm", pending, 256, func(ctx context.Context, i int) error {
		_, err := env.Client.Invoke(ctx, benchclass.AlarmClass, client.ByName(names[i]), "disarm", nil)
		return err
	}); err != nil {
		return row, err
	}
	return row, restartAll(ctx, c, func(i int, cfg *node.Config) { cfg.AlarmWindow = windows[i] })
}

// restartAll stops every node of c, applies edit to each one's
// configuration, starts them again all at once, as a cluster's nodes
// restart together, and waits until placement settles. (Started one by
// one, the first claimed every partition's window and handed two thirds
// on: the memory row then measured that node's peak, 223 B per alarm at a
// million.)
func restartAll(ctx context.Context, c *Cluster, edit func(i int, cfg *node.Config)) error {
	for i := range c.Size() {
		if err := c.Stop(i); err != nil {
			return err
		}
		c.Edit(i, func(cfg *node.Config) { edit(i, cfg) })
	}
	errs := make([]error, c.Size())
	var wg sync.WaitGroup
	for i := range c.Size() {
		wg.Go(func() { errs[i] = c.Restart(ctx, i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.WaitSettled(ctx, nil)
}

// liveHeapOf returns the live bytes, as of a full collection, allocated by
// calls through a function whose name contains fn. It is exact for what was
// allocated while runtime.MemProfileRate was 1.
func liveHeapOf(fn string) int64 {
	runtime.GC()
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:n]
			break
		}
	}
	var total int64
	for _, r := range recs {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if strings.Contains(f.Function, fn) {
				total += r.InUseBytes()
				break
			}
			if !more {
				break
			}
		}
	}
	return total
}

// keys is the nodes' key space: the embedded cluster's, or the default
// prefix of a given one.
func (e *Env) keys() keyspace.Space {
	if e.Cluster != nil {
		return e.Cluster.Keys()
	}
	return keyspace.New(node.DefaultConfig().Prefix)
}
