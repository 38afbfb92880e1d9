package agent_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/examples"
	"github.com/durable-run/durable/metrics"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
	"github.com/durable-run/durable/security"
)

// testPKI issues the certificates of a secured test cluster into a
// directory.
type testPKI struct {
	t   *testing.T
	ca  *security.Authority
	dir string
}

func newTestPKI(t *testing.T) *testPKI {
	ca, err := security.NewAuthority("durable test CA", time.Hour)
	require.NoError(t, err)
	p := &testPKI{t: t, ca: ca, dir: t.TempDir()}
	require.NoError(t, os.WriteFile(filepath.Join(p.dir, "ca.pem"), ca.CertPEM, 0o600))
	return p
}

func (p *testPKI) issue(file string, leaf security.Leaf) security.Files {
	p.t.Helper()
	leaf.Hosts = []string{"127.0.0.1", "localhost"}
	is, err := p.ca.Issue(leaf)
	require.NoError(p.t, err)
	f := security.Files{CA: filepath.Join(p.dir, "ca.pem"), Cert: filepath.Join(p.dir, file+".pem"), Key: filepath.Join(p.dir, file+"-key.pem")}
	require.NoError(p.t, os.WriteFile(f.Cert, is.CertPEM, 0o600))
	require.NoError(p.t, os.WriteFile(f.Key, is.KeyPEM, 0o600))
	return f
}

func (p *testPKI) node(id string) security.Files {
	return p.issue(id, security.Leaf{Identity: security.Identity{Kind: security.Node, Name: id}, Server: true, Client: true})
}

func (p *testPKI) client(name string) security.Files {
	return p.issue("client-"+name, security.Leaf{Identity: security.Identity{Kind: security.Client, Name: name}, Client: true})
}

func (p *testPKI) policy(json string) string {
	file := filepath.Join(p.dir, "auth.json")
	require.NoError(p.t, os.WriteFile(file, []byte(json), 0o600))
	return file
}

// dialSecure dials target with cfg's credentials, closed at cleanup.
func dialSecure(t *testing.T, target string, cfg security.ClientConfig, opts client.Options) *client.Client {
	dial, err := cfg.DialOptions()
	require.NoError(t, err)
	opts.DialOptions = dial
	c, err := client.Dial(target, opts)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func registerExamples(reg *node.Registry) error {
	return examples.Register(reg, examples.Config{Upstream: "http://127.0.0.1:1"})
}

func TestSecureClusterForwardsOverMutualTLSAndChecksRoles(t *testing.T) {
	p := newTestPKI(t)
	policy := p.policy(`{"clients": {
	  "ops": {"roles": ["admin", "invoke"]},
	  "loadgen": {"roles": ["invoke"], "classes": ["Counter"]}
	}}`)
	c := nodetest.Start(t, nodetest.Options{Nodes: 3, Register: registerExamples, Agent: func(cfg *agent.Config) {
		cfg.Security = agent.Security{TLS: p.node(cfg.Node.ID), Policy: policy}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Every call goes through node 0, which forwards two thirds of them to
	// their owners over mutual TLS with its node certificate.
	ops := dialSecure(t, c.Addr(0), security.ClientConfig{TLS: p.client("ops")}, client.Options{NoDirect: true})
	for i := range 24 {
		_, err := ops.Invoke(ctx, "Counter", client.ByName(fmt.Sprint("c", i)), "increment", nil)
		require.NoError(t, err, "call %d", i)
	}
	fwd := metrics.Value(c.Agent(0).Metrics().Forwards.WithLabelValues(codes.OK.String()))
	require.Positive(t, fwd, "some calls were forwarded")

	loadgen := dialSecure(t, c.Addr(0), security.ClientConfig{TLS: p.client("loadgen")}, client.Options{NoDirect: true})
	_, err := loadgen.Invoke(ctx, "Counter", client.ByName("c1"), "increment", nil)
	require.NoError(t, err)
	_, err = loadgen.Invoke(ctx, "Batcher", client.ByName("b"), "add", []byte("x"))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "invoke on Counter only: %v", err)
	_, err = loadgen.Admin().Drain(ctx, &durablev1.DrainRequest{})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "invoke cannot drain: %v", err)

	// A client certificate cannot pose as a node forwarding a call.
	fctx := metadata.AppendToOutgoingContext(ctx, "durable-hops", "1")
	_, err = durablev1.NewObjectsClient(loadgen.Conn()).Invoke(fctx, &durablev1.InvokeRequest{
		Class: "Counter", Object: &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: "c1"}}, Method: "increment"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Positive(t, metrics.Value(c.Agent(0).Metrics().AuthRefusals.WithLabelValues("permission_denied", "/durable.v1.Objects/Invoke")))

	// No certificate, a plaintext client, another CA's certificate: refused
	// at the handshake.
	other := newTestPKI(t)
	for name, cfg := range map[string]security.ClientConfig{
		"no certificate": {TLS: security.Files{CA: filepath.Join(p.dir, "ca.pem")}},
		"another CA's":   {TLS: security.Files{CA: filepath.Join(p.dir, "ca.pem"), Cert: other.client("ops").Cert, Key: other.client("ops").Key}},
	} {
		cl := dialSecure(t, c.Addr(1), cfg, client.Options{NoDirect: true, MaxAttempts: 1})
		_, err := cl.Invoke(ctx, "Counter", client.ByName("c1"), "increment", nil)
		require.Equal(t, codes.Unavailable, status.Code(err), "%s: %v", name, err)
	}
	plain, err := client.Dial(c.Addr(1), client.Options{NoDirect: true, MaxAttempts: 1})
	require.NoError(t, err)
	defer plain.Close()
	_, err = plain.Admin().Drain(ctx, &durablev1.DrainRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "a plaintext drain is refused: %v", err)
}

func TestTokensAuthenticateWhenClientCertificatesAreOptional(t *testing.T) {
	p := newTestPKI(t)
	policy := p.policy(`{"tokens": [
	  {"name": "reader", "sha256": "` + security.TokenSHA256("read-token") + `", "roles": ["read"]},
	  {"name": "ops", "sha256": "` + security.TokenSHA256("admin-token") + `", "roles": ["admin"]}
	]}`)
	h := nodetest.StartOne(t, nodetest.Options{Register: registerExamples, Agent: func(cfg *agent.Config) {
		cfg.Security = agent.Security{TLS: p.node(cfg.Node.ID), Policy: policy, ClientCertOptional: true}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ca := security.Files{CA: filepath.Join(p.dir, "ca.pem")}
	anon := dialSecure(t, h.Addr(), security.ClientConfig{TLS: ca}, client.Options{MaxAttempts: 1})
	_, err := anon.Admin().Drain(ctx, &durablev1.DrainRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "an unauthenticated drain is refused: %v", err)

	reader := dialSecure(t, h.Addr(), security.ClientConfig{TLS: ca, Token: "read-token"}, client.Options{MaxAttempts: 1})
	_, err = reader.Admin().Status(ctx, &durablev1.StatusRequest{})
	require.NoError(t, err)
	_, err = reader.Admin().Drain(ctx, &durablev1.DrainRequest{})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = reader.Invoke(ctx, "Counter", client.ByName("c"), "get", nil)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	wrong := dialSecure(t, h.Addr(), security.ClientConfig{TLS: ca, Token: "guess"}, client.Options{MaxAttempts: 1})
	_, err = wrong.Admin().Status(ctx, &durablev1.StatusRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.False(t, h.Agent(0).Member.Health().Draining, "no refused drain drained the node")
}

func TestCertificateRotationWhileCallsRun(t *testing.T) {
	p := newTestPKI(t)
	var files security.Files
	h := nodetest.StartOne(t, nodetest.Options{Register: registerExamples, Agent: func(cfg *agent.Config) {
		files = p.node(cfg.Node.ID)
		cfg.Security = agent.Security{TLS: files}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := dialSecure(t, h.Addr(), security.ClientConfig{TLS: p.client("ops")}, client.Options{})

	var calls, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := cl.Invoke(ctx, "Counter", client.ByName(fmt.Sprint("r", i%8)), "increment", nil); err != nil {
				failed.Add(1)
				t.Logf("call failed during rotation: %v", err)
			}
			calls.Add(1)
		}
	})

	// The node's certificate files are replaced by a new certificate of the
	// same CA: new connections get it, calls go on.
	serving := func() string {
		conn, err := tls.Dial("tcp", h.Addr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			return ""
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serving()
	require.NotEmpty(t, before)
	fresh := p.issue("fresh", security.Leaf{Identity: security.Identity{Kind: security.Node, Name: h.Config.ID}, Server: true, Client: true})
	for _, pair := range [][2]string{{fresh.Cert, files.Cert}, {fresh.Key, files.Key}} {
		b, err := os.ReadFile(pair[0])
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(pair[1]+".tmp", b, 0o600))
		require.NoError(t, os.Rename(pair[1]+".tmp", pair[1])) // as a rotation tool does: never half-written
		require.NoError(t, os.Chtimes(pair[1], time.Now(), time.Now().Add(time.Hour)))
	}
	h.WaitFor("the new certificate served", func() bool { s := serving(); return s != "" && s != before })
	h.WaitFor("calls after the rotation", func() bool { return calls.Load() > 50 })
	close(stop)
	wg.Wait()
	assert.Zero(t, failed.Load(), "no call failed during the rotation")
	assert.Equal(t, 1.0, metrics.Value(h.Agent(0).Metrics().Reloads.WithLabelValues("tls", "ok")))
}

func TestNodeCertificateMustNameTheNode(t *testing.T) {
	p := newTestPKI(t)
	c := nodetest.Start(t, nodetest.Options{Nodes: 1, Register: registerExamples, Agent: func(cfg *agent.Config) {
		cfg.Security = agent.Security{TLS: p.node(cfg.Node.ID)}
	}})
	cfg := c.Agent(0).Config()
	cfg.Listen = "127.0.0.1:0"
	cfg.Node.ID = "imposter"
	cfg.Node.Advertise = ""
	_, err := agent.Start(context.Background(), cfg, c.Registry())
	require.ErrorContains(t, err, `names node "node-0", not "imposter"`)
}

func TestEtcdAuthGivesTheNodeItsPrefixOnly(t *testing.T) {
	srv := embedetcd.Test(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	setup := agent.EtcdAuthSetup{Endpoints: srv.Endpoints(), RootPassword: "root-pw", User: "node", Password: "node-pw", Prefix: "/secure/"}
	require.NoError(t, agent.SetupEtcdAuth(ctx, setup))
	require.NoError(t, agent.SetupEtcdAuth(ctx, setup), "running it again on an etcd with auth is fine")

	reg := node.NewRegistry()
	require.NoError(t, registerExamples(reg))
	cfg := agent.Config{Node: node.DefaultConfig(), Etcd: srv.Endpoints(), Listen: "127.0.0.1:0"}
	cfg.Node.ID, cfg.Node.Prefix, cfg.Node.Partitions, cfg.Node.LeaseTTL = "n1", "/secure/", 4, 2*time.Second
	cfg.Node.Logger = slog.New(slog.DiscardHandler)
	cfg.Security.EtcdUser, cfg.Security.EtcdPassword = "node", "wrong"
	_, err := agent.Start(ctx, cfg, reg)
	require.ErrorContains(t, err, fmt.Sprintf(`etcd at %v refused user "node"`, srv.Endpoints()), "a wrong password fails at start, naming the endpoint")

	cfg.Security.EtcdPassword = "node-pw"
	actx, stop := context.WithCancel(ctx)
	a, err := agent.Start(actx, cfg, reg)
	require.NoError(t, err)
	defer func() { stop(); require.NoError(t, a.Wait()) }()
	for !a.Serving() {
		select {
		case <-ctx.Done():
			t.Fatal("the node never served")
		case <-time.After(20 * time.Millisecond):
		}
	}
	_, err = a.Node.Invoke(ctx, "Counter", node.Ref{Name: "c"}, "increment", nil)
	require.NoError(t, err)

	// The nodes' user reads and writes its prefix, nothing else.
	cli, err := agent.Dial(ctx, agent.EtcdConfig{Endpoints: srv.Endpoints(), User: "node", Password: "node-pw", Timeout: 5 * time.Second, Prefix: "/secure/"})
	require.NoError(t, err)
	defer cli.Close()
	_, err = cli.Put(ctx, "/elsewhere", "x")
	require.Equal(t, rpctypes.ErrPermissionDenied, rpctypes.Error(err), "%v", err)
	_, err = cli.Get(ctx, "/secure/nodes/", clientv3.WithPrefix())
	require.NoError(t, err)
}

func TestClientWithSeveralSeedsVerifiesEachNodesName(t *testing.T) {
	p := newTestPKI(t)
	c := nodetest.Start(t, nodetest.Options{Nodes: 2, Register: registerExamples, Agent: func(cfg *agent.Config) {
		cfg.Security = agent.Security{TLS: p.node(cfg.Node.ID)}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The seeds by "localhost:port": each node's certificate names
	// localhost, none names the channel's "seeds".
	var seeds []string
	for i := range 2 {
		_, port, err := net.SplitHostPort(c.Addr(i))
		require.NoError(t, err)
		seeds = append(seeds, "localhost:"+port)
	}
	cl := dialSecure(t, strings.Join(seeds, ","), security.ClientConfig{TLS: p.client("ops")}, client.Options{NoDirect: true, MaxAttempts: 1})
	_, err := cl.Invoke(ctx, "Counter", client.ByName("c"), "increment", nil)
	require.NoError(t, err)
}
