package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/durable-run/durable/client"
)

// newHealthCmd probes a node's gRPC health service; container health checks
// use it because scratch images have no shell or curl.
func newHealthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if the node at --addr reports SERVING",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
	return cmd
}
