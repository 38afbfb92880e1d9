package agent

import (
	"runtime"
	"runtime/debug"
)

// registerMetrics adds the gauges read at scrape time from what the node's
// parts already keep (no copy on the hot path).
func (a *Agent) registerMetrics() {
	m, n := a.metrics, a.Node
	m.GaugeFunc("durable_grpc_connections", "Open connections to the node's gRPC server (at most --max-connections).",
		func() float64 { return float64(a.conns.Load()) })
	m.GaugeFunc("durable_objects_active", "Objects in memory on this node (running or parked).",
		func() float64 { return float64(n.ActiveObjects()) })
	m.GaugeFunc("durable_calls_in_flight", "Invocations running or queued on this node.",
		func() float64 { return float64(n.Admission().InFlight) })
	m.GaugeFunc("durable_call_limit", "The admission control's current bound on calls in flight (it shrinks under pressure).",
		func() float64 { return float64(n.Admission().Limit) })
	m.GaugeFunc("durable_alarms_in_window", "Alarms held in memory: due within the look-ahead window of the partitions this node owns.",
		func() float64 { return float64(n.ScheduledAlarms()) })
	m.GaugeFunc("durable_alarms_overdue", "Alarms due and not yet handed to their object (waiting for room to run).",
		func() float64 { return float64(n.AlarmsOverdue()) })
	m.GaugeFunc("durable_alarms_running", "Alarms handed to objects and not yet finished (the running-alarm slots used).",
		func() float64 { return float64(n.RunningAlarms()) })
	m.GaugeFunc("durable_alarms_running_limit", "The bound on alarms handed out at once (--max-running-alarms).",
		func() float64 { return float64(n.MaxRunningAlarms()) })
	m.GaugeFunc("durable_partitions_owned", "Partitions this node owns.",
		func() float64 { return float64(len(a.Member.Owned())) })
	m.GaugeFunc("durable_lease_margin_seconds", "Time left before the node's local lease deadline (past it, it serves nothing); compare with durable_lease_ttl_seconds.",
		func() float64 { return a.Member.Health().Margin.Seconds() })
	m.GaugeFunc("durable_lease_ttl_seconds", "The TTL of the node's lease.",
		func() float64 { return a.cfg.Node.LeaseTTL.Seconds() })
	m.GaugeFunc("durable_draining", "1 while the node is draining (handing its partitions away), else 0.",
		func() float64 { return b2f(a.Member.Health().Draining) })
	m.GaugeFunc("durable_serving", "1 while the node reports SERVING (registered, lease confirmed), else 0.",
		func() float64 { return b2f(a.Serving()) })
	m.GaugeFunc("durable_leader", "1 while this node is its data center's leader, else 0.",
		func() float64 { return b2f(a.Leader.Term() > 0) })
	m.GaugeFunc("durable_leader_term", "The term number of this node's leadership (1 = its data center's first leader), 0 when not leading.",
		func() float64 { return float64(a.Leader.Number()) })
	m.GaugeFunc("durable_commit_queued", "Object commits waiting for a group-commit Txn.",
		func() float64 { return float64(a.committer.Queued()) })
	m.BuildInfo(Version(), runtime.Version())
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Version is the module's version as the Go toolchain recorded it at build
// time ("(devel)" for a build from a checkout), with the VCS revision when
// known.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
