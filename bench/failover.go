package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
	"github.com/durable-run/durable/bench/benchclass"
	"github.com/durable-run/durable/node"
)

// FailoverScenario crashes a node of the embedded cluster — abruptly, as
// SIGKILL would: no drain, no release, its lease left to expire — while its
// partitions hold overdue alarms, and measures the time from the crash to
// the first and to the last of them firing on the other nodes:
//
//   - overdue: X alarms overdue at the crash;
//   - stored: the same, with a million more alarms stored in the crashed
//     node's partitions, due in an hour (outside the look-ahead window: the
//     new owners must not pay for them);
//   - a million overdue (full profile): the new owners work through all of
//     them, which measures their firing rate from cold (no object in
//     memory, every record read from etcd).
//
// The alarms are written straight into etcd (records and index entries, as
// a commit would write them) under the partitions of the victim, which is
// not the data center's leader: the victim does not schedule alarms written
// behind its back, so they wait for the next owner. Target (DESIGN §7):
// the first fires ≤ lease TTL + 1 s after the crash, ≤ TTL + 2 s with a
// million alarms stored.
type FailoverScenario struct{}

// Name implements Scenario.
func (FailoverScenario) Name() string { return "failover" }

// Description implements Describer.
func (FailoverScenario) Description() string {
	return "crash a node holding overdue alarms: time to the first and the last of them firing elsewhere"
}

// Prepare implements Preparer.
func (FailoverScenario) Prepare(reg *node.Registry, _ *node.Config) error {
	return prepareAlarmClass(reg)
}

type failoverCase struct {
	label            string
	overdue, stored  int
	firstWithinOfTTL time.Duration // target: first fire ≤ TTL + this
}

// Run implements Scenario.
func (FailoverScenario) Run(ctx context.Context, env *Env) ([]Result, error) {
	c := env.Cluster
	if c == nil || c.Size() < 2 {
		env.Progress.Linef("%-36s skipped: needs an embedded cluster of two nodes or more", "failover")
		return nil, nil
	}
	cases := []failoverCase{
		{"10,000 overdue", 10000, 0, time.Second},
		{"10,000 overdue, 1,000,000 stored", 10000, 1000000, 2 * time.Second},
		{"1,000,000 overdue", 1000000, 0, 2 * time.Second},
	}
	switch {
	case env.Profile.Alarms > 0:
		n := env.Profile.Alarms
		cases = []failoverCase{{fmt.Sprintf("%d overdue, %d stored", n, 2*n), n, 2 * n, 2 * time.Second}}
	case env.Profile.Short:
		cases = []failoverCase{
			{"2,000 overdue", 2000, 0, time.Second},
			{"2,000 overdue, 50,000 stored", 2000, 50000, 2 * time.Second},
		}
	}
	var rows []Result
	for _, fc := range cases {
		r, err := failover(ctx, env, fc)
		if err != nil {
			return rows, fmt.Errorf("failover %s: %w", fc.label, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// failover runs one case: write the alarms, crash the victim, wait for the
// alarms to fire elsewhere, restart the victim.
func failover(ctx context.Context, env *Env, fc failoverCase) (Result, error) {
	row := Result{Scenario: "failover", Case: fc.label, Unit: "alarms/s"}
	c := env.Cluster
	victim, parts, err := pickVictim(ctx, c)
	if err != nil {
		return row, err
	}
	victimID := c.Agent(victim).Node.Config().ID
	tag := fmt.Sprintf("bench-%s-fo%d", env.RunID, fc.overdue+fc.stored)
	count := c.cfg.Partitions
	if fc.stored > 0 {
		names := namesIn(tag+"-stored", fc.stored, parts, count)
		if err := storeAlarms(ctx, env, "failover: store alarms due in an hour", names, time.Now().Add(time.Hour), count); err != nil {
			return row, err
		}
	}
	names := namesIn(tag+"-overdue", fc.overdue, parts, count)
	if err := storeAlarms(ctx, env, "failover: store overdue alarms", names, time.Now(), count); err != nil {
		return row, err
	}

	benchclass.Process.Expect(names)
	crashed := time.Now()
	if err := c.Kill(victim); err != nil {
		return row, err
	}
	ttl := c.cfg.LeaseTTL
	deadline := crashed.Add(ttl + 2*time.Minute + time.Duration(fc.overdue)*time.Millisecond)
	bar := env.Progress.Counted(fmt.Sprintf("failover: %s, fired elsewhere", fc.label), int64(fc.overdue))
	for n := benchclass.Process.Count(); n < fc.overdue; n = benchclass.Process.Count() {
		bar.Set(int64(n))
		if time.Now().After(deadline) {
			bar.Done("timed out")
			return row, fmt.Errorf("only %d of %d overdue alarms fired by %s", n, fc.overdue, deadline.Format(time.TimeOnly))
		}
		select {
		case <-ctx.Done():
			bar.Done("stopped")
			return row, context.Cause(ctx)
		case <-time.After(5 * time.Millisecond):
		}
	}
	bar.Done(fmt.Sprintf("%d fired", fc.overdue))

	fires, dups := benchclass.Process.Snapshot()
	var since Samples
	first, last := time.Duration(1<<62), time.Duration(0)
	for i, f := range fires {
		if f.Node == victimID {
			return row, fmt.Errorf("the alarm of %s fired on the crashed node", names[i])
		}
		d := f.Start.Sub(crashed)
		since.Add(d)
		first, last = min(first, d), max(last, d)
	}
	row.Count, row.Seconds = int64(fc.overdue), (last - first).Seconds()
	row.Rate = Rate(int64(fc.overdue), last-first)
	row.Latency = since.Summary()
	row.Note = fmt.Sprintf("crash of %s (not the leader); latency columns: time from the crash to each alarm's start", victimID)
	row.Extra = map[string]float64{
		"first_s": first.Seconds(), "last_s": last.Seconds(), "lease_ttl_s": ttl.Seconds(),
		"stored_not_due": float64(fc.stored), "duplicate_runs": float64(dups),
	}
	limit := ttl + fc.firstWithinOfTTL
	row.Target = &Target{Metric: "first_ms", Op: "<=", Value: ms(limit), Met: first <= limit}
	env.Progress.Linef("%-36s first %.2fs, last %.2fs after the crash (lease TTL %s)", "failover "+fc.label, first.Seconds(), last.Seconds(), ttl)

	if err := c.Restart(ctx, victim); err != nil {
		return row, err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return row, c.WaitSettled(sctx, nil)
}

// pickVictim returns a running node that does not lead its data center, and
// the partitions it owns.
func pickVictim(ctx context.Context, c *Cluster) (int, map[int]bool, error) {
	for i := range c.Size() {
		a := c.Agent(i)
		if a == nil || a.Leader.Term() != 0 {
			continue
		}
		parts := map[int]bool{}
		for _, p := range a.Member.Owned() {
			parts[p] = true
		}
		if len(parts) > 0 {
			return i, parts, nil
		}
	}
	return 0, nil, errors.New("no running node besides the leader owns partitions")
}

// namesIn returns n object names of the form tag-<k> whose BenchAlarm
// objects fall into parts, of a cluster of count partitions.
func namesIn(tag string, n int, parts map[int]bool, count int) []string {
	names := make([]string, 0, n)
	for k := 0; len(names) < n; k++ {
		name := fmt.Sprintf("%s-%d", tag, k)
		if parts[durable.IDFromName(benchclass.AlarmClass, name).Partition(count)] {
			names = append(names, name)
		}
	}
	return names
}

// storeAlarms writes an alarm due at due for every name, as the object's
// commit would (record and index entry), in Txns of 512 operations, 16 at a
// time.
func storeAlarms(ctx context.Context, env *Env, label string, names []string, due time.Time, partitions int) error {
	store := alarmstore.New(env.Etcd, env.keys())
	due = due.Truncate(time.Millisecond)
	const perTxn = 256 // alarms: 512 operations
	bar := env.Progress.Counted(label, int64(len(names)))
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for {
				lo := int(next.Add(perTxn)) - perTxn
				if lo >= len(names) || ctx.Err() != nil {
					return
				}
				var ops []clientv3.Op
				for _, name := range names[lo:min(lo+perTxn, len(names))] {
					id := durable.IDFromName(benchclass.AlarmClass, name)
					ops = append(ops, store.PutOps(nil, alarmstore.Record{
						Class: benchclass.AlarmClass, ID: id, Name: name, Partition: id.Partition(partitions),
						Due: due, Scheduled: due,
					})...)
				}
				tctx, cancel := context.WithTimeout(ctx, opTimeout)
				_, err := env.Etcd.Txn(tctx).Then(ops...).Commit()
				cancel()
				if err != nil {
					errs <- err
					return
				}
				bar.Set(done.Add(int64(len(ops) / 2)))
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		bar.Done("failed")
		return fmt.Errorf("store alarms: %w", err)
	}
	bar.Done(fmt.Sprintf("%d stored", len(names)))
	return nil
}
