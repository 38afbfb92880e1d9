package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/sink"
)

func newDevCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a development cluster: embedded etcd, a node with the example classes, and a sink",
		Long: "Run everything on loopback in one process: an embedded etcd, a durable node\n" +
			"serving the example classes (Batcher, Counter, Reminder, Cleaner), and a sink\n" +
			"that records what Batcher and Reminder deliver. Ctrl-C stops it cleanly." + envHelp,
		Args: cobra.NoArgs,
		RunE: runDev,
	}
	fs := cmd.Flags()
	fs.String("data-dir", "", "etcd data directory (default: a temporary directory removed on exit)")
	fs.String("etcd-listen", "127.0.0.1:2379", "client address of the embedded etcd")
	fs.String("listen", defaultAddr, "gRPC address of the node")
	fs.String("sink-listen", "127.0.0.1:4680", "HTTP address of the sink the example classes deliver to")
	fs.String("sink-file", "", "also append the sink's deliveries to this JSON-lines file")
	nodeFlags(fs)
	return cmd
}

func runDev(cmd *cobra.Command, _ []string) error {
	ctx := cmd.Context()
	fs := cmd.Flags()
	log, err := newLogger(cmd)
	if err != nil {
		return err
	}

	ecfg := embedetcd.DefaultConfig()
	ecfg.Dir, _ = fs.GetString("data-dir")
	ecfg.ClientAddr, _ = fs.GetString("etcd-listen")
	ecfg.PeerAddr = "127.0.0.1:0"
	ecfg.Logger = log.With("component", "etcd")
	etcd, err := embedetcd.Start(ctx, ecfg)
	if err != nil {
		return fmt.Errorf("start embedded etcd: %w", err)
	}
	defer etcd.Close()

	sinkAddr, _ := fs.GetString("sink-listen")
	sinkFile, _ := fs.GetString("sink-file")
	stopSink, sinkURL, err := startSink(ctx, log, sinkAddr, sinkFile)
	if err != nil {
		return err
	}
	defer stopSink()
	if !fs.Changed("upstream") {
		if err := fs.Set("upstream", sinkURL); err != nil {
			return err
		}
	}

	cfg := agent.Config{Node: nodeConfig(fs), Etcd: etcd.Endpoints()}
	cfg.Node.ID, cfg.Node.DC, cfg.Node.Logger = "dev-1", "dc1", log
	cfg.Listen, _ = fs.GetString("listen")
	reg, err := exampleRegistry(fs)
	if err != nil {
		return err
	}
	a, err := agent.Start(ctx, cfg, reg)
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = a.Node.WaitReady(waitCtx)
	cancel()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("node did not become ready: %w", err)
	}
	addrFlag := ""
	if a.Addr() != defaultAddr {
		addrFlag = " --addr " + a.Addr()
	}
	fmt.Fprintf(cmd.OutOrStdout(), `
durable dev is running
  node (gRPC)   %s
  etcd          %s
  sink (HTTP)   %s   (deliveries: %s/deliveries)

Try, in another terminal:
  go run ./cmd/durable invoke%s Batcher foo add hello
  go run ./cmd/durable alarm get%s Batcher foo
  go run ./cmd/durable status%s
  curl -s %s/deliveries

Ctrl-C stops everything.
`, a.Addr(), strings.Join(etcd.Endpoints(), ","), sinkURL, sinkURL, addrFlag, addrFlag, addrFlag, sinkURL)
	return a.Wait()
}

// startSink serves a sink on addr until ctx ends; it returns a stop function
// and the sink's base URL.
func startSink(ctx context.Context, log *slog.Logger, addr, file string) (func(), string, error) {
	s, err := sink.New(sink.Options{File: file, Logger: log.With("component", "sink")})
	if err != nil {
		return nil, "", err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("sink: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
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
	return stop, "http://" + lis.Addr().String(), nil
}

func newSinkCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sink",
		Short: "Run an HTTP sink that records deliveries (the upstream of Batcher and Reminder)",
		Long: "Serve POST /<any path> (records the body and its Idempotency-Key),\n" +
			"GET /deliveries, GET /stats and GET /healthz." + envHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			addr, _ := cmd.Flags().GetString("listen")
			file, _ := cmd.Flags().GetString("file")
			stop, url, err := startSink(cmd.Context(), log, addr, file)
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
	cmd.Flags().String("file", "", "append deliveries to this JSON-lines file")
	return cmd
}
