package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/attribute"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/tracing"
)

// nodeFlags registers the flags shared by `agent` and `dev` that fill a
// node.Config, with the command's own defaults d, so that --help shows the
// values the command uses. With opts.RegisterUpstream it also registers
// --upstream, whose default is upstream; empty means the command picks one
// itself (dev: its sink).
func nodeFlags(fs *pflag.FlagSet, opts Options, d node.Config, upstream, upstreamHelp string) {
	fs.String("prefix", d.Prefix, "etcd key prefix of the cluster")
	fs.Int("partitions", d.Partitions, "partition count when creating a new cluster")
	fs.Duration("lease-ttl", d.LeaseTTL, "TTL of the node's etcd lease and leader session (whole seconds)")
	fs.StringSlice("home-dcs", nil, "data centers partitions are homed in, spread evenly, when creating a new cluster (default: the node's --dc)")
	fs.Duration("dc-grace", d.DCGrace, "a data center without a live node this long has its partitions adopted by another")
	fs.Duration("stabilise", d.Stabilise, "adopted partitions go home after their data center has been healthy this long")
	fs.Duration("idle-timeout", d.IdleTimeout, "evict objects idle for this long")
	fs.Duration("alarm-window", d.AlarmWindow, "look-ahead window of alarms held in memory")
	fs.Int("queue-size", d.QueueSize, "events that may wait for one object before calls are refused")
	fs.Int("commit-max-ops", d.CommitMaxOps, "most write operations group commit puts in one etcd Txn: etcd's --max-txn-ops (learned lower if etcd refuses)")
	fs.Int("commit-max-bytes", d.CommitMaxBytes, "most bytes group commit puts in one etcd Txn: below etcd's --max-request-bytes")
	fs.Int("commit-parallelism", d.CommitParallelism, "group-commit Txns in flight at once")
	fs.Int("max-running-alarms", d.MaxRunningAlarms, "alarms handed to objects at once; more due alarms wait their turn")
	fs.Int("max-calls", d.MaxCalls, "invocations running or queued on the node at once; admission control lowers it under pressure, more are refused as OVERLOADED")
	fs.Int("min-calls", d.MinCalls, "the floor admission control never lowers --max-calls below")
	fs.Int("max-active-objects", d.MaxActiveObjects, "objects in memory at once; more activations are refused (alarms wait)")
	fs.Float64("max-activation-rate", d.MaxActivationRate, "new activations per second at full admission")
	fs.Duration("commit-latency-target", d.CommitLatencyTarget, "commit round trips above this count as pressure for admission control")
	fs.Duration("call-latency-target", d.CallLatencyTarget, "a mean time per call on the node above this counts as pressure for admission control (0: not watched)")
	fs.Int("max-reply-bytes", d.MaxReplyBytes, "largest invocation reply; a larger one fails the call before its writes commit")
	fs.Duration("forward-timeout", d.ForwardTimeout, "bound one forward to another node (0: none; a forward ends anyway when the owner changes)")
	fs.String("debug-listen", "", "serve the process's profiles (net/http/pprof) over HTTP at this address; off if empty")
	if opts.RegisterUpstream != nil {
		fs.String("upstream", upstream, "URL the classes deliver to (e.g. a durable sink)"+upstreamHelp)
		fs.String("upstream-ca", "", "CA bundle (PEM) that verifies an https --upstream's certificate instead of the system's roots (e.g. the sink's, from `durable certs --sink`)")
	}
}

func nodeConfig(fs *pflag.FlagSet) node.Config {
	c := node.DefaultConfig()
	c.Prefix, _ = fs.GetString("prefix")
	c.Partitions, _ = fs.GetInt("partitions")
	c.LeaseTTL, _ = fs.GetDuration("lease-ttl")
	if dcs, _ := fs.GetStringSlice("home-dcs"); len(dcs) > 0 {
		c.HomeDCs = dcs
	}
	c.DCGrace, _ = fs.GetDuration("dc-grace")
	c.Stabilise, _ = fs.GetDuration("stabilise")
	c.IdleTimeout, _ = fs.GetDuration("idle-timeout")
	c.AlarmWindow, _ = fs.GetDuration("alarm-window")
	c.QueueSize, _ = fs.GetInt("queue-size")
	c.CommitMaxOps, _ = fs.GetInt("commit-max-ops")
	c.CommitMaxBytes, _ = fs.GetInt("commit-max-bytes")
	c.CommitParallelism, _ = fs.GetInt("commit-parallelism")
	c.MaxRunningAlarms, _ = fs.GetInt("max-running-alarms")
	c.MaxCalls, _ = fs.GetInt("max-calls")
	c.MinCalls, _ = fs.GetInt("min-calls")
	c.MaxActiveObjects, _ = fs.GetInt("max-active-objects")
	c.MaxActivationRate, _ = fs.GetFloat64("max-activation-rate")
	c.CommitLatencyTarget, _ = fs.GetDuration("commit-latency-target")
	c.CallLatencyTarget, _ = fs.GetDuration("call-latency-target")
	c.MaxReplyBytes, _ = fs.GetInt("max-reply-bytes")
	c.ForwardTimeout, _ = fs.GetDuration("forward-timeout")
	return c
}

func newAgentCmd(opts Options) *cobra.Command {
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run one node of a cluster",
		Long: "Run one durable node with " + opts.Name + "'s classes, joining the cluster stored in etcd.\n" +
			"Traces go to an OTLP collector when the OpenTelemetry environment asks for one\n" +
			"(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER=otlp); off otherwise." + envHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			cfg := agent.Config{Node: nodeConfig(fs)}
			cfg.Node.Logger = log
			cfg.Node.ID, _ = fs.GetString("node-id")
			cfg.Node.DC, _ = fs.GetString("dc")
			cfg.Node.Advertise, _ = fs.GetString("advertise")
			cfg.Etcd, _ = fs.GetStringSlice("etcd")
			cfg.Listen, _ = fs.GetString("listen")
			cfg.DebugListen, _ = fs.GetString("debug-listen")
			cfg.MetricsListen, _ = fs.GetString("metrics-listen")
			cfg.HTTPListen, _ = fs.GetString("http-listen")
			cfg.Pprof, _ = fs.GetBool("pprof")
			if err := nodeSecurity(fs, &cfg); err != nil {
				return err
			}
			if cfg.Security.HTTPAllowedHosts, err = allowedHosts(fs); err != nil {
				return err
			}
			if cfg.EtcdTLS, err = etcdTLS(fs); err != nil {
				return err
			}
			reg, err := registry(opts, fs)
			if err != nil {
				return err
			}
			tp, stopTracing, err := tracing.FromEnv(cmd.Context(), attribute.String("durable.node", cfg.Node.ID), attribute.String("durable.dc", cfg.Node.DC))
			if err != nil {
				return err
			}
			defer stopTracing(context.WithoutCancel(cmd.Context()))
			cfg.Node.TracerProvider = tp
			a, err := agent.Start(cmd.Context(), cfg, reg)
			if err != nil {
				return err
			}
			log.Info("agent serving", "addr", a.Addr(), "node", cfg.Node.ID, "dc", cfg.Node.DC)
			if d := a.DebugAddr(); d != "" {
				log.Info("profiles served", "url", "http://"+d+"/debug/pprof/")
			}
			if m := a.MetricsAddr(); m != "" {
				log.Info("metrics served", "url", "http://"+m+"/metrics")
			}
			return a.Wait()
		},
	}
	fs := cmd.Flags()
	addEtcdFlags(fs)
	fs.String("node-id", host, "unique id of this node")
	fs.String("dc", "dc1", "data center of this node")
	fs.String("listen", defaultAddr, "gRPC listen address")
	fs.String("advertise", "", "gRPC address other nodes and clients use (default: the listen address)")
	addNodeSecurityFlags(fs)
	fs.String("metrics-listen", "", "serve Prometheus metrics (/metrics) and health (/healthz) over HTTP at this address; off if empty")
	fs.String("http-listen", "", "serve invocations and the Admin API as HTTP/JSON at this address (POST /v1/objects/{class}/{name}/{method}, /v1/admin/…; see docs/operations.md); off if empty")
	fs.Bool("pprof", false, "also serve the process's profiles under /debug/pprof/ on --metrics-listen")
	addAllowedHostsFlag(fs)
	nodeFlags(fs, opts, node.DefaultConfig(), "http://127.0.0.1:4680", "")
	return cmd
}

func etcdTLS(fs *pflag.FlagSet) (*tls.Config, error) {
	ca, _ := fs.GetString("etcd-ca")
	cert, _ := fs.GetString("etcd-cert")
	key, _ := fs.GetString("etcd-key")
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("read --etcd-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca %s holds no PEM certificate", ca)
		}
		cfg.RootCAs = pool
	}
	if cert != "" || key != "" {
		if cert == "" || key == "" {
			return nil, usageError{fmt.Errorf("--etcd-cert and --etcd-key go together")}
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("load etcd key pair: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
