package chaos

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestChaosContainers runs the workload against the docker-compose cluster
// (3 etcd members, dc1: 3 nodes, dc2: 2 nodes) while containers are killed,
// paused and cut off the network. It needs Docker: without it the test is
// skipped, except under CI=true, where that is a failure.
func TestChaosContainers(t *testing.T) {
	skipIfShort(t)
	if err := DockerAvailable(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and Docker is not usable: %v", err)
		}
		t.Skipf("Docker is not usable: %v", err)
	}
	duration, seed, names := profile(t, []string{"kill-node", "kill-leader", "pause-node", "cut-node", "kill-dc", "kill-etcd", "overload", "cpu-starve"})
	c := StartCompose(t, "durable-chaos", "56", "5379")
	// The compose file's defaults.
	tm := Timing{LeaseTTL: 3 * time.Second, DCGrace: 10 * time.Second, Stabilise: 10 * time.Second}
	Run(t, c, strings.Join(c.Addrs, ","), c.SinkURL, RunOptions{Duration: duration, Seed: seed, Faults: names, Timing: tm, SinkHTTP: c.SinkHTTP})
}
