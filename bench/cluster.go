package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/placement"
	"github.com/durable-run/durable/security"
)

// ClusterConfig configures an embedded cluster. Zero fields take the
// defaults of DefaultClusterConfig.
type ClusterConfig struct {
	// Nodes is the number of in-process nodes (1–16).
	Nodes int
	// Partitions is the cluster's partition count.
	Partitions int
	// LeaseTTL is every node's lease TTL (whole seconds).
	LeaseTTL time.Duration
	// EtcdEndpoints, when set, is an etcd to run the nodes on instead of
	// an in-process one.
	EtcdEndpoints []string
	// Prefix is the nodes' key prefix. Default: "/durable/" on the
	// in-process etcd, a fresh "/durable-bench-<hex>/" on EtcdEndpoints
	// (deleted by Close).
	Prefix string
	// UnsafeNoFsync turns fsync off in the in-process etcd (tests only:
	// the numbers mean nothing then).
	UnsafeNoFsync bool
	// EtcdElectionTimeout is the in-process etcd's election timeout (0:
	// etcd's default); tests shorten it to start faster.
	EtcdElectionTimeout time.Duration
	// SettleTimeout bounds the wait for placement to settle.
	SettleTimeout time.Duration
	// Logger receives the nodes' and etcd's logs; nil discards them.
	Logger *slog.Logger
	// Progress shows the start; nil shows nothing.
	Progress *Progress
	// MTLS secures the nodes with mutual TLS 1.3: a throw-away CA and
	// certificates in a temporary directory (removed by Close), every node
	// serving and calling its peers with its own certificate, every client
	// of the bench dialling with DialOptions (the "admin" client's
	// certificate). The nodes' etcd connections stay plaintext.
	MTLS bool
	// Observability is what the nodes measure of themselves: ObsMetrics
	// (the default, as a node runs unless told otherwise), ObsOff (no
	// metric updates on the hot paths: metrics.Off; no tracing) or
	// ObsTracing (metrics and tracing: every span sampled and exported,
	// in batches, to an exporter that drops them).
	Observability string
}

// The transports of the bench's rows (Result.Transport).
const (
	Plaintext = "plaintext"
	MTLS      = "mtls"
)

// The observability of the bench's nodes (ClusterConfig.Observability,
// Result.Observability).
const (
	ObsOff     = "off"
	ObsMetrics = "metrics"
	ObsTracing = "metrics+tracing"
)

// DefaultClusterConfig returns 3 nodes, 256 partitions, lease TTL 3 s, an
// in-process etcd with fsync on.
func DefaultClusterConfig() ClusterConfig {
	return ClusterConfig{Nodes: 3, Partitions: 256, LeaseTTL: 3 * time.Second, SettleTimeout: time.Minute}
}

func (c ClusterConfig) withDefaults() ClusterConfig {
	d := DefaultClusterConfig()
	if c.Nodes == 0 {
		c.Nodes = d.Nodes
	}
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = d.LeaseTTL
	}
	if c.SettleTimeout == 0 {
		c.SettleTimeout = d.SettleTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observability == "" {
		c.Observability = ObsMetrics
	}
	return c
}

// Validate checks the fields the nodes do not check themselves.
func (c ClusterConfig) Validate() error {
	var errs []error
	if c.Nodes < 1 || c.Nodes > 16 {
		errs = append(errs, fmt.Errorf("nodes %d must be between 1 and 16", c.Nodes))
	}
	switch c.Observability {
	case "", ObsOff, ObsMetrics, ObsTracing:
	default:
		errs = append(errs, fmt.Errorf("observability %q must be %q, %q or %q", c.Observability, ObsOff, ObsMetrics, ObsTracing))
	}
	return errors.Join(errs...)
}

// Cluster is an embedded cluster: an etcd (in-process unless
// ClusterConfig.EtcdEndpoints) and nodes serving gRPC and the HTTP front door on loopback, each with
// its own etcd connection as separate processes would have. Its methods are
// safe for concurrent use.
type Cluster struct {
	cfg       ClusterConfig
	etcd      *embedetcd.Server // nil on EtcdEndpoints
	endpoints []string
	client    *clientv3.Client
	keys      keyspace.Space
	ownPrefix bool // the prefix was made up for this cluster: Close deletes it
	reg       *node.Registry
	preps     []Preparer
	log       *slog.Logger
	pki       security.Paths           // the bundle's directory; empty without MTLS
	dial      []grpc.DialOption        // the clients' dial options
	tracer    *sdktrace.TracerProvider // ObsTracing's; nil otherwise

	mu      sync.Mutex // guards members' agent, cancel, listen and http
	members []*member
}

type member struct {
	cfg    node.Config
	listen string // "127.0.0.1:0" until the first start, then kept across restarts
	http   string // the front door's, likewise
	agent  *agent.Agent
	cancel context.CancelCauseFunc
}

// StartCluster starts a cluster with the example classes and whatever the
// preparers add, and returns once placement has settled (every partition
// owned, balanced). ctx bounds the start only; the cluster runs until Close.
func StartCluster(ctx context.Context, cfg ClusterConfig, preps ...Preparer) (c *Cluster, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bench: cluster: %w", err)
	}
	c = &Cluster{cfg: cfg, reg: node.NewRegistry(), preps: preps, log: cfg.Logger}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	if len(cfg.EtcdEndpoints) > 0 {
		c.endpoints = cfg.EtcdEndpoints
		if cfg.Prefix == "" {
			cfg.Prefix, c.ownPrefix = "/durable-bench-"+randomHex(3)+"/", true
		}
	} else {
		ecfg := embedetcd.DefaultConfig()
		ecfg.UnsafeNoFsync = cfg.UnsafeNoFsync
		// The failover scenario stores millions of alarms, and nothing is
		// compacted within a run: room beyond etcd's default 2 GiB.
		ecfg.QuotaBackendBytes = 8 << 30
		if cfg.EtcdElectionTimeout > 0 {
			ecfg.ElectionTimeout = cfg.EtcdElectionTimeout
		}
		ecfg.Logger = cfg.Logger.With("component", "etcd")
		if c.etcd, err = embedetcd.Start(ctx, ecfg); err != nil {
			return c, fmt.Errorf("bench: start etcd: %w", err)
		}
		c.endpoints = c.etcd.Endpoints()
		if cfg.Prefix == "" {
			cfg.Prefix = node.DefaultConfig().Prefix
		}
	}
	c.cfg, c.keys = cfg, keyspace.New(cfg.Prefix)
	if c.client, err = dialEtcd(ctx, c.endpoints, EtcdLogin{}); err != nil {
		return c, err
	}

	if err := examples.Register(c.reg, examples.Config{}); err != nil {
		return c, fmt.Errorf("bench: register the example classes: %w", err)
	}
	tmpl := node.DefaultConfig()
	tmpl.Prefix, tmpl.Partitions, tmpl.LeaseTTL = cfg.Prefix, cfg.Partitions, cfg.LeaseTTL
	// The embedded etcd takes up to 10240 operations per Txn (an external
	// one may take fewer: the committer learns its limit from a refusal).
	tmpl.CommitMaxOps = 1024
	tmpl.Logger = cfg.Logger
	if cfg.Observability == ObsTracing {
		// As a traced deployment runs, but for the exporter: every span
		// recorded and batched, then dropped instead of sent to a collector.
		// The sampler is every span, unless OTEL_TRACES_SAMPLER names
		// another (the SDK reads it, as a deployment's would).
		opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(tracetest.NewNoopExporter())}
		if os.Getenv("OTEL_TRACES_SAMPLER") == "" {
			opts = append(opts, sdktrace.WithSampler(sdktrace.AlwaysSample()))
		}
		c.tracer = sdktrace.NewTracerProvider(opts...)
		tmpl.TracerProvider = c.tracer
	}
	for _, p := range preps {
		if err := p.Prepare(c.reg, &tmpl); err != nil {
			return c, fmt.Errorf("bench: prepare %T: %w", p, err)
		}
	}
	for i := range cfg.Nodes {
		mc := tmpl
		mc.ID = fmt.Sprintf("bench-%d", i+1)
		c.members = append(c.members, &member{cfg: mc, listen: "127.0.0.1:0", http: "127.0.0.1:0"})
	}
	if cfg.MTLS {
		if err := c.issueCertificates(); err != nil {
			return c, err
		}
	}
	for i := range c.members {
		if err := c.Restart(ctx, i); err != nil {
			return c, err
		}
	}
	what := "start cluster"
	if cfg.MTLS {
		what = "start mTLS cluster"
	}
	if cfg.Observability != ObsMetrics {
		what += " (observability " + cfg.Observability + ")"
	}
	bar := cfg.Progress.Counted(what+": partitions owned", int64(cfg.Partitions))
	sctx, cancel := context.WithTimeout(ctx, cfg.SettleTimeout)
	defer cancel()
	if err := c.WaitSettled(sctx, func(owned int) { bar.Set(int64(owned)) }); err != nil {
		bar.Done("failed")
		return c, err
	}
	bar.Done(fmt.Sprintf("%d node(s), %d partitions settled", cfg.Nodes, cfg.Partitions))
	return c, nil
}

// issueCertificates writes a bundle for the members and the bench's admin
// client into a temporary directory, and the clients' dial options.
func (c *Cluster) issueCertificates() error {
	dir, err := os.MkdirTemp("", "durable-bench-pki-")
	if err != nil {
		return fmt.Errorf("bench: certificates: %w", err)
	}
	c.pki.Dir = dir
	b := security.Bundle{Dir: dir, Clients: map[string][]security.Role{"admin": {security.RoleAdmin, security.RoleInvoke}}}
	for _, m := range c.members {
		b.Nodes = append(b.Nodes, m.cfg.ID)
	}
	if c.pki, err = b.Write(); err != nil {
		return fmt.Errorf("bench: certificates: %w", err)
	}
	cc := security.ClientConfig{TLS: c.pki.Client("admin")}
	if c.dial, err = cc.DialOptions(); err != nil {
		return fmt.Errorf("bench: certificates: %w", err)
	}
	return nil
}

// Transport returns Plaintext or MTLS.
func (c *Cluster) Transport() string {
	if c.cfg.MTLS {
		return MTLS
	}
	return Plaintext
}

// Observability returns ObsOff, ObsMetrics or ObsTracing.
func (c *Cluster) Observability() string { return c.cfg.Observability }

// DialOptions returns the gRPC dial options a client of the nodes needs:
// none for plaintext, the admin client's certificate with MTLS.
func (c *Cluster) DialOptions() []grpc.DialOption { return c.dial }

// Twin starts another cluster like c — the same configuration and
// preparers — on c's etcd under a fresh prefix (deleted by its Close),
// with edit applied to the configuration first (nil: none).
func (c *Cluster) Twin(ctx context.Context, edit func(*ClusterConfig)) (*Cluster, error) {
	cfg := c.cfg
	cfg.EtcdEndpoints, cfg.Prefix = c.endpoints, ""
	if edit != nil {
		edit(&cfg)
	}
	return StartCluster(ctx, cfg, c.preps...)
}

// Size returns the number of node slots.
func (c *Cluster) Size() int { return len(c.members) }

// Addrs returns every node's gRPC address (also of nodes that are down:
// a restarted node listens on its old address).
func (c *Cluster) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.listen
	}
	return out
}

// HTTPAddrs returns every node's HTTP front door address, in the order of
// Addrs (TLS with MTLS, as the nodes' gRPC).
func (c *Cluster) HTTPAddrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.http
	}
	return out
}

// EtcdEndpoints returns the etcd endpoints the nodes use.
func (c *Cluster) EtcdEndpoints() []string { return c.endpoints }

// Etcd returns the cluster's own etcd client.
func (c *Cluster) Etcd() *clientv3.Client { return c.client }

// Keys returns the nodes' key space.
func (c *Cluster) Keys() keyspace.Space { return c.keys }

// Agent returns node i, nil while it is down.
func (c *Cluster) Agent(i int) *agent.Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].agent
}

// Edit changes node i's configuration from its next Restart on.
func (c *Cluster) Edit(i int, edit func(*node.Config)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	edit(&c.members[i].cfg)
}

// Restart starts node i, which must be down (as at the start, or after
// Kill or Stop). It returns once the node runs, not once it owns
// partitions: use WaitSettled for that. A killed node keeps its id, so it
// waits out its old registration (up to the lease TTL) before it registers.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	c.mu.Lock()
	m := c.members[i]
	if m.agent != nil {
		c.mu.Unlock()
		return fmt.Errorf("bench: node %d is already running", i)
	}
	cfg, listen, httpListen := m.cfg, m.listen, m.http
	c.mu.Unlock()
	// The node's life is the cluster's, not the caller's ctx.
	actx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	// Every node serves the HTTP front door too (an idle listener costs
	// nothing): the invoke scenario measures it beside gRPC.
	acfg := agent.Config{Node: cfg, Etcd: c.endpoints, Listen: listen, HTTPListen: httpListen}
	if c.cfg.MTLS {
		acfg.Security = agent.Security{TLS: c.pki.Node(cfg.ID)}
	}
	if c.cfg.Observability == ObsOff {
		acfg.Metrics = metrics.Off()
	}
	a, err := agent.Start(actx, acfg, c.reg)
	if err != nil {
		cancel(nil)
		return fmt.Errorf("bench: start node %d: %w", i, err)
	}
	c.mu.Lock()
	m.agent, m.cancel, m.listen, m.http = a, cancel, a.Addr(), a.HTTPAddr()
	c.mu.Unlock()
	return nil
}

// Kill stops node i abruptly, as SIGKILL would: it keeps its partitions and
// lease, which expire after the lease TTL. It returns once the node's
// goroutines have ended; a node already down is left alone.
func (c *Cluster) Kill(i int) error { return c.down(i, agent.ErrCrash) }

// Stop stops node i gracefully, as SIGTERM would: it hands its partitions
// to the other nodes first.
func (c *Cluster) Stop(i int) error { return c.down(i, context.Canceled) }

func (c *Cluster) down(i int, cause error) error {
	c.mu.Lock()
	m := c.members[i]
	a, cancel := m.agent, m.cancel
	m.agent, m.cancel = nil, nil
	c.mu.Unlock()
	if a == nil {
		return nil
	}
	cancel(cause)
	if err := a.Wait(); err != nil {
		return fmt.Errorf("bench: node %d stopped with: %w", i, err)
	}
	return nil
}

// WaitSettled waits until placement has converged on the running nodes:
// every partition owned by a running node that knows it, no handoff under
// way, partitions balanced (loads differ by at most one). owned, if not
// nil, is told how many partitions are owned as it goes. It returns ctx's
// error if that comes first.
func (c *Cluster) WaitSettled(ctx context.Context, owned func(int)) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ok, n, err := c.settled(ctx)
		if owned != nil {
			owned(n)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: placement did not settle (%d of %d partitions owned; last read error: %v): %w",
				n, c.cfg.Partitions, err, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// settled reports whether placement has converged and how many partitions
// are owned.
func (c *Cluster) settled(ctx context.Context) (bool, int, error) {
	v, err := placement.Read(ctx, c.client, c.keys, placement.Meta{})
	if err != nil {
		return false, 0, err
	}
	c.mu.Lock()
	var running []*agent.Agent
	for _, m := range c.members {
		if m.agent != nil {
			running = append(running, m.agent)
		}
	}
	c.mu.Unlock()
	if len(running) == 0 {
		return false, len(v.Owners), nil
	}
	load := map[string]int{}
	for _, a := range running {
		load[a.Node.Config().ID] = 0
	}
	for _, as := range v.Assign {
		if _, ok := load[as.Node]; ok {
			load[as.Node]++
		}
	}
	lo, hi := len(v.Assign), 0
	for _, n := range load {
		lo, hi = min(lo, n), max(hi, n)
	}
	total := 0
	for _, a := range running {
		pc := a.Node.PartitionCount()
		if len(v.Owners) != pc || !a.Member.Sees(v) || !a.Member.Settled() {
			return false, len(v.Owners), nil
		}
		mine := a.Member.Owned()
		for _, p := range mine {
			if v.Owners[p].Node != a.Node.Config().ID {
				return false, len(v.Owners), nil
			}
		}
		total += len(mine)
	}
	return hi-lo <= 1 && total == len(v.Owners), len(v.Owners), nil
}

// Close kills every node (a benchmark's cluster is thrown away, so nothing
// is handed off), then deletes the keys under a prefix it made up on an
// external etcd, or stops the in-process one, removes the certificates of
// MTLS, and returns once everything has ended.
func (c *Cluster) Close() error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.members))
	for i := range c.members {
		wg.Go(func() { errs[i] = c.Kill(i) })
	}
	wg.Wait()
	if c.client != nil {
		if c.ownPrefix {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := c.client.Delete(ctx, c.keys.Prefix(), clientv3.WithPrefix()); err != nil {
				errs = append(errs, fmt.Errorf("bench: delete the cluster's keys: %w", err))
			}
			cancel()
		}
		errs = append(errs, c.client.Close())
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.Close())
	}
	if c.pki.Dir != "" {
		errs = append(errs, os.RemoveAll(c.pki.Dir))
	}
	if c.tracer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		errs = append(errs, c.tracer.Shutdown(ctx))
		cancel()
	}
	return errors.Join(errs...)
}
