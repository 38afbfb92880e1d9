package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/security"
	"github.com/durable-run/durable/sink"
	"github.com/durable-run/durable/tracing"
)

func newDevCmd(opts Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a development cluster: embedded etcd, nodes with " + opts.Name + "'s classes, and a sink",
		Long: "Run everything on loopback in one process: an embedded etcd, one or more durable\n" +
			"nodes (--nodes) serving " + opts.Name + "'s classes, and an HTTP sink that records\n" +
			"what classes deliver to it. Ctrl-C stops it cleanly." + envHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd, opts) },
	}
	fs := cmd.Flags()
	fs.String("data-dir", "", "etcd data directory (default: a temporary directory removed on exit)")
	fs.String("etcd-listen", "127.0.0.1:2379", "client address of the embedded etcd")
	fs.String("etcd-peer-listen", "127.0.0.1:0", "raft peer address of the embedded etcd (port 0: a free one, so dev clusters side by side do not collide)")
	fs.String("listen", defaultAddr, "gRPC address of the first node; node i listens on the port i above it")
	fs.Int("nodes", 1, "number of nodes to run (0-16), dev-1 … dev-N; 0 runs only the embedded etcd and the sink, for agents started apart")
	fs.StringSlice("dcs", []string{"dc1"}, "data centers; node i is in the i-th, round robin")
	fs.String("sink-listen", "127.0.0.1:4680", "HTTP address of the sink the example classes deliver to")
	fs.String("sink-file", "", "also append the sink's deliveries to this JSON-lines file")
	fs.String("metrics-listen", "127.0.0.1:4700", "HTTP address of the first node's Prometheus metrics (/metrics) and health (/healthz); node i serves on the port i above it; off if empty")
	fs.String("http-listen", "127.0.0.1:4800", "HTTP/JSON address of the first node's front door (POST /v1/objects/{class}/{name}/{method}, /v1/admin/…); node i serves on the port i above it; off if empty")
	addAllowedHostsFlag(fs)
	fs.Bool("secure", false, "run secured: a throw-away CA and certificates in --certs-dir, etcd over TLS with user/password auth, nodes with mutual TLS and an auth policy; prints the environment for the CLI")
	fs.Bool("insecure", false, insecureHelp)
	fs.String("certs-dir", "", "where --secure keeps its certificates, tokens and passwords (default: certs beside --data-dir, or a temporary directory removed on exit)")
	nodeFlags(fs, opts, devNodeDefaults(), "", " (default: the dev sink's URL)")
	return cmd
}

func runDev(cmd *cobra.Command, opts Options) error {
	ctx := cmd.Context()
	fs := cmd.Flags()
	log, err := newLogger(cmd)
	if err != nil {
		return err
	}

	ecfg := embedetcd.DefaultConfig()
	ecfg.Dir, _ = fs.GetString("data-dir")
	ecfg.ClientAddr, _ = fs.GetString("etcd-listen")
	ecfg.PeerAddr, _ = fs.GetString("etcd-peer-listen")
	ecfg.Logger = log.With("component", "etcd")
	count, _ := fs.GetInt("nodes")
	secure, _ := fs.GetBool("secure")
	// The sink stays plaintext even with --secure: it is a test endpoint.
	if err := checkExposure(fs, secure, "give --secure", "listen", "metrics-listen", "debug-listen", "http-listen", "etcd-listen", "sink-listen"); err != nil {
		return err
	}
	hosts, err := allowedHosts(fs)
	if err != nil {
		return err
	}
	var sec *devSecurity
	if secure {
		if sec, err = prepareDevSecurity(fs, count); err != nil {
			return err
		}
		defer sec.cleanup()
		etcdFiles, root := sec.paths.EtcdServer(), sec.paths.EtcdClient("root")
		ecfg.TLSCert, ecfg.TLSKey, ecfg.TLSCA = etcdFiles.Cert, etcdFiles.Key, etcdFiles.CA
		ecfg.ClientCertAuth, ecfg.ClientCert, ecfg.ClientKey = true, root.Cert, root.Key
	}
	etcd, err := embedetcd.Start(ctx, ecfg)
	if err != nil {
		return fmt.Errorf("start embedded etcd: %w", err)
	}
	defer etcd.Close()
	if sec != nil {
		if err := sec.setupEtcd(ctx, etcd.Endpoints(), nodeConfig(fs).Prefix); err != nil {
			return err
		}
	}

	sinkAddr, _ := fs.GetString("sink-listen")
	sinkFile, _ := fs.GetString("sink-file")
	stopSink, sinkURL, err := startSink(ctx, log, sinkAddr, sink.Options{File: sinkFile}, security.Files{})
	if err != nil {
		return err
	}
	defer stopSink()
	if up, err := fs.GetString("upstream"); err == nil && up == "" {
		if err := fs.Set("upstream", sinkURL); err != nil {
			return err
		}
	}

	reg, err := registry(opts, fs)
	if err != nil {
		return err
	}
	if addr, _ := fs.GetString("debug-listen"); addr != "" {
		// One server for the process: profiles cover every node in it.
		d, err := agent.ServeOps(addr, agent.Ops{Pprof: true, Hosts: security.HostFilter{Allowed: hosts}})
		if err != nil {
			return err
		}
		defer d.Close()
		log.Info("profiles served", "url", "http://"+d.Addr()+"/debug/pprof/")
	}
	dcs, _ := fs.GetStringSlice("dcs")
	listen, _ := fs.GetString("listen")
	addrs, err := devAddrs(listen, count)
	if err != nil {
		return err
	}
	if len(dcs) == 0 {
		return errors.New("--dcs needs at least one data center")
	}
	var metricsAddrs []string
	if m, _ := fs.GetString("metrics-listen"); m != "" {
		if metricsAddrs, err = devAddrs(m, count); err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
	}
	var httpAddrs []string
	if h, _ := fs.GetString("http-listen"); h != "" {
		if httpAddrs, err = devAddrs(h, count); err != nil {
			return fmt.Errorf("--http-listen: %w", err)
		}
	}
	if count == 0 {
		upstreamFlag := ""
		if opts.RegisterUpstream != nil {
			upstreamFlag = " --upstream " + sinkURL
		}
		fmt.Fprintf(cmd.OutOrStdout(), `
%s dev is running, without nodes
  etcd          %s
  sink (HTTP)   %s

Start nodes apart, e.g.:
  %s agent --etcd %s%s

Ctrl-C stops everything.
`, opts.Name, strings.Join(etcd.Endpoints(), ","), sinkURL, opts.RunAs, strings.Join(etcd.Endpoints(), ","), upstreamFlag)
		<-ctx.Done()
		return nil
	}
	tp, stopTracing, err := tracing.FromEnv(ctx)
	if err != nil {
		return err
	}
	defer stopTracing(context.WithoutCancel(ctx))
	var agents []*agent.Agent
	for i, addr := range addrs {
		cfg := agent.Config{Node: nodeConfig(fs), Etcd: etcd.Endpoints(), Listen: addr}
		if metricsAddrs != nil {
			cfg.MetricsListen = metricsAddrs[i]
		}
		if httpAddrs != nil {
			cfg.HTTPListen = httpAddrs[i]
		}
		cfg.Node.ID, cfg.Node.DC = devNodeID(i), dcs[i%len(dcs)]
		cfg.Security.Reflection = true // loopback: grpcurl works
		cfg.Security.HTTPAllowedHosts = hosts
		if sec != nil {
			sec.apply(&cfg)
		}
		if len(cfg.Node.HomeDCs) == 0 {
			cfg.Node.HomeDCs = slices.Compact(slices.Sorted(slices.Values(dcs)))
		}
		cfg.Node.Logger = log
		cfg.Node.TracerProvider = tp
		a, err := agent.Start(ctx, cfg, reg)
		if err != nil {
			for _, a := range agents {
				_ = a.Wait()
			}
			return err
		}
		agents = append(agents, a)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	for _, a := range agents {
		if err = a.Member.WaitOwning(waitCtx); err != nil {
			break
		}
	}
	cancel()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("nodes did not become ready: %w", err)
	}
	addrFlag := ""
	if agents[0].Addr() != defaultAddr {
		addrFlag = " --addr " + agents[0].Addr()
	}
	scheme := "http"
	if sec != nil {
		scheme = "https"
	}
	var nodes strings.Builder
	for _, a := range agents {
		fmt.Fprintf(&nodes, "  node %-8s %s (%s)", a.Node.Config().ID, a.Addr(), a.Node.Config().DC)
		if m := a.MetricsAddr(); m != "" {
			fmt.Fprintf(&nodes, "   dashboard %s://%s/  metrics %s://%s/metrics", scheme, m, scheme, m)
		}
		if h := a.HTTPAddr(); h != "" {
			fmt.Fprintf(&nodes, "   http %s://%s/v1/", scheme, h)
		}
		nodes.WriteString("\n")
	}
	if sec != nil {
		nodes.WriteString(sec.banner())
	}
	var try strings.Builder
	for _, line := range opts.Try {
		fmt.Fprintf(&try, "  %s\n", tryLine(cmd.Root(), opts.RunAs, line, addrFlag))
	}
	fmt.Fprintf(cmd.OutOrStdout(), `
%s dev is running
%s  etcd          %s
  sink (HTTP)   %s   (deliveries: %s/deliveries)

Try, in another terminal:
%s  curl -s %s/deliveries

Ctrl-C stops everything.
`, opts.Name, nodes.String(), strings.Join(etcd.Endpoints(), ","), sinkURL, sinkURL, try.String(), sinkURL)
	var errs []error
	for _, a := range agents {
		errs = append(errs, a.Wait())
	}
	return errors.Join(errs...)
}

// tryLine is a command of dev's banner: run, then line with addrFlag after
// its subcommand (e.g. "alarm get" --addr … "Batcher foo").
func tryLine(root *cobra.Command, run, line, addrFlag string) string {
	args := strings.Fields(line)
	sub, rest, err := root.Find(args)
	if err != nil || sub == root {
		return run + " " + line
	}
	path := strings.TrimPrefix(sub.CommandPath(), root.Name()+" ")
	return strings.Join(append([]string{run, path + addrFlag}, rest...), " ")
}

// devNodeID is the id of dev node i (from 0).
func devNodeID(i int) string { return fmt.Sprintf("dev-%d", i+1) }

// devCommitMaxOps is the group-commit batch limit of `durable dev`, the
// docker-compose demo and the bench: their etcd accepts 10240 operations per
// Txn, and larger batches gain little (see docs/performance.md).
const devCommitMaxOps = 1024

// devNodeDefaults is the node configuration `durable dev` starts from.
func devNodeDefaults() node.Config {
	d := node.DefaultConfig()
	d.CommitMaxOps = devCommitMaxOps
	return d
}

// devAddrs returns the gRPC addresses of count dev nodes: listen, then the
// following ports (or free ports when listen's port is 0).
func devAddrs(listen string, count int) ([]string, error) {
	if count < 0 || count > 16 {
		return nil, fmt.Errorf("--nodes must be between 0 and 16, got %d", count)
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: bad port", listen)
	}
	addrs := make([]string, count)
	for i := range addrs {
		p := port
		if p != 0 {
			p += i
		}
		addrs[i] = net.JoinHostPort(host, strconv.Itoa(p))
	}
	return addrs, nil
}

// startSink serves a sink configured by opts on addr until ctx ends, over
// HTTPS with tlsFiles' certificate when it names one (read again when it
// changes); it returns a stop function and the sink's base URL.
func startSink(ctx context.Context, log *slog.Logger, addr string, opts sink.Options, tlsFiles security.Files) (func(), string, error) {
	scheme := "http"
	var tlsCfg *tls.Config
	if tlsFiles.Cert != "" || tlsFiles.Key != "" {
		src, err := security.NewSource(tlsFiles)
		if err != nil {
			return nil, "", fmt.Errorf("sink: %w", err)
		}
		scheme, tlsCfg = "https", src.ServerConfig(false)
	}
	opts.Logger = log.With("component", "sink")
	s, err := sink.New(opts)
	if err != nil {
		return nil, "", err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		_ = s.Close()
		return nil, "", fmt.Errorf("sink: listen on %s: %w", addr, err)
	}
	if tlsCfg != nil {
		lis = tls.NewListener(lis, tlsCfg)
	}
	srv := s.HTTPServer()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("sink stopped", "err", err)
		}
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
		_ = s.Close()
	}
	return stop, scheme + "://" + lis.Addr().String(), nil
}

func newSinkCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sink",
		Short: "Run an HTTP sink that records deliveries (the upstream of Batcher and Reminder)",
		Long: "Serve POST /<any path> (records the body and its Idempotency-Key),\n" +
			"GET /deliveries (paged: ?since=SEQ&limit=N, Next-Since header), GET /stats and GET /healthz;\n" +
			"over HTTPS with --tls-cert and --tls-key (nodes then verify it with --upstream-ca)." + envHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			fs := cmd.Flags()
			addr, _ := fs.GetString("listen")
			var opts sink.Options
			opts.File, _ = fs.GetString("file")
			opts.MaxBodyBytes, _ = fs.GetInt64("max-body-bytes")
			opts.MaxRetainedBytes, _ = fs.GetInt64("max-retained-bytes")
			opts.ReadTimeout, _ = fs.GetDuration("read-timeout")
			opts.WriteTimeout, _ = fs.GetDuration("write-timeout")
			opts.IdleTimeout, _ = fs.GetDuration("idle-timeout")
			var files security.Files
			files.Cert, _ = fs.GetString("tls-cert")
			files.Key, _ = fs.GetString("tls-key")
			stop, url, err := startSink(cmd.Context(), log, addr, opts, files)
			if err != nil {
				return err
			}
			log.Info("sink serving", "url", url)
			<-cmd.Context().Done()
			stop()
			return nil
		},
	}
	cmd.Flags().String("listen", "127.0.0.1:4680", "HTTP listen address")
	cmd.Flags().String("tls-cert", "", "serve HTTPS (TLS 1.3) with this certificate (PEM; read again when it changes), e.g. `durable certs --sink`'s")
	cmd.Flags().String("tls-key", "", "private key of --tls-cert (PEM)")
	cmd.Flags().String("file", "", "append deliveries to this JSON-lines file")
	cmd.Flags().Int64("max-body-bytes", sink.DefaultMaxBodyBytes, "largest body accepted (larger: 413)")
	cmd.Flags().Int64("max-retained-bytes", sink.DefaultMaxRetainedBytes, "bodies kept in memory; past it the oldest are dropped (metadata and the file keep them)")
	cmd.Flags().Duration("read-timeout", sink.DefaultReadTimeout, "time to read a whole request, body included (slower: 408)")
	cmd.Flags().Duration("write-timeout", sink.DefaultWriteTimeout, "time to handle a request and write its response")
	cmd.Flags().Duration("idle-timeout", sink.DefaultIdleTimeout, "close keep-alive connections idle this long")
	return cmd
}
