package node

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/credentials"

	"github.com/durable-run/durable/metrics"
)

// Config configures a Node. Validate (New and agent.Start call it) fills
// every zero field with DefaultConfig's value, so a Config with only ID set
// works; only ID has no default (two nodes must not share one). A few
// fields' zero means "off" and is kept: ForwardTimeout (no bound),
// CallLatencyTarget (not watched; DefaultConfig's is 100ms) and HomeDCs
// (this node's DC).
type Config struct {
	// ID names the node; unique among live nodes.
	ID string
	// DC is the node's data-center label.
	DC string
	// Prefix is the etcd key prefix of the cluster; ends with '/'.
	Prefix string
	// Advertise is the gRPC address other nodes and clients reach this node
	// at; it is recorded in the node's registration.
	Advertise string
	// Partitions is the partition count used if the cluster is new; an
	// existing cluster keeps the count it was created with.
	Partitions int
	// LeaseTTL is the TTL of the node's etcd lease (and of its leader
	// election session). Partitions of a node that dies are free after at
	// most this long.
	LeaseTTL time.Duration
	// HomeDCs are the data centers partitions are homed in, spread evenly
	// (partition p's home is HomeDCs[p % len]), used if the cluster is new;
	// empty means this node's DC. An existing cluster keeps its homes.
	HomeDCs []string
	// DCGrace is how long a data center must have had no live node before
	// the leaders of the others adopt its partitions.
	DCGrace time.Duration
	// Stabilise is how long a data center must have been healthy again
	// before its adopted partitions move back home.
	Stabilise time.Duration
	// IdleTimeout evicts an object from memory after this long without events.
	IdleTimeout time.Duration
	// QueueSize bounds the events waiting for one object; more is overload.
	QueueSize int
	// AlarmWindow is the look-ahead: alarms due within it are held in memory.
	AlarmWindow time.Duration
	// CommitTimeout bounds one commit to etcd.
	CommitTimeout time.Duration
	// CommitMaxOps bounds the write operations the group commit puts into
	// one etcd transaction; set it to etcd's --max-txn-ops (128 by
	// default). A larger event is still sent, alone.
	CommitMaxOps int
	// CommitMaxBytes bounds the bytes the group commit puts into one etcd
	// transaction; keep it below etcd's --max-request-bytes (1.5 MiB by
	// default).
	CommitMaxBytes int
	// CommitParallelism is the number of group-commit transactions in
	// flight at once.
	CommitParallelism int
	// MaxCalls bounds the invocations running or queued on the node at
	// once; admission control lowers the bound (down to MinCalls) while
	// the node's lease renewals or commits slow down, and raises it back.
	// Calls past it are refused as overloaded, with a retry-after.
	MaxCalls, MinCalls int
	// MaxActiveObjects bounds the objects in memory; activations past it
	// are refused (alarms wait).
	MaxActiveObjects int
	// MaxActivationRate bounds new activations per second; it shrinks
	// while the node's lease renewals suffer.
	MaxActivationRate float64
	// CommitLatencyTarget is the commit round trip above which admission
	// control counts the node as under pressure.
	CommitLatencyTarget time.Duration
	// CallLatencyTarget is the mean time calls spend on the node (queued,
	// run, committed) above which admission control counts it as under
	// pressure (0: not watched). Handlers that take long on purpose need a
	// higher one.
	CallLatencyTarget time.Duration
	// MaxReplyBytes bounds an invocation's reply: a larger one fails the
	// invocation before its writes commit (a reply the caller's connection
	// cannot take must not leave an applied write behind).
	MaxReplyBytes int
	// ForwardTimeout, when positive, bounds one forward to another node.
	// Off by default: a forward already ends when the partition's owner
	// changes (a dead or frozen owner loses it within a lease TTL), and
	// cutting a slow but live owner's call short would run its handler
	// again on the retry.
	ForwardTimeout time.Duration
	// MaxRunningAlarms bounds the alarms handed to objects at once; more
	// due alarms wait in the heap.
	MaxRunningAlarms int
	// AlarmHandlerTimeout bounds one run of an Alarm handler.
	AlarmHandlerTimeout time.Duration
	// BlockTimeout bounds BlockConcurrencyWhile.
	BlockTimeout time.Duration
	// SystemRetryDelay is how long an alarm waits before it runs again after
	// a failure of the system (not of the handler).
	SystemRetryDelay time.Duration

	// Clock drives every timer of the node; tests inject a fake.
	Clock clockwork.Clock
	// Jitter returns a float in [0, 1) for retry jitter; tests inject it.
	Jitter func() float64
	// Logger receives the node's logs.
	Logger *slog.Logger
	// Metrics receives the node's metrics; nil: metrics.Discard().
	Metrics *metrics.Set
	// TracerProvider traces invocations (durable.event), alarm runs
	// (durable.alarm) and forwards; nil: no tracing.
	TracerProvider trace.TracerProvider
	// PeerCredentials secure the node's calls to other nodes (forwards,
	// forwarded admin calls): the node's own certificate, checked by the
	// peer as a node's. Nil: plaintext.
	PeerCredentials credentials.TransportCredentials

	// CommitHook is for tests: it runs for each object commit about to be
	// sent to etcd and may block it or fail it as etcd would (the commit
	// then fails with ErrCommitUnknown). Nil in production.
	CommitHook func(ops []clientv3.Op) error
}

// DefaultConfig returns a configuration with the documented defaults.
func DefaultConfig() Config {
	return Config{
		ID:                  "node-1",
		DC:                  "dc1",
		Prefix:              "/durable/",
		Partitions:          256,
		LeaseTTL:            3 * time.Second,
		DCGrace:             10 * time.Second,
		Stabilise:           10 * time.Second,
		IdleTimeout:         60 * time.Second,
		QueueSize:           128,
		AlarmWindow:         60 * time.Second,
		CommitTimeout:       10 * time.Second,
		CommitMaxOps:        128,
		CommitMaxBytes:      1 << 20,
		CommitParallelism:   4,
		AlarmHandlerTimeout: 15 * time.Minute,
		MaxRunningAlarms:    4096,
		MaxCalls:            1024,
		MinCalls:            64,
		MaxActiveObjects:    200000,
		MaxActivationRate:   20000,
		CommitLatencyTarget: 250 * time.Millisecond,
		CallLatencyTarget:   100 * time.Millisecond,
		MaxReplyBytes:       4<<20 - 64<<10,
		BlockTimeout:        30 * time.Second,
		SystemRetryDelay:    time.Second,
	}
}

// Validate fills zero fields with defaults (see applyDefaults) and checks
// the configuration, reporting every bad field at once.
func (c *Config) Validate() error {
	c.applyDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.ID == "" || strings.ContainsAny(c.ID, "/ \t\n") {
		bad("node id %q must be non-empty without '/' or spaces", c.ID)
	}
	if c.DC == "" || strings.ContainsAny(c.DC, "/ \t\n") {
		bad("dc %q must be non-empty without '/' or spaces", c.DC)
	}
	for _, dc := range c.HomeDCs {
		if dc == "" || strings.ContainsAny(dc, "/ \t\n") {
			bad("home dc %q must be non-empty without '/' or spaces", dc)
		}
	}
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") {
		bad("prefix %q must start and end with '/'", c.Prefix)
	}
	if c.Partitions < 1 || c.Partitions > 65536 {
		bad("partitions %d must be in [1, 65536]", c.Partitions)
	}
	if c.LeaseTTL < time.Second {
		bad("lease TTL %s must be at least 1s (etcd leases have second granularity)", c.LeaseTTL)
	}
	if c.LeaseTTL%time.Second != 0 {
		bad("lease TTL %s must be a whole number of seconds", c.LeaseTTL)
	}
	positive := map[string]time.Duration{
		"idle timeout": c.IdleTimeout, "alarm window": c.AlarmWindow, "commit timeout": c.CommitTimeout,
		"alarm handler timeout": c.AlarmHandlerTimeout, "block timeout": c.BlockTimeout,
		"system retry delay": c.SystemRetryDelay, "dc grace": c.DCGrace, "stabilise": c.Stabilise,
	}
	for name, d := range positive {
		if d <= 0 {
			bad("%s %s must be positive", name, d)
		}
	}
	if c.CommitMaxOps < 1 {
		bad("commit max ops %d must be at least 1", c.CommitMaxOps)
	}
	if c.CommitMaxBytes < 1024 {
		bad("commit max bytes %d must be at least 1024", c.CommitMaxBytes)
	}
	if c.CommitParallelism < 1 || c.CommitParallelism > 256 {
		bad("commit parallelism %d must be in [1, 256]", c.CommitParallelism)
	}
	if c.MaxRunningAlarms < 1 {
		bad("max running alarms %d must be at least 1", c.MaxRunningAlarms)
	}
	if c.MinCalls < 1 || c.MaxCalls < c.MinCalls {
		bad("call bounds [%d, %d] must satisfy 1 <= min <= max", c.MinCalls, c.MaxCalls)
	}
	if c.MaxActiveObjects < 1 {
		bad("max active objects %d must be at least 1", c.MaxActiveObjects)
	}
	if c.MaxActivationRate < 1 {
		bad("max activation rate %g must be at least 1/s", c.MaxActivationRate)
	}
	if c.CallLatencyTarget < 0 {
		bad("call latency target %s must not be negative", c.CallLatencyTarget)
	}
	if c.CommitLatencyTarget <= 0 {
		bad("commit latency target %s must be positive", c.CommitLatencyTarget)
	}
	if c.MaxReplyBytes < 1024 {
		bad("max reply bytes %d must be at least 1024", c.MaxReplyBytes)
	}
	if c.QueueSize < 1 {
		bad("queue size %d must be at least 1", c.QueueSize)
	}
	return errors.Join(errs...)
}

// applyDefaults sets every zero field that has a default to DefaultConfig's
// value, and the injectable dependencies (clock, jitter, logger, metrics,
// tracer) to real ones. Zero that means "off" is left alone: ForwardTimeout,
// CallLatencyTarget and HomeDCs (see Config). A set but wrong value, e.g. a
// negative duration, is kept for Validate to report.
func (c *Config) applyDefaults() {
	d := DefaultConfig()
	setString := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDuration := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setString(&c.DC, d.DC)
	setString(&c.Prefix, d.Prefix)
	setInt(&c.Partitions, d.Partitions)
	setDuration(&c.LeaseTTL, d.LeaseTTL)
	setDuration(&c.DCGrace, d.DCGrace)
	setDuration(&c.Stabilise, d.Stabilise)
	setDuration(&c.IdleTimeout, d.IdleTimeout)
	setInt(&c.QueueSize, d.QueueSize)
	setDuration(&c.AlarmWindow, d.AlarmWindow)
	setDuration(&c.CommitTimeout, d.CommitTimeout)
	setInt(&c.CommitMaxOps, d.CommitMaxOps)
	setInt(&c.CommitMaxBytes, d.CommitMaxBytes)
	setInt(&c.CommitParallelism, d.CommitParallelism)
	setInt(&c.MaxCalls, d.MaxCalls)
	if c.MinCalls == 0 {
		// A MaxCalls set below the default floor keeps its own value as
		// the floor rather than failing min <= max.
		c.MinCalls = min(d.MinCalls, max(c.MaxCalls, 1))
	}
	setInt(&c.MaxActiveObjects, d.MaxActiveObjects)
	if c.MaxActivationRate == 0 {
		c.MaxActivationRate = d.MaxActivationRate
	}
	setDuration(&c.CommitLatencyTarget, d.CommitLatencyTarget)
	setInt(&c.MaxReplyBytes, d.MaxReplyBytes)
	setInt(&c.MaxRunningAlarms, d.MaxRunningAlarms)
	setDuration(&c.AlarmHandlerTimeout, d.AlarmHandlerTimeout)
	setDuration(&c.BlockTimeout, d.BlockTimeout)
	setDuration(&c.SystemRetryDelay, d.SystemRetryDelay)
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.Discard()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
}
