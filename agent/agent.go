// Package agent runs one durable node as a server: it connects to etcd,
// starts the node's runtime, and serves the gRPC API (Objects, Admin, health,
// reflection) on a listener until its context ends. `durable agent` and
// `durable dev` are thin wrappers around it; tests start agents in-process.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/durable-run/durable/node"
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
	// TLS, when set, serves gRPC over TLS.
	TLS *tls.Config
	// DialTimeout bounds the first connection to etcd.
	DialTimeout time.Duration
	// DebugListen, when set, serves the process's profiles over HTTP there
	// (see DebugServer) while the agent runs.
	DebugListen string
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
	return errors.Join(errs...)
}

// Agent is a running node with its gRPC server.
type Agent struct {
	Node   *node.Node
	addr   string
	client *clientv3.Client
	srv    *grpc.Server
	lis    net.Listener
	log    *slog.Logger

	health   *health.Server
	stopOnce sync.Once
	debug    *DebugServer // nil unless Config.DebugListen

	runErr error
	done   chan struct{}
}

// Start connects to etcd, listens, and starts the node and its server in the
// background. The returned agent serves until ctx ends or Stop is called;
// Wait returns after everything has shut down.
func Start(ctx context.Context, cfg Config, reg *node.Registry) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent: invalid config: %w", err)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("agent: listen on %s: %w", cfg.Listen, err)
	}
	if cfg.Node.Advertise == "" {
		cfg.Node.Advertise = lis.Addr().String()
	}
	client, err := Dial(ctx, cfg.Etcd, cfg.EtcdTLS, cfg.DialTimeout)
	if err != nil {
		lis.Close()
		return nil, err
	}
	n, err := node.New(cfg.Node, client, reg)
	if err != nil {
		lis.Close()
		client.Close()
		return nil, err
	}
	var debug *DebugServer
	if cfg.DebugListen != "" {
		if debug, err = ServeDebug(cfg.DebugListen); err != nil {
			lis.Close()
			client.Close()
			return nil, err
		}
	}
	var opts []grpc.ServerOption
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	a := &Agent{
		Node: n, addr: lis.Addr().String(), client: client, srv: grpc.NewServer(opts...), lis: lis,
		log: n.Config().Logger.With("component", "agent"), done: make(chan struct{}), debug: debug,
	}
	a.health = n.Register(a.srv)
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	// Once the node has drained, the server stops taking calls and finishes
	// those in flight while the node can still forward them.
	n.OnDrained(a.stopServer)
	runCtx, cancel := context.WithCancel(ctx)
	serveErr := make(chan error, 1)
	go func() { serveErr <- a.srv.Serve(lis) }()
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- n.Run(runCtx) }()
	go func() {
		defer close(a.done)
		defer client.Close()
		defer cancel()
		if debug != nil {
			defer debug.Close()
		}
		// Serving flips on once the node owns partitions (or fails).
		go func() {
			if n.WaitReady(runCtx) == nil {
				a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			}
		}()
		select {
		case err := <-nodeDone:
			a.runErr = err
		case err := <-serveErr:
			// nil: the node stopped the server itself after draining.
			if err != nil {
				a.runErr = fmt.Errorf("agent: grpc server: %w", err)
				cancel()
			}
			if err := <-nodeDone; a.runErr == nil {
				a.runErr = err
			}
		}
		a.stopServer(errors.Is(context.Cause(runCtx), node.ErrCrash))
	}()
	return a, nil
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

// Dial connects to etcd and checks that it answers within timeout.
func Dial(ctx context.Context, endpoints []string, tlsCfg *tls.Config, timeout time.Duration) (*clientv3.Client, error) {
	client, err := clientv3.New(clientv3.Config{
		Endpoints: endpoints, DialTimeout: timeout, TLS: tlsCfg, Logger: zap.NewNop(),
		// Keep-alives notice a dead etcd member quickly so the client fails
		// over to another endpoint.
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: etcd client: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := client.Get(cctx, "health-check-key-that-need-not-exist"); err != nil {
		client.Close()
		return nil, fmt.Errorf("agent: etcd at %v is unreachable: %w", endpoints, err)
	}
	return client, nil
}

// Addr returns the address the agent serves on.
func (a *Agent) Addr() string { return a.addr }

// DebugAddr returns the address of the profiles' HTTP server, "" when off.
func (a *Agent) DebugAddr() string {
	if a.debug == nil {
		return ""
	}
	return a.debug.Addr()
}

// Wait blocks until the agent has stopped and returns why it stopped (nil
// after a normal shutdown).
func (a *Agent) Wait() error {
	<-a.done
	return a.runErr
}

// Done is closed when the agent has stopped.
func (a *Agent) Done() <-chan struct{} { return a.done }
