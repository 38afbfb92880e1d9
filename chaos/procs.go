package chaos

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/keyspace"
	"github.com/durable-run/durable/leader"
	"github.com/durable-run/durable/sink"
)

// BuildBinary builds cmd/durable into dir and returns its path.
func BuildBinary(tb testing.TB, dir string) string {
	tb.Helper()
	bin := filepath.Join(dir, "durable")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/durable-run/durable/cmd/durable")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("chaos: build durable: %v\n%s", err, out)
	}
	return bin
}

// ProcOptions configures a process-level cluster.
type ProcOptions struct {
	Bin        string   // the durable binary
	DCs        []string // node i is in DCs[i]
	LeaseTTL   time.Duration
	DCGrace    time.Duration
	Stabilise  time.Duration
	Partitions int
}

// Proc is one `durable agent` process slot.
type Proc struct {
	ID, DC, Addr string
	log          string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	paused bool
}

// Procs is a cluster of real `durable agent` processes on a 3-member
// embedded etcd, delivering to an in-process sink. Faults are signals to
// the processes and stops of etcd members.
type Procs struct {
	tb        testing.TB
	opts      ProcOptions
	Etcd      []*embedetcd.TestMember
	Endpoints []string
	Procs     []*Proc
	SinkURL   string
	prefix    string
}

// StartProcs starts the etcd members, the sink and one agent per DCs entry,
// and waits until every agent is healthy. Everything stops at cleanup.
func StartProcs(tb testing.TB, opts ProcOptions) *Procs {
	tb.Helper()
	c := &Procs{tb: tb, opts: opts, prefix: embedetcd.UniquePrefix(tb)}
	c.Etcd, c.Endpoints = embedetcd.TestCluster(tb, 3)
	s, err := sink.New(sink.Options{Logger: quietLogger()})
	if err != nil {
		tb.Fatalf("chaos: sink: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr, wait, err := s.ListenAndServe(ctx, "127.0.0.1:0")
	if err != nil {
		cancel()
		tb.Fatalf("chaos: sink: %v", err)
	}
	tb.Cleanup(func() { cancel(); _ = wait(); _ = s.Close() })
	c.SinkURL = "http://" + addr
	dir := tb.TempDir()
	count := map[string]int{}
	for _, dc := range opts.DCs {
		count[dc]++
		id := fmt.Sprintf("%s-n%d", dc, count[dc])
		c.Procs = append(c.Procs, &Proc{ID: id, DC: dc, Addr: freeAddr(tb), log: filepath.Join(dir, id+".log")})
	}
	tb.Cleanup(c.stopAll)
	for i := range c.Procs {
		c.Start(i)
	}
	for i := range c.Procs {
		c.WaitHealthy(i)
	}
	return c
}

func freeAddr(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("chaos: pick a port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Addrs returns every node's address, comma-separated (a client target).
func (c *Procs) Addrs() string {
	var out []string
	for _, p := range c.Procs {
		out = append(out, p.Addr)
	}
	return strings.Join(out, ",")
}

// Start starts node i's process (it must not be running).
func (c *Procs) Start(i int) {
	p := c.Procs[i]
	var homes []string
	for _, dc := range c.opts.DCs {
		if !contains(homes, dc) {
			homes = append(homes, dc)
		}
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.tb.Fatalf("chaos: %v", err)
	}
	cmd := exec.Command(c.opts.Bin, "agent",
		"--etcd", strings.Join(c.Endpoints, ","), "--prefix", c.prefix,
		"--node-id", p.ID, "--dc", p.DC, "--home-dcs", strings.Join(homes, ","),
		"--listen", p.Addr, "--upstream", c.SinkURL,
		"--lease-ttl", c.opts.LeaseTTL.String(), "--dc-grace", c.opts.DCGrace.String(),
		"--stabilise", c.opts.Stabilise.String(), "--partitions", fmt.Sprint(c.opts.Partitions),
		"--log-level", logLevel())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.tb.Fatalf("chaos: start %s: %v", p.ID, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited, p.paused = cmd, exited, false
	p.mu.Unlock()
}

// logLevel is the agents' log level: $DURABLE_CHAOS_LOG, default warn.
func logLevel() string {
	if v := os.Getenv("DURABLE_CHAOS_LOG"); v != "" {
		return v
	}
	return "warn"
}

// KeepLogs copies every node's log to dir (for a failed run).
func (c *Procs) KeepLogs(dir string) {
	for _, p := range c.Procs {
		if b, err := os.ReadFile(p.log); err == nil {
			_ = os.WriteFile(filepath.Join(dir, p.ID+".log"), b, 0o644)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// signal sends sig to node i and, for SIGKILL and SIGTERM, waits for it to
// exit.
func (c *Procs) signal(i int, sig syscall.Signal) {
	p := c.Procs[i]
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		if p.paused {
			_ = cmd.Process.Signal(syscall.SIGCONT)
		}
		p.cmd = nil
	}
	p.paused = sig == syscall.SIGSTOP
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
			c.tb.Errorf("chaos: %s did not exit within a minute of %s", p.ID, sig)
		}
	}
}

// Kill SIGKILLs node i; Term SIGTERMs it and waits for its graceful exit;
// Pause SIGSTOPs it; Resume SIGCONTs it.
func (c *Procs) Kill(i int)   { c.signal(i, syscall.SIGKILL) }
func (c *Procs) Term(i int)   { c.signal(i, syscall.SIGTERM) }
func (c *Procs) Pause(i int)  { c.signal(i, syscall.SIGSTOP) }
func (c *Procs) Resume(i int) { c.signal(i, syscall.SIGCONT) }

func (c *Procs) stopAll() {
	for i := range c.Procs {
		c.Term(i)
	}
}

// WaitHealthy waits (up to a minute) until node i reports SERVING.
func (c *Procs) WaitHealthy(i int) {
	c.tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if err := probe(c.Procs[i].Addr); err == nil {
			return
		} else if time.Now().After(deadline) {
			c.tb.Fatalf("chaos: %s not healthy after a minute: %v\n%s", c.Procs[i].ID, err, c.LogTail(i))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func probe(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s", resp.GetStatus())
	}
	return nil
}

// Leader returns the index of dc's leader, or -1.
func (c *Procs) Leader(dc string) int {
	ids := make([]string, len(c.Procs))
	for i, p := range c.Procs {
		ids[i] = p.ID
	}
	return leaderIndex(c.Endpoints, nil, c.prefix, dc, ids)
}

// leaderIndex reads dc's leader from the election keys under prefix (not
// from a node's status, which is slow under load) and returns its index in
// ids, or -1.
func leaderIndex(endpoints []string, tlsCfg *tls.Config, prefix, dc string, ids []string) int {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return -1
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ls, err := leader.Leaders(ctx, cli, keyspace.New(prefix))
	if err != nil {
		return -1
	}
	for _, l := range ls {
		if l.DC == dc {
			for i, id := range ids {
				if id == l.Node {
					return i
				}
			}
		}
	}
	return -1
}

// StopEtcd closes etcd member i; StartEtcd restarts it from its data.
func (c *Procs) StopEtcd(i int) {
	if err := c.Etcd[i].Server.Close(); err != nil {
		c.tb.Errorf("chaos: stop etcd member %d: %v", i, err)
	}
}

func (c *Procs) StartEtcd(i int) {
	srv, err := embedetcd.Start(context.Background(), c.Etcd[i].Config)
	if err != nil {
		c.tb.Fatalf("chaos: restart etcd member %d: %v", i, err)
	}
	c.Etcd[i].Server = srv
}

// LogTail returns the end of node i's log.
func (c *Procs) LogTail(i int) string {
	b, _ := os.ReadFile(c.Procs[i].log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Procs is a Target.
var _ Target = (*Procs)(nil)

func (c *Procs) Nodes() int           { return len(c.Procs) }
func (c *Procs) DC(i int) string      { return c.Procs[i].DC }
func (c *Procs) ClientTarget() string { return c.Addrs() }

// ClientOptions: the processes serve plaintext on loopback.
func (c *Procs) ClientOptions() client.Options { return client.Options{} }
func (c *Procs) ID(i int) string               { return c.Procs[i].ID }
func (c *Procs) Restart(i int)                 { c.Start(i); c.WaitHealthy(i) }
func (c *Procs) EtcdMembers() int              { return len(c.Etcd) }

// Disconnect is not supported for processes sharing the host's loopback.
func (c *Procs) Disconnect(int) error { return ErrUnsupported }
func (c *Procs) Reconnect(int) error  { return ErrUnsupported }
