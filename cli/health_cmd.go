package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/security"
)

// newHealthCmd probes a node's gRPC health service, an etcd member or an
// HTTP endpoint; container health checks use it because scratch images have
// no shell or curl.
func newHealthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if the node at --addr reports SERVING (or the etcd member at --probe-etcd has a leader, or --probe-http answers 200)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			etcd, _ := fs.GetString("probe-etcd")
			url, _ := fs.GetString("probe-http")
			timeout, _ := fs.GetDuration("timeout")
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			switch {
			case etcd != "" && url != "":
				return usageError{errors.New("give --probe-etcd or --probe-http, not both")}
			}
			sec, err := clientSecurity(fs)
			if err != nil {
				return err
			}
			var tlsCfg *tls.Config
			if sec.Enabled() || strings.HasPrefix(etcd, "https://") || strings.HasPrefix(url, "https://") {
				src, err := security.NewSource(sec.TLS)
				if err != nil {
					return err
				}
				tlsCfg = src.ClientConfig(sec.ServerName)
			}
			switch {
			case etcd != "":
				return etcdHealth(ctx, cmd, etcd, tlsCfg)
			case url != "":
				return httpHealth(ctx, cmd, url, tlsCfg)
			}
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := healthpb.NewHealthClient(c.Conn()).Check(ctx, &healthpb.HealthCheckRequest{})
				if err != nil {
					return err
				}
				if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					return fmt.Errorf("node is %s", resp.GetStatus())
				}
				fmt.Fprintln(cmd.OutOrStdout(), "SERVING")
				return nil
			})
		},
	}
	addClientFlags(cmd, 3*time.Second)
	cmd.Flags().String("probe-etcd", "", "probe this etcd member's client URL instead: healthy when it knows a raft leader")
	cmd.Flags().String("probe-http", "", "probe this URL instead: healthy when it answers 200")
	return cmd
}

func etcdHealth(ctx context.Context, cmd *cobra.Command, endpoint string, tlsCfg *tls.Config) error {
	if !strings.HasPrefix(endpoint, "https://") {
		tlsCfg = nil
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop(), TLS: tlsCfg})
	if err != nil {
		return err
	}
	defer cli.Close()
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", endpoint, err)
	}
	if st.Leader == 0 {
		return fmt.Errorf("etcd %s has no leader", endpoint)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "etcd member %x healthy, leader %x\n", st.Header.MemberId, st.Leader)
	return nil
}

func httpHealth(ctx context.Context, cmd *cobra.Command, url string, tlsCfg *tls.Config) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{err}
	}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	fmt.Fprintln(cmd.OutOrStdout(), "OK")
	return nil
}
