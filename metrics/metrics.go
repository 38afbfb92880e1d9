// Package metrics defines every Prometheus metric a durable node exports,
// in one place, so that names, units and labels stay consistent and
// docs/operations.md can list them all. Names follow Prometheus
// conventions: a durable_ prefix, base units (seconds, bytes), _total for
// counters.
//
// A Set belongs to one node (one agent) and is registered on that node's
// own registry, so several nodes in one process (dev, tests) do not
// collide. Components receive the Set and update it where things happen;
// values a component already keeps (objects in memory, the call limit, the
// lease margin) are read at scrape time by functions the agent registers
// (GaugeFunc), never copied on the hot path.
//
// Cardinality is bounded by construction: labels are classes (registered
// ones; others count as "unknown"), a bounded set of method names per class
// (Methods), gRPC codes, data centers and fixed reasons. Partitions and
// object ids are never labels.
//
// Nil-safety: Discard returns a Set registered nowhere, for components
// built without metrics (tests), so call sites never check for nil.
//
// Off returns a Set whose hot-path updates are skipped: the call sites of
// the invocation, forwarding, alarm and group-commit paths check Enabled
// and do nothing when it is false (the gRPC server's own RPC metrics are
// left out too). It exists to measure what metrics cost (durable bench
// invoke --observability=compare); rare updates (membership, leadership,
// security, activations) still count. A Set from New or Discard is always
// Enabled, so with metrics on nothing changes.
package metrics

import (
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// Set is one node's metrics.
type Set struct {
	// Registry holds every metric of the set and the Go runtime's and the
	// process's collectors.
	Registry *prometheus.Registry

	// Invocations run on this node (the owner), by class, method and gRPC
	// code, and their time from admission to reply.
	Invocations       *prometheus.CounterVec
	InvocationSeconds *prometheus.HistogramVec
	// Refusals of calls (and activations) shed by admission control, by
	// reason: OVERLOADED (the node) or OBJECT_BUSY (one object's queue).
	Refusals *prometheus.CounterVec
	// Activations (a class's factory ran) and evictions of idle objects.
	Activations prometheus.Counter
	Evictions   prometheus.Counter

	// Forwards of calls to the partition's owner, by gRPC code, and their
	// round trip.
	Forwards       *prometheus.CounterVec
	ForwardSeconds prometheus.Histogram

	// Alarm runs by class and outcome (success, failure: the handler's;
	// system_failure: the node's, not counted against the retries), the
	// retries scheduled and the alarms abandoned to the dead letters; the
	// lateness of a run (due time → handler start) and the handler's time.
	AlarmRuns           *prometheus.CounterVec
	AlarmRetries        *prometheus.CounterVec
	AlarmDeadLetters    *prometheus.CounterVec
	AlarmLateness       *prometheus.HistogramVec
	AlarmHandlerSeconds *prometheus.HistogramVec
	// AlarmUnserved counts alarms due here for a class this node does not
	// serve (each waits for a node that does, looked at again every 30 s).
	AlarmUnserved *prometheus.CounterVec

	// Group commit: Txns sent by result (ok, fence_failed, error), the
	// object commits, write operations and bytes they carried, a Txn's
	// round trip, how long a commit waited for its Txn, and commits sent
	// again because another partition's fence failed their batch.
	CommitTxns        *prometheus.CounterVec
	CommitRequests    prometheus.Counter
	CommitOps         prometheus.Counter
	CommitBytes       prometheus.Counter
	CommitSeconds     prometheus.Histogram
	CommitWaitSeconds prometheus.Histogram
	CommitRetried     prometheus.Counter
	// Group reads: Txns and the keys they read.
	GroupReads    prometheus.Counter
	GroupReadKeys prometheus.Counter

	// Membership: lease renewals' round trip, leases lost, and partition
	// tenures gained or ended, by why (claimed, handoff, lease_lost,
	// owner_deleted, fence_failed, …).
	KeepAliveSeconds prometheus.Histogram
	LeaseLosses      prometheus.Counter
	LeaseLapses      prometheus.Counter
	LapseAborts      prometheus.Counter
	OwnershipChanges *prometheus.CounterVec

	// Leadership: elections won here, and partitions the leader reassigned,
	// by why (new, node_gone, draining, adopted, home, rebalance).
	Elections     prometheus.Counter
	Reassignments *prometheus.CounterVec

	// Security: calls refused by authentication or authorisation, by
	// reason (unauthenticated, permission_denied; host_not_allowed on an
	// unsecured HTTP listener) and RPC; reloads of the
	// TLS files and the auth policy, by what was reloaded and result.
	AuthRefusals *prometheus.CounterVec
	Reloads      *prometheus.CounterVec

	methods methodLabels
	names   *[]string // every metric name registered, in order
	off     bool      // Off: the hot paths skip their updates
}

// Latency buckets: 0.5 ms … 10 s, covering a loopback call and a
// failover's wait.
var secondsBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Lateness buckets reach a minute: alarms wait out a failover (a lease
// TTL), an adoption (a grace period) or a backlog.
var latenessBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// New returns a Set registered on a new registry, with the Go runtime's and
// the process's collectors.
func New() *Set {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := newSet(reg)
	s.Registry = reg
	return s
}

// Off returns a Set like New's (its own registry, every collector real)
// whose hot-path updates are skipped: Enabled reports false. Only the
// bench uses it, to measure a node without metrics.
func Off() *Set {
	s := New()
	s.off = true
	return s
}

// Enabled reports whether the hot paths update the set: true but for Off.
// Call sites on the invocation, forwarding, alarm and commit paths check
// it before they update.
func (s *Set) Enabled() bool { return !s.off }

var (
	discardOnce sync.Once
	discard     *Set
)

// Discard returns a Set registered nowhere: updates cost little and go
// nowhere. Components built without metrics use it.
func Discard() *Set {
	discardOnce.Do(func() { discard = newSet(prometheus.NewRegistry()) })
	return discard
}

func newSet(reg prometheus.Registerer) *Set {
	names := new([]string)
	f := factory{reg, names}
	return &Set{
		names: names,
		Invocations: f.counterVec("durable_invocations_total",
			"Invocations run on this node (as the owner), by class, method and gRPC code.", "class", "method", "code"),
		InvocationSeconds: f.histogramVec("durable_invocation_duration_seconds",
			"Time from admission to reply of invocations run on this node, writes durable included.", secondsBuckets, "class", "method"),
		Refusals: f.counterVec("durable_refusals_total",
			"Calls and activations refused by admission control, by reason (OVERLOADED: the node; OBJECT_BUSY: one object's queue).", "reason"),
		Activations: f.counter("durable_object_activations_total", "Objects activated (their class's factory ran)."),
		Evictions:   f.counter("durable_object_evictions_total", "Idle objects evicted from memory."),

		Forwards: f.counterVec("durable_forwards_total",
			"Calls forwarded to the partition's owner, by gRPC code of the forward.", "code"),
		ForwardSeconds: f.histogram("durable_forward_duration_seconds", "Round trip of a forward to the owner.", secondsBuckets),

		AlarmRuns: f.counterVec("durable_alarm_runs_total",
			"Alarm handler runs by class and outcome: success, failure (the handler's, counted against its retries) or system_failure (the node's, retried without counting).", "class", "outcome"),
		AlarmRetries: f.counterVec("durable_alarm_retries_total",
			"Failed alarm runs scheduled to run again (2 s … 64 s backoff), by class.", "class"),
		AlarmDeadLetters: f.counterVec("durable_alarm_dead_letters_total",
			"Alarms abandoned after their last retry and recorded as dead letters, by class.", "class"),
		AlarmLateness: f.histogramVec("durable_alarm_lateness_seconds",
			"Time from an alarm's due time (of this run: a retry's own time) to its handler's start, by class.", latenessBuckets, "class"),
		AlarmHandlerSeconds: f.histogramVec("durable_alarm_handler_duration_seconds",
			"Time an alarm handler ran, by class.", secondsBuckets, "class"),
		AlarmUnserved: f.counterVec("durable_alarm_unserved_total",
			"Alarms due on this node for a class it does not serve, by class: each waits (looked at again every 30 s) until a node that serves the class owns its partition.", "class"),

		CommitTxns: f.counterVec("durable_commit_txns_total",
			"Group-commit etcd Txns by result: ok, fence_failed (a partition was lost) or error (etcd failed or refused).", "result"),
		CommitRequests: f.counter("durable_commit_requests_total", "Object commits carried by group-commit Txns."),
		CommitOps:      f.counter("durable_commit_ops_total", "Write operations carried by group-commit Txns."),
		CommitBytes:    f.counter("durable_commit_bytes_total", "Request bytes (keys and values) carried by group-commit Txns."),
		CommitSeconds:  f.histogram("durable_commit_duration_seconds", "Round trip of a group-commit Txn.", secondsBuckets),
		CommitWaitSeconds: f.histogram("durable_commit_wait_seconds",
			"Time an object's commit waited in the committer before its Txn was sent.", secondsBuckets),
		CommitRetried: f.counter("durable_commit_retried_total",
			"Object commits sent again because another partition's fence failed their Txn (nothing of it applied)."),
		GroupReads:    f.counter("durable_group_reads_total", "Group-read etcd Txns (point reads of many objects at once)."),
		GroupReadKeys: f.counter("durable_group_read_keys_total", "Keys read by group reads."),

		KeepAliveSeconds: f.histogram("durable_lease_keepalive_duration_seconds",
			"Round trip of the node's lease renewals.", secondsBuckets),
		LeaseLosses: f.counter("durable_lease_losses_total", "Leases the node lost (expired in etcd before a renewal)."),
		LeaseLapses: f.counter("durable_lease_lapses_total",
			"Times the node's local lease deadline passed before a renewal confirmed the lease: it served nothing until one did."),
		LapseAborts: f.counter("durable_lease_lapse_aborted_handlers_total",
			"Handlers whose context was cancelled because the node's local lease deadline passed while they ran."),
		OwnershipChanges: f.counterVec("durable_ownership_changes_total",
			"Partition tenures gained or ended here, by change (gained, lost, released) and why.", "change", "why"),

		Elections: f.counter("durable_leader_elections_total", "Elections this node won as its data center's leader."),
		Reassignments: f.counterVec("durable_leader_reassignments_total",
			"Partition assignments written by this node as leader, by why (new, node_gone, draining, adopted, home, rebalance).", "why"),
		AuthRefusals: f.counterVec("durable_auth_refusals_total",
			"Calls refused by authentication (unauthenticated), authorisation (permission_denied) or, on an unsecured HTTP listener, because their Host header names the node by a name it was not given (host_not_allowed: DNS rebinding), by reason and RPC (the gRPC method; ops for the operations listener; the front door's route, or http for a front-door request refused by its host).", "reason", "rpc"),
		Reloads: f.counterVec("durable_security_reloads_total",
			"Reloads of changed security files, by what (tls, auth_policy) and result (ok, error: the previous files stay in use).", "what", "result"),
		methods: methodLabels{byClass: map[string]map[string]struct{}{}},
	}
}

// factory creates metrics, registers them and records their names.
type factory struct {
	reg   prometheus.Registerer
	names *[]string
}

func (f factory) register(name string, c prometheus.Collector) {
	f.reg.MustRegister(c)
	*f.names = append(*f.names, name)
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.register(name, c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.register(name, c)
	return c
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.register(name, h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.register(name, h)
	return h
}

// Names returns the name of every metric registered on the set (not the
// RPCs' or the runtime's).
func (s *Set) Names() []string { return append([]string(nil), *s.names...) }

// GaugeFunc registers a gauge whose value fn gives at scrape time.
func (s *Set) GaugeFunc(name, help string, fn func() float64) {
	if s.Registry == nil {
		return
	}
	factory{s.Registry, s.names}.register(name, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn))
}

// CounterFunc registers a counter whose value fn gives at scrape time (a
// count a component already keeps).
func (s *Set) CounterFunc(name, help string, fn func() float64) {
	if s.Registry == nil {
		return
	}
	factory{s.Registry, s.names}.register(name, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, fn))
}

// BuildInfo registers durable_build_info{version, go_version} = 1.
func (s *Set) BuildInfo(version, goVersion string) {
	if s.Registry == nil {
		return
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "durable_build_info",
		Help: "1, labelled with the module's version (and VCS revision) and the Go version it was built with."}, []string{"version", "go_version"})
	g.WithLabelValues(version, goVersion).Set(1)
	factory{s.Registry, s.names}.register("durable_build_info", g)
}

// MaxMethodsPerClass bounds the method label: a class's first
// MaxMethodsPerClass distinct method names are labels of their own, later
// ones count as "other", so callers cannot create series at will.
const MaxMethodsPerClass = 64

// maxMethodLabelBytes bounds one method label's length.
const maxMethodLabelBytes = 64

type methodLabels struct {
	mu      sync.RWMutex
	byClass map[string]map[string]struct{} // the methods with labels of their own
}

// Method returns the label for method of class: the name itself while the
// class has fewer than MaxMethodsPerClass names, else "other"; a name that
// is not short, valid UTF-8 is "other" too (Prometheus labels must be
// UTF-8).
func (s *Set) Method(class, method string) string {
	m := &s.methods
	m.mu.RLock()
	_, known := m.byClass[class][method]
	m.mu.RUnlock()
	if known {
		return method
	}
	if len(method) > maxMethodLabelBytes || !utf8.ValidString(method) || strings.ContainsRune(method, utf8.RuneError) {
		return "other"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := m.byClass[class]
	if seen == nil {
		seen = map[string]struct{}{}
		m.byClass[class] = seen
	}
	if _, ok := seen[method]; ok {
		return method
	}
	if len(seen) >= MaxMethodsPerClass {
		return "other"
	}
	seen[method] = struct{}{}
	return method
}

// Value returns the current value of a counter or gauge, or the number of
// observations of a histogram: what tests and the status read.
func Value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	go func() { c.Collect(ch); close(ch) }()
	total := 0.0
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil {
			continue
		}
		switch {
		case d.Counter != nil:
			total += d.Counter.GetValue()
		case d.Gauge != nil:
			total += d.Gauge.GetValue()
		case d.Histogram != nil:
			total += float64(d.Histogram.GetSampleCount())
		}
	}
	return total
}

// HistogramSum returns the sum and the count of a histogram's observations
// over all its series.
func HistogramSum(c prometheus.Collector) (sum, count float64) {
	ch := make(chan prometheus.Metric, 1)
	go func() { c.Collect(ch); close(ch) }()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil && d.Histogram != nil {
			sum += d.Histogram.GetSampleSum()
			count += float64(d.Histogram.GetSampleCount())
		}
	}
	return sum, count
}
