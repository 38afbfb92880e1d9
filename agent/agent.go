// Package agent runs one durable node as a server: it connects to etcd,
// wires the pieces of a node — its membership (placement.Member), its
// leader campaign (leader.Leader), group commit and group read (commit),
// the object runtime (node.Node) — serves the gRPC API (Objects, Admin,
// health, reflection) on a listener, and runs their lifecycle until its
// context ends: register, serve, drain, stop. `durable agent` and `durable
// dev` are thin wrappers around it; tests start agents in-process.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/durable-run/durable/commit"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/leader"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/placement"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
	"github.com/durable-run/durable/security"
	"github.com/durable-run/durable/tracing"
)

// Config configures an agent.
type Config struct {
	Node node.Config
	// Etcd lists the etcd client endpoints.
	Etcd []string
	// EtcdTLS, when set, secures the etcd connection.
	EtcdTLS *tls.Config
	// Listen is the gRPC listen address (host:port; port 0 picks one).
	Listen string
	// Security: TLS, authentication and authorisation of the node's
	// callers, and its etcd user; zero: plaintext and open.
	Security Security
	// Limits bound what callers can hold on the gRPC server.
	Limits Limits
	// DialTimeout bounds the first connection to etcd.
	DialTimeout time.Duration
	// DebugListen, when set, serves the process's profiles over HTTP there
	// (see DebugServer) while the agent runs.
	DebugListen string
	// MetricsListen, when set, serves the node's Prometheus metrics at
	// /metrics, its health at /healthz and the web dashboard at / over
	// HTTP there (and its profiles under /debug/pprof/ with Pprof).
	MetricsListen string
	Pprof         bool
	// HTTPListen, when set, serves the HTTP front door there: invocations
	// and the Admin API as HTTP/JSON (see frontDoor), over TLS with the
	// node's certificate and behind its guard when secured.
	HTTPListen string
	// Metrics is the node's metric set; nil: a new one (metrics.New).
	// metrics.Off() skips the hot paths' updates and the RPC metrics.
	Metrics *metrics.Set
	// ServerOptions are added to the gRPC server's (after the agent's own
	// credentials and interceptors): e.g. more interceptors.
	ServerOptions []grpc.ServerOption
}

// Validate checks the agent-level fields (the node's are checked by node.New).
func (c *Config) Validate() error {
	var errs []error
	if len(c.Etcd) == 0 {
		errs = append(errs, errors.New("at least one etcd endpoint is required"))
	}
	if c.Listen == "" {
		errs = append(errs, errors.New("listen address is required"))
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if err := c.Security.validate(); err != nil {
		errs = append(errs, err)
	}
	c.Limits.applyDefaults()
	return errors.Join(errs...)
}

// ErrCrash, as the cause of Start's context (context.WithCancelCause),
// makes the agent stop as if its process had died: no drain, no release of
// its partitions, no revocation of its lease, no resignation of its
// leadership. Tests use it to simulate SIGKILL.
var ErrCrash = errors.New("agent: simulated crash")

// Agent is a running node with its gRPC server.
type Agent struct {
	// Node is the object runtime, Member its membership and Leader its
	// campaign in its data center.
	Node   *node.Node
	Member *placement.Member
	Leader *leader.Leader

	cfg       Config
	meta      placement.Meta
	keys      keyspace.Space
	addr      string
	client    *clientv3.Client
	leases    *clientv3.Client // the lease's own connection
	committer *commit.Committer
	reader    *commit.Reader
	srv       *grpc.Server
	log       *slog.Logger

	health   *health.Server
	serving  atomic.Bool // what the health service says of ""
	stopOnce sync.Once
	debug    *DebugServer // nil unless Config.DebugListen
	ops      *OpsServer   // nil unless Config.MetricsListen
	front    *OpsServer   // nil unless Config.HTTPListen
	metrics  *metrics.Set
	tls      *security.Source // nil unless Config.Security.Enabled()
	guard    *security.Guard  // nil unless Config.Security.Enabled()
	conns    atomic.Int64     // open gRPC connections
	secured  []grpc.ServerOption

	runErr error
	done   chan struct{}
}

// Start connects to etcd, reads (or creates) the cluster's metadata,
// listens, and starts the node and its server in the background. The
// returned agent serves until ctx ends; Wait returns after everything has
// shut down.
func Start(ctx context.Context, cfg Config, reg *node.Registry) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent: invalid config: %w", err)
	}
	if err := cfg.Node.Validate(); err != nil {
		return nil, fmt.Errorf("agent: invalid node config: %w", err)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("agent: listen on %s: %w", cfg.Listen, err)
	}
	if cfg.Node.Advertise == "" {
		cfg.Node.Advertise = lis.Addr().String()
	}
	a := &Agent{cfg: cfg, keys: keyspace.New(cfg.Node.Prefix), addr: lis.Addr().String(), done: make(chan struct{})}
	lis = limitListener(lis, cfg.Limits.MaxConnections, &a.conns)
	a.log = cfg.Node.Logger.With("component", "agent", "node", cfg.Node.ID)
	if err := a.build(ctx, reg); err != nil {
		lis.Close()
		a.closeClients()
		return nil, err
	}
	if cfg.DebugListen != "" {
		debug := Ops{Pprof: true, Hosts: a.hostFilter("ops")}
		if a.tls != nil { // behind the same TLS and guard (admin)
			debug.TLS, debug.Guard = a.tls.ServerConfig(false), a.guard
		}
		if a.debug, err = ServeOps(cfg.DebugListen, debug); err != nil {
			lis.Close()
			a.closeClients()
			return nil, err
		}
	}
	// The RPCs' own metrics (grpc_server_handled_total, …), beside ours;
	// none with metrics.Off, whose nodes measure the cost of metrics.
	var opts []grpc.ServerOption
	if a.metrics.Enabled() {
		rpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10})))
		a.metrics.Registry.MustRegister(rpcMetrics)
		opts = append(opts,
			grpc.ChainUnaryInterceptor(rpcMetrics.UnaryServerInterceptor()),
			grpc.ChainStreamInterceptor(rpcMetrics.StreamServerInterceptor()),
		)
	}
	opts = append(opts, tracing.ServerOptions(a.cfg.Node.TracerProvider)...)
	opts = append(opts, a.secured...) // after the metrics: refusals are counted as RPCs too
	opts = append(opts, cfg.Limits.serverOptions()...)
	a.srv = grpc.NewServer(append(opts, cfg.ServerOptions...)...)
	a.Node.Register(a.srv)
	durablev1.RegisterAdminServer(a.srv, &adminServer{a: a})
	a.health = health.NewServer()
	healthpb.RegisterHealthServer(a.srv, a.health)
	if cfg.Security.Reflection {
		reflection.Register(a.srv)
	}
	if cfg.MetricsListen != "" {
		ops := Ops{Metrics: a.metrics.Registry, Health: a.Serving, Dashboard: a.dashboard(), Pprof: cfg.Pprof, Hosts: a.hostFilter("ops")}
		if a.tls != nil {
			ops.TLS, ops.Guard = a.tls.ServerConfig(false), a.guard
		}
		if a.ops, err = ServeOps(cfg.MetricsListen, ops); err != nil {
			if a.debug != nil {
				a.debug.Close()
			}
			lis.Close()
			a.closeClients()
			return nil, err
		}
	}
	if cfg.HTTPListen != "" {
		if a.front, err = a.serveFrontDoor(); err != nil {
			for _, s := range []*OpsServer{a.debug, a.ops} {
				if s != nil {
					s.Close()
				}
			}
			lis.Close()
			a.closeClients()
			return nil, err
		}
	}
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	a.health.SetServingStatus(ObjectsService, healthpb.HealthCheckResponse_NOT_SERVING)
	a.health.SetServingStatus(AdminService, healthpb.HealthCheckResponse_SERVING)

	go a.run(ctx, lis)
	return a, nil
}

// build connects to etcd and wires the node's pieces.
func (a *Agent) build(ctx context.Context, reg *node.Registry) error {
	a.metrics = a.cfg.Metrics
	if a.metrics == nil {
		a.metrics = metrics.New()
	}
	a.cfg.Node.Metrics = a.metrics
	var err error
	if a.secured, err = a.secure(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	nc := a.cfg.Node
	etcd := EtcdConfig{Endpoints: a.cfg.Etcd, TLS: a.cfg.EtcdTLS, User: a.cfg.Security.EtcdUser, Password: a.cfg.Security.EtcdPassword, Timeout: a.cfg.DialTimeout, Prefix: a.cfg.Node.Prefix}
	client, err := Dial(ctx, etcd)
	if err != nil {
		return err
	}
	a.client = client
	// The lease is renewed over a connection of its own: renewals must not
	// queue behind the node's commits and reads.
	if a.leases, err = Dial(ctx, etcd); err != nil {
		return err
	}
	homes := nc.HomeDCs
	if len(homes) == 0 {
		homes = []string{nc.DC}
	}
	meta, err := placement.EnsureCluster(ctx, client, a.keys, nc.Partitions, homes)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if len(nc.HomeDCs) > 0 && !slices.Equal(meta.HomeDCs, nc.HomeDCs) {
		a.log.Warn("cluster home data centers differ from configuration; using the cluster's",
			"cluster", meta.HomeDCs, "configured", nc.HomeDCs)
	}
	if meta.Partitions != nc.Partitions {
		a.log.Warn("cluster partition count differs from configuration; using the cluster's",
			"cluster", meta.Partitions, "configured", nc.Partitions)
	}
	a.meta = meta
	a.Member = placement.NewMember(placement.MemberConfig{
		ID: nc.ID, DC: nc.DC, Advertise: nc.Advertise, Classes: reg.Names(), LeaseTTL: nc.LeaseTTL, CommitTimeout: nc.CommitTimeout,
		Clock: nc.Clock, Logger: nc.Logger.With("node", nc.ID), Leases: a.leases, Metrics: a.metrics,
	}, client, a.keys, meta)
	commitCfg := commit.Config{
		Parallelism: nc.CommitParallelism, MaxOps: nc.CommitMaxOps, MaxBytes: nc.CommitMaxBytes, Timeout: nc.CommitTimeout,
		Logger: nc.Logger.With("component", "commit", "node", nc.ID), OnLost: a.Member.Lost, Hook: nc.CommitHook,
		Metrics: a.metrics, TracerProvider: nc.TracerProvider,
	}
	a.committer = commit.NewCommitter(client, a.keys, commitCfg)
	a.reader = commit.NewReader(client, commitCfg)
	a.Node, err = node.New(nc, reg, node.Deps{
		KV: client, Commits: a.committer, Reads: a.reader, Membership: a.Member, Partitions: meta.Partitions, HomeDCs: meta.HomeDCs,
	})
	if err != nil {
		return err
	}
	a.Leader = leader.New(leader.Config{
		Node: nc.ID, DC: nc.DC, Meta: meta, TTL: nc.LeaseTTL, Grace: nc.DCGrace, Stabilise: nc.Stabilise,
		Gate: a.Member.Gate, Clock: nc.Clock, Logger: nc.Logger.With("node", nc.ID), Metrics: a.metrics,
	}, client, a.keys)
	a.registerMetrics()
	return nil
}

// run is the agent's lifecycle: register, serve until ctx ends (or the
// server fails), then drain, stop the server, the membership and leader,
// the node, release what is left and stop the commit path.
func (a *Agent) run(ctx context.Context, lis net.Listener) {
	defer close(a.done)
	defer a.closeClients()
	if a.ops != nil {
		defer a.ops.Close()
	}
	if a.debug != nil {
		defer a.debug.Close()
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var serving sync.WaitGroup
	failed := make(chan error, 2)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
		cancel(err)
	}
	serving.Go(func() {
		// nil: the agent stopped the server itself.
		if err := a.srv.Serve(lis); err != nil {
			fail(fmt.Errorf("agent: grpc server: %w", err))
		}
	})
	defer serving.Wait() // after stopServer below

	if err := a.Member.Register(runCtx); err != nil {
		a.runErr = err
		a.stopServer(true)
		if a.front != nil {
			_ = a.front.closeWithin(0)
		}
		a.Node.Stop()
		a.committer.Stop()
		a.reader.Stop()
		return
	}
	a.Node.Start()
	// The membership and the leader outlive runCtx while draining: they
	// must keep the lease alive, move the partitions away (a draining
	// leader leads until it exits) and see the new owners claim.
	mctx, stopMembership := context.WithCancelCause(context.Background())
	var background sync.WaitGroup
	background.Go(func() {
		// It returns an error only when the node can no longer be a member
		// (another live process took its id): the agent stops.
		if err := a.Member.Run(mctx, a.Node); err != nil {
			fail(fmt.Errorf("agent: %w", err))
		}
	})
	background.Go(func() { a.Leader.Run(mctx) })
	background.Go(func() { a.reportHealth(runCtx) })

	<-runCtx.Done()
	crashed := errors.Is(context.Cause(ctx), ErrCrash)
	if !crashed {
		a.Member.Drain()
	}
	// Once drained, the server stops taking calls and finishes those in
	// flight while the node can still forward them.
	a.stopServer(crashed)
	if a.front != nil {
		limit := gracefulStopLimit
		if crashed {
			limit = 0
		}
		_ = a.front.closeWithin(limit)
	}
	cause := context.Canceled
	if crashed {
		cause = leader.ErrAbandon
	}
	stopMembership(cause)
	background.Wait()
	a.Node.Stop()
	a.Member.Close(crashed)
	a.committer.Stop()
	a.reader.Stop()
	select {
	case a.runErr = <-failed:
	default:
	}
}

// Health service names, besides "" (the whole node).
const (
	ObjectsService = "durable.v1.Objects"
	AdminService   = "durable.v1.Admin"
)

// healthEvery is how often the health service is brought up to date.
const healthEvery = 200 * time.Millisecond

// reportHealth keeps the health service true until ctx ends: "" is
// SERVING while the node is registered and can confirm its lease, once it
// has owned partitions since it started (or placement settled without
// giving it any); durable.v1.Objects also requires
// that it is not draining (a balancer should stop sending it calls).
func (a *Agent) reportHealth(ctx context.Context) {
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	ready := false
	set := func(service string, ok bool) {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if ok {
			st = healthpb.HealthCheckResponse_SERVING
		}
		a.health.SetServingStatus(service, st)
	}
	for {
		h := a.Member.Health()
		// Ready once it owned partitions, or once placement settled
		// without giving it any (a node kept out for lack of a class
		// still routes calls).
		ready = ready || len(a.Member.Owned()) > 0 || h.Registered && a.Member.Settled()
		up := ready && h.Registered && h.Margin > 0
		a.serving.Store(up)
		set("", up)
		set(ObjectsService, up && !h.Draining)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.Member.Changed():
		}
	}
}

func (a *Agent) closeClients() {
	for _, c := range []*clientv3.Client{a.client, a.leases} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// gracefulStopLimit bounds how long a stopping server waits for calls in
// flight before it cuts them off.
const gracefulStopLimit = 10 * time.Second

// stopServer stops the gRPC server once: at once after a crash (a dead process
// answers nothing more), otherwise gracefully within gracefulStopLimit.
func (a *Agent) stopServer(crashed bool) {
	a.stopOnce.Do(func() {
		a.health.Shutdown()
		if crashed {
			a.srv.Stop()
			return
		}
		done := make(chan struct{})
		go func() { a.srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(gracefulStopLimit):
			a.log.Warn("calls still in flight after the graceful stop limit; cutting them off")
			a.srv.Stop()
			<-done
		}
	})
}

// EtcdConfig is how a node reaches etcd.
type EtcdConfig struct {
	Endpoints []string
	// TLS, when set, secures the connection (and may carry a client
	// certificate).
	TLS *tls.Config
	// User and Password authenticate with etcd's user/password auth.
	User, Password string
	// Timeout bounds the first connection.
	Timeout time.Duration
	// Prefix is the cluster's key prefix: the check that etcd answers
	// reads a key under it.
	Prefix string
}

// refusedLogin reports whether etcd refused the client's credentials or
// its permission.
func refusedLogin(err error) bool {
	switch rpctypes.Error(err) {
	case rpctypes.ErrAuthFailed, rpctypes.ErrAuthNotEnabled, rpctypes.ErrPermissionDenied, rpctypes.ErrUserEmpty,
		rpctypes.ErrInvalidAuthToken, rpctypes.ErrAuthOldRevision:
		return true
	}
	return false
}

// Dial connects to etcd and checks that it answers within c.Timeout; a
// refused login says so, naming the endpoints and the user.
func Dial(ctx context.Context, c EtcdConfig) (*clientv3.Client, error) {
	cctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	client, err := clientv3.New(clientv3.Config{
		Endpoints: c.Endpoints, DialTimeout: c.Timeout, TLS: c.TLS, Logger: zap.NewNop(), Context: ctx,
		Username: c.User, Password: c.Password,
		// Keep-alives notice a dead etcd member quickly so the client fails
		// over to another endpoint.
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
	})
	if err != nil {
		if refusedLogin(err) {
			return nil, fmt.Errorf("agent: etcd at %v refused user %q: %w", c.Endpoints, c.User, rpctypes.Error(err))
		}
		return nil, fmt.Errorf("agent: etcd client for %v: %w", c.Endpoints, err)
	}
	// A key of the node's own prefix: a node's etcd role may grant no more.
	if _, err := client.Get(cctx, c.Prefix+"health-check"); err != nil {
		client.Close()
		if refusedLogin(err) {
			return nil, fmt.Errorf("agent: etcd at %v refused the node (user %q): %w", c.Endpoints, c.User, rpctypes.Error(err))
		}
		return nil, fmt.Errorf("agent: etcd at %v is unreachable: %w", c.Endpoints, err)
	}
	return client, nil
}

// hostFilter is the Host filter of the node's unsecured HTTP listeners
// (Security.HTTPAllowedHosts), counting refusals labelled what.
func (a *Agent) hostFilter(what string) security.HostFilter {
	return security.HostFilter{Allowed: a.cfg.Security.HTTPAllowedHosts, Metrics: a.metrics, What: what}
}

// Serving reports what the health service last said of the node.
func (a *Agent) Serving() bool { return a.serving.Load() }

// Addr returns the address the agent serves on.
func (a *Agent) Addr() string { return a.addr }

// Config returns the agent's configuration, defaults applied.
func (a *Agent) Config() Config { return a.cfg }

// MetricsAddr returns the address of the metrics' HTTP server, "" when
// off.
func (a *Agent) MetricsAddr() string {
	if a.ops == nil {
		return ""
	}
	return a.ops.Addr()
}

// Connections returns the open connections to the gRPC server (the gauge
// durable_grpc_connections).
func (a *Agent) Connections() int64 { return a.conns.Load() }

// Metrics returns the node's metric set.
func (a *Agent) Metrics() *metrics.Set { return a.metrics }

// HTTPAddr returns the address of the HTTP front door, "" when off.
func (a *Agent) HTTPAddr() string {
	if a.front == nil {
		return ""
	}
	return a.front.Addr()
}

// DebugAddr returns the address of the profiles' HTTP server, "" when off.
func (a *Agent) DebugAddr() string {
	if a.debug == nil {
		return ""
	}
	return a.debug.Addr()
}

// Committer returns the node's group commit.
func (a *Agent) Committer() *commit.Committer { return a.committer }

// Wait blocks until the agent has stopped and returns why it stopped (nil
// after a normal shutdown).
func (a *Agent) Wait() error {
	<-a.done
	return a.runErr
}

// Done is closed when the agent has stopped.
func (a *Agent) Done() <-chan struct{} { return a.done }
