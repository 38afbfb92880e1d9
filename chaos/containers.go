package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/security"
)

// Compose is the docker-compose demo cluster as a chaos Target: faults are
// `docker kill`, `docker pause` and `docker network disconnect` of its
// containers. It is started under its own project name and host ports, and
// torn down (volumes included) at cleanup, even when the test fails.
type Compose struct {
	tb      testing.TB
	root    string // repository root (holds docker-compose.yml)
	project string
	env     []string
	nodes   []string // services of the durable nodes
	dcs     []string
	etcd    []string // services of the etcd members
	// SinkURL and Addrs are the host's view of the sink and the nodes.
	etcdURL string
	certs   security.Paths // the demo's, from make images
	SinkURL string
	// SinkHTTP reads the sink, verifying its certificate with the demo's CA.
	SinkHTTP *http.Client
	Addrs    []string
}

// DockerAvailable reports whether a Docker engine and docker-compose answer.
func DockerAvailable() error {
	if err := exec.Command("docker", "info").Run(); err != nil {
		return fmt.Errorf("docker engine: %w", err)
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		return fmt.Errorf("docker-compose: %w", err)
	}
	return nil
}

// StartCompose builds the images (make images) and brings the demo up as
// project, with host ports 127.0.0.1:<prefix>01-05 for the nodes,
// <prefix>80 for the sink and etcdPort for etcd.
func StartCompose(tb testing.TB, project, portPrefix, etcdPort string) *Compose {
	tb.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		tb.Fatal(err)
	}
	c := &Compose{
		tb: tb, root: root, project: project,
		env:   append(os.Environ(), "DURABLE_PORT_PREFIX="+portPrefix, "DURABLE_ETCD_PORT="+etcdPort),
		nodes: []string{"dc1-n1", "dc1-n2", "dc1-n3", "dc2-n1", "dc2-n2"},
		dcs:   []string{"dc1", "dc1", "dc1", "dc2", "dc2"},
		etcd:  []string{"etcd1", "etcd2", "etcd3"},
	}
	c.SinkURL = "https://127.0.0.1:" + portPrefix + "80"
	c.etcdURL = "https://127.0.0.1:" + etcdPort
	for i := range c.nodes {
		c.Addrs = append(c.Addrs, fmt.Sprintf("127.0.0.1:%s0%d", portPrefix, i+1))
	}
	c.run(10*time.Minute, "make", "images") // and deploy/certs
	c.certs = security.Paths{Dir: filepath.Join(root, "deploy", "certs")}
	src, err := security.NewSource(security.Files{CA: c.certs.CA()})
	if err != nil {
		tb.Fatalf("chaos: the demo's CA: %v", err)
	}
	c.SinkHTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: src.ClientConfig("")}}
	tb.Cleanup(c.down)
	c.compose(5*time.Minute, "up", "-d")
	for i := range c.nodes {
		c.waitHealthy(c.nodes[i])
	}
	return c
}

// run runs a command in the repository root and fails tb if it fails.
func (c *Compose) run(timeout time.Duration, name string, args ...string) string {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = c.root, c.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		c.tb.Fatalf("chaos: %s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return strings.TrimSpace(out.String())
}

func (c *Compose) compose(timeout time.Duration, args ...string) string {
	c.tb.Helper()
	return c.run(timeout, "docker-compose", append([]string{"-p", c.project}, args...)...)
}

// down tears the project down; on a failed test it logs the nodes' logs
// first.
func (c *Compose) down() {
	if c.tb.Failed() || os.Getenv("DURABLE_CHAOS_LOGS") != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, _ := exec.CommandContext(ctx, "docker-compose", "-p", c.project, "logs", "--no-color").CombinedOutput()
		cancel()
		if f, err := os.CreateTemp("", "durable-chaos-compose-*.log"); err == nil {
			_, _ = f.Write(out)
			f.Close()
			c.tb.Logf("compose logs written to %s", f.Name())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-compose", "-p", c.project, "down", "-v", "--remove-orphans", "-t", "5")
	cmd.Dir, cmd.Env = c.root, c.env
	if out, err := cmd.CombinedOutput(); err != nil {
		c.tb.Errorf("chaos: compose down: %v\n%s", err, out)
	}
}

// container returns the container id of a service.
func (c *Compose) container(service string) string {
	c.tb.Helper()
	id := c.compose(time.Minute, "ps", "-q", service)
	if id == "" {
		c.tb.Fatalf("chaos: no container for %s", service)
	}
	return id
}

func (c *Compose) docker(args ...string) {
	c.tb.Helper()
	c.run(2*time.Minute, "docker", args...)
}

// waitHealthy waits until the service's container reports healthy.
func (c *Compose) waitHealthy(service string) {
	c.tb.Helper()
	id := c.container(service)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, _ := exec.Command("docker", "inspect", "-f", "{{.State.Health.Status}}", id).Output()
		if strings.TrimSpace(string(out)) == "healthy" {
			return
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("chaos: %s not healthy after 2 minutes (%s)", service, strings.TrimSpace(string(out)))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// network is the project's default network.
func (c *Compose) network() string { return c.project + "_default" }

var _ Target = (*Compose)(nil)

func (c *Compose) Nodes() int           { return len(c.nodes) }
func (c *Compose) DC(i int) string      { return c.dcs[i] }
func (c *Compose) ClientTarget() string { return strings.Join(c.Addrs, ",") }

// ClientOptions call the demo's mutual-TLS nodes as its admin client.
func (c *Compose) ClientOptions() client.Options {
	dial, err := security.ClientConfig{TLS: c.certs.Client("admin")}.DialOptions()
	if err != nil {
		c.tb.Fatalf("chaos: the demo's admin certificate: %v", err)
	}
	return client.Options{DialOptions: dial}
}
func (c *Compose) ID(i int) string  { return c.nodes[i] }
func (c *Compose) Kill(i int)       { c.docker("kill", c.container(c.nodes[i])) }
func (c *Compose) Pause(i int)      { c.docker("pause", c.container(c.nodes[i])) }
func (c *Compose) Resume(i int)     { c.docker("unpause", c.container(c.nodes[i])) }
func (c *Compose) EtcdMembers() int { return len(c.etcd) }
func (c *Compose) StopEtcd(i int)   { c.docker("kill", c.container(c.etcd[i])) }
func (c *Compose) StartEtcd(i int) {
	c.docker("start", c.container(c.etcd[i]))
	c.waitHealthy(c.etcd[i])
}

func (c *Compose) Restart(i int) {
	c.docker("start", c.container(c.nodes[i]))
	c.waitHealthy(c.nodes[i])
}

func (c *Compose) Disconnect(i int) error {
	c.docker("network", "disconnect", c.network(), c.container(c.nodes[i]))
	return nil
}

func (c *Compose) Reconnect(i int) error {
	c.docker("network", "connect", "--alias", c.nodes[i], c.network(), c.container(c.nodes[i]))
	return nil
}

// Leader returns the index of dc's leader, read from the election keys in
// etcd (through the published etcd1).
func (c *Compose) Leader(dc string) int {
	// As etcd's root user, by its client certificate.
	src, err := security.NewSource(c.certs.EtcdClient("root"))
	if err != nil {
		c.tb.Errorf("chaos: etcd's root certificate: %v", err)
		return -1
	}
	return leaderIndex([]string{c.etcdURL}, src.ClientConfig(""), "/durable/", dc, c.nodes)
}
