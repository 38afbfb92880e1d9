package security

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable/metrics"
)

// pki is a test CA with helpers that write issued certificates to files.
type pki struct {
	t   *testing.T
	ca  *Authority
	dir string
}

func newPKI(t *testing.T) *pki {
	ca, err := NewAuthority("test CA", time.Hour)
	require.NoError(t, err)
	p := &pki{t: t, ca: ca, dir: t.TempDir()}
	require.NoError(t, os.WriteFile(p.caFile(), ca.CertPEM, 0o600))
	return p
}

func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// issue writes a certificate for leaf and returns Files naming it and the
// CA.
func (p *pki) issue(name string, leaf Leaf) Files {
	p.t.Helper()
	if leaf.Hosts == nil {
		leaf.Hosts = []string{"127.0.0.1", "localhost"}
	}
	is, err := p.ca.Issue(leaf)
	require.NoError(p.t, err)
	f := Files{CA: p.caFile(), Cert: filepath.Join(p.dir, name+".pem"), Key: filepath.Join(p.dir, name+"-key.pem")}
	require.NoError(p.t, os.WriteFile(f.Cert, is.CertPEM, 0o600))
	require.NoError(p.t, os.WriteFile(f.Key, is.KeyPEM, 0o600))
	return f
}

func nodeLeaf(id string) Leaf {
	return Leaf{Identity: Identity{Kind: Node, Name: id}, Server: true, Client: true}
}

func clientLeaf(name string) Leaf {
	return Leaf{Identity: Identity{Kind: Client, Name: name}, Client: true}
}

// serve starts a gRPC health server with src's server TLS; it returns its
// address.
func serve(t *testing.T, src *Source, requireCert bool, opts ...grpc.ServerOption) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(src.ServerConfig(requireCert)))}, opts...)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// check calls the health service at addr with cfg's credentials.
func check(t *testing.T, addr string, cfg ClientConfig) error {
	t.Helper()
	opts, err := cfg.DialOptions()
	require.NoError(t, err)
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestCertIdentityNamesNodesAndClients(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		leaf Leaf
		want Identity
	}{
		{nodeLeaf("dc1-n1"), Identity{Kind: Node, Name: "dc1-n1"}},
		{clientLeaf("ops"), Identity{Kind: Client, Name: "ops"}},
	} {
		is, err := p.ca.Issue(tc.leaf)
		require.NoError(t, err)
		b, _ := pem.Decode(is.CertPEM)
		cert, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		got, ok := CertIdentity(cert)
		require.True(t, ok)
		assert.Equal(t, tc.want, got)
	}
	// A certificate of another PKI: its common name, as a client — never a
	// node.
	got, ok := CertIdentity(&x509.Certificate{Subject: p.ca.Cert.Subject})
	require.True(t, ok)
	assert.Equal(t, Identity{Kind: Client, Name: "test CA"}, got)
	_, err := p.ca.Issue(Leaf{Identity: Identity{Kind: Client, Name: "../x"}})
	require.Error(t, err, "a name that is not a plain name is refused")
}

func TestMutualTLSRefusesCallersWithoutAValidCertificate(t *testing.T) {
	p := newPKI(t)
	src, err := NewSource(p.issue("node", nodeLeaf("n1")))
	require.NoError(t, err)
	addr := serve(t, src, true)

	client := p.issue("client", clientLeaf("ops"))
	require.NoError(t, check(t, addr, ClientConfig{TLS: client}), "a client certificate of the CA is accepted")

	other := newPKI(t)
	foreign := other.issue("foreign", clientLeaf("ops"))
	expired := p.issue("expired", Leaf{Identity: Identity{Kind: Client, Name: "old"}, Client: true,
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	for name, cfg := range map[string]ClientConfig{
		"no certificate":        {TLS: Files{CA: p.caFile()}},
		"another CA's":          {TLS: Files{CA: p.caFile(), Cert: foreign.Cert, Key: foreign.Key}},
		"an expired one":        {TLS: expired},
		"plaintext":             {},
		"a server of other CA":  {TLS: Files{CA: other.caFile(), Cert: client.Cert, Key: client.Key}},
		"the wrong server name": {TLS: client, ServerName: "elsewhere.example"},
	} {
		t.Run(name, func(t *testing.T) {
			err := check(t, addr, cfg)
			require.Error(t, err)
			assert.Equal(t, codes.Unavailable, status.Code(err), "refused at the handshake: %v", err)
		})
	}
}

func TestPeerConfigAcceptsOnlyNodeCertificates(t *testing.T) {
	p := newPKI(t)
	nodeFiles := p.issue("n1", nodeLeaf("n1"))
	peer, err := NewSource(p.issue("n2", nodeLeaf("n2")))
	require.NoError(t, err)
	dial := func(addr string) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(peer.PeerConfig())))
		require.NoError(t, err)
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	node, err := NewSource(nodeFiles)
	require.NoError(t, err)
	require.NoError(t, dial(serve(t, node, true)), "a node's certificate is a peer")

	// A server whose certificate (of the same CA) names a client is not.
	impostor, err := NewSource(p.issue("impostor", Leaf{Identity: Identity{Kind: Client, Name: "n3"}, Server: true, Client: true, Hosts: []string{"127.0.0.1"}}))
	require.NoError(t, err)
	err = dial(serve(t, impostor, false))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "does not name a node")
}

func TestSourceReloadsRotatedFiles(t *testing.T) {
	p := newPKI(t)
	files := p.issue("node", nodeLeaf("n1"))
	src, err := NewSource(files)
	require.NoError(t, err)
	var reloads []error
	src.OnReload = func(err error) { reloads = append(reloads, err) }
	addr := serve(t, src, true)
	client := ClientConfig{TLS: p.issue("client", clientLeaf("ops"))}
	require.NoError(t, check(t, addr, client))

	// Rotate to a new CA: the old clients are refused, the new ones
	// accepted, without a restart.
	rotated := newPKI(t)
	newFiles := rotated.issue("node", nodeLeaf("n1"))
	for _, pair := range [][2]string{{newFiles.CA, files.CA}, {newFiles.Cert, files.Cert}, {newFiles.Key, files.Key}} {
		b, err := os.ReadFile(pair[0])
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(pair[1], b, 0o600))
		// A distinct modification time, whatever the file system's
		// resolution.
		require.NoError(t, os.Chtimes(pair[1], time.Now(), time.Now().Add(time.Hour)))
	}
	src.Reload()
	require.Equal(t, []error{nil}, reloads)
	require.Error(t, check(t, addr, client), "the old CA's client is refused after the rotation")
	require.NoError(t, check(t, addr, ClientConfig{TLS: rotated.issue("client", clientLeaf("ops"))}))

	// A half-written key keeps the previous files in use.
	require.NoError(t, os.WriteFile(files.Key, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600))
	require.NoError(t, os.Chtimes(files.Key, time.Now(), time.Now().Add(2*time.Hour)))
	src.Reload()
	require.Len(t, reloads, 2)
	require.Error(t, reloads[1])
	require.NoError(t, check(t, addr, ClientConfig{TLS: rotated.issue("client2", clientLeaf("ops"))}))
}

func TestGuardChecksRolesPerMethodAndClass(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "jwt.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	policy := `{
	  "clients": {"ops": {"roles": ["admin"]}, "loadgen": {"roles": ["invoke"], "classes": ["Counter"]}},
	  "tokens": [{"name": "ci", "sha256": "` + TokenSHA256("s3cret") + `", "roles": ["read", "invoke"], "classes": ["Batcher"]}],
	  "jwt": {"keys": "jwt.pem", "issuer": "idp", "audience": "durable"}
	}`
	file := filepath.Join(dir, "auth.json")
	require.NoError(t, os.WriteFile(file, []byte(policy), 0o600))
	m := metrics.New()
	g, err := NewGuard(GuardConfig{Policy: file, Metrics: m})
	require.NoError(t, err)

	sign := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(priv)
		require.NoError(t, err)
		return "Bearer " + s
	}
	exp := time.Now().Add(time.Hour).Unix()
	jwtInvoke := sign(jwt.MapClaims{"sub": "app", "iss": "idp", "aud": "durable", "exp": exp, "durable_roles": []string{"invoke"}})
	jwtExpired := sign(jwt.MapClaims{"sub": "app", "iss": "idp", "aud": "durable", "exp": time.Now().Add(-time.Minute).Unix(), "durable_roles": []string{"invoke"}})
	jwtOtherAud := sign(jwt.MapClaims{"sub": "app", "iss": "idp", "aud": "other", "exp": exp, "durable_roles": []string{"invoke"}})

	const (
		invoke = "/durable.v1.Objects/Invoke"
		drain  = "/durable.v1.Admin/Drain"
		stat   = "/durable.v1.Admin/Status"
		hc     = "/grpc.health.v1.Health/Check"
	)
	ops := Identity{Kind: Client, Name: "ops"}
	loadgen := Identity{Kind: Client, Name: "loadgen"}
	stranger := Identity{Kind: Client, Name: "stranger"}
	node := Identity{Kind: Node, Name: "n1"}
	for _, tc := range []struct {
		name   string
		method string
		class  string
		cert   *Identity
		md     metadata.MD
		want   codes.Code
	}{
		{"health is open", hc, "", nil, nil, codes.OK},
		{"no identity", stat, "", nil, nil, codes.Unauthenticated},
		{"unauthenticated drain", drain, "", nil, nil, codes.Unauthenticated},
		{"admin drains", drain, "", &ops, nil, codes.OK},
		{"admin reads", stat, "", &ops, nil, codes.OK},
		{"admin does not invoke", invoke, "Counter", &ops, nil, codes.PermissionDenied},
		{"invoke on its class", invoke, "Counter", &loadgen, nil, codes.OK},
		{"invoke on another class", invoke, "Batcher", &loadgen, nil, codes.PermissionDenied},
		{"invoke cannot drain", drain, "", &loadgen, nil, codes.PermissionDenied},
		{"a certificate not in the policy", stat, "", &stranger, nil, codes.Unauthenticated},
		{"a client cannot pose as a forward", invoke, "Counter", &loadgen, metadata.Pairs("durable-hops", "1"), codes.PermissionDenied},
		{"a node forwards", invoke, "Anything", &node, metadata.Pairs("durable-hops", "1"), codes.OK},
		{"a node drains", drain, "", &node, nil, codes.OK},
		{"static token reads", stat, "", nil, metadata.Pairs("authorization", "Bearer s3cret"), codes.OK},
		{"static token invokes its class", invoke, "Batcher", nil, metadata.Pairs("authorization", "Bearer s3cret"), codes.OK},
		{"static token, other class", invoke, "Counter", nil, metadata.Pairs("authorization", "Bearer s3cret"), codes.PermissionDenied},
		{"wrong token", stat, "", nil, metadata.Pairs("authorization", "Bearer nope"), codes.Unauthenticated},
		{"not a bearer", stat, "", nil, metadata.Pairs("authorization", "Basic eDp5"), codes.Unauthenticated},
		{"certificate and token add up", invoke, "Batcher", &loadgen, metadata.Pairs("authorization", "Bearer s3cret"), codes.OK},
		{"jwt invokes", invoke, "Counter", nil, metadata.Pairs("authorization", jwtInvoke), codes.OK},
		{"jwt cannot drain", drain, "", nil, metadata.Pairs("authorization", jwtInvoke), codes.PermissionDenied},
		{"expired jwt", invoke, "Counter", nil, metadata.Pairs("authorization", jwtExpired), codes.Unauthenticated},
		{"jwt for another audience", invoke, "Counter", nil, metadata.Pairs("authorization", jwtOtherAud), codes.Unauthenticated},
		{"an unknown method needs admin", "/durable.v1.Admin/SomethingNew", "", &loadgen, nil, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var id Identity
			if tc.cert != nil {
				id = *tc.cert
			}
			err := g.Check(tc.method, tc.class, id, tc.cert != nil, tc.md)
			assert.Equal(t, tc.want, status.Code(err), "%v", err)
		})
	}
	assert.Positive(t, metrics.Value(m.AuthRefusals.WithLabelValues("unauthenticated", drain)))
	assert.Positive(t, metrics.Value(m.AuthRefusals.WithLabelValues("permission_denied", invoke)))
}

func TestGuardWithoutPolicyTrustsTheCAButNotForwardsFromClients(t *testing.T) {
	g, err := NewGuard(GuardConfig{})
	require.NoError(t, err)
	client := Identity{Kind: Client, Name: "anyone"}
	assert.NoError(t, g.Check("/durable.v1.Admin/Drain", "", client, true, nil))
	assert.Equal(t, codes.PermissionDenied, status.Code(g.Check("/durable.v1.Admin/RequeueDeadLetter", "", client, true, metadata.Pairs("durable-admin-forwarded", "1"))))
	assert.Equal(t, codes.Unauthenticated, status.Code(g.Check("/durable.v1.Admin/Status", "", Identity{}, false, metadata.Pairs("authorization", "Bearer x"))))
}

func TestGuardReloadsItsPolicy(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"clients": {"ops": {"roles": ["read"]}}}`), 0o600))
	m := metrics.New()
	g, err := NewGuard(GuardConfig{Policy: file, Metrics: m})
	require.NoError(t, err)
	ops := Identity{Kind: Client, Name: "ops"}
	require.Equal(t, codes.PermissionDenied, status.Code(g.Check("/durable.v1.Admin/Drain", "", ops, true, nil)))

	require.NoError(t, os.WriteFile(file, []byte(`{"clients": {"ops": {"roles": ["admin"]}}}`), 0o600))
	require.NoError(t, os.Chtimes(file, time.Now(), time.Now().Add(time.Hour)))
	g.forceCheck()
	require.NoError(t, g.Check("/durable.v1.Admin/Drain", "", ops, true, nil))

	// A broken policy is not taken: the last good one stays.
	require.NoError(t, os.WriteFile(file, []byte(`{"clients": {"ops": {"roles": ["root"]}}}`), 0o600))
	require.NoError(t, os.Chtimes(file, time.Now(), time.Now().Add(2*time.Hour)))
	g.forceCheck()
	require.NoError(t, g.Check("/durable.v1.Admin/Drain", "", ops, true, nil))
	assert.Equal(t, 1.0, metrics.Value(m.Reloads.WithLabelValues("auth_policy", "error")))
}

func TestParsePolicyReportsEveryProblem(t *testing.T) {
	_, err := ParsePolicy([]byte(`{
	  "clients": {"ops": {"roles": ["root"]}, "../x": {"roles": ["read"]}, "r": {"roles": ["read"], "classes": ["C"]}},
	  "tokens": [{"name": "a", "sha256": "zz", "roles": ["read"]}, {"name": "a", "sha256": "`+TokenSHA256("x")+`", "roles": []}],
	  "jwt": {"keys": "missing.pem"}
	}`), t.TempDir())
	require.Error(t, err)
	for _, want := range []string{`unknown role "root"`, `client "../x"`, "lacks", "64 hex digits", "used twice", "no roles", "audience is required", "missing.pem"} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = ParsePolicy([]byte(`{"client": {}}`), "")
	assert.ErrorContains(t, err, "unknown field", "a misspelt field is an error, not an open door")
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"clients": {"ops": {"roles": ["admin"]}}}`))
	f.Add([]byte(`{"tokens": [{"name": "a", "sha256": "` + TokenSHA256("x") + `", "roles": ["invoke"], "classes": ["C"]}]}`))
	f.Add([]byte(`{"clients": {"*": {"roles": ["read", "read"]}}, "tokens": null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("{\"clients\": {\"\x82\": {\"roles\": [\"read\"]}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data, "")
		if err != nil {
			return
		}
		// A policy that parses grants only known roles, to valid names.
		for name, g := range p.Clients {
			if name != "*" {
				require.NoError(t, ValidName(name))
			}
			require.NoError(t, g.validate(name))
		}
		for _, tok := range p.Tokens {
			require.NoError(t, ValidName(tok.Name))
			require.Len(t, tok.SHA256, 64)
		}
	})
}

func TestBundleWritesAWorkingPKIAndKeepsWhatExists(t *testing.T) {
	b := Bundle{Dir: t.TempDir(), Nodes: []string{"n1"}, Clients: DefaultClients, Tokens: DefaultTokens, Etcd: true}
	p, err := b.Write()
	require.NoError(t, err)
	node, err := NewSource(p.Node("n1"))
	require.NoError(t, err)
	id, _ := node.Identity()
	require.Equal(t, Identity{Kind: Node, Name: "n1"}, id)
	addr := serve(t, node, true)
	require.NoError(t, check(t, addr, ClientConfig{TLS: p.Client("admin")}))

	g, err := NewGuard(GuardConfig{Policy: p.Policy()})
	require.NoError(t, err)
	token, err := os.ReadFile(p.Token("viewer"))
	require.NoError(t, err)
	assert.NoError(t, g.Check("/durable.v1.Admin/Status", "", Identity{}, false, metadata.Pairs("authorization", "Bearer "+string(token))))
	assert.Equal(t, codes.PermissionDenied, status.Code(g.Check("/durable.v1.Admin/Drain", "", Identity{Kind: Client, Name: "loadgen"}, true, nil)))
	assert.NoError(t, g.Check("/durable.v1.Admin/Drain", "", Identity{Kind: Client, Name: "admin"}, true, nil))

	// Again with one more node: the CA and the first node's files stay,
	// the new node is signed by the same CA.
	before, err := os.ReadFile(p.Node("n1").Cert)
	require.NoError(t, err)
	b.Nodes = append(b.Nodes, "n2")
	p2, err := b.Write()
	require.NoError(t, err)
	after, err := os.ReadFile(p2.Node("n1").Cert)
	require.NoError(t, err)
	require.Equal(t, before, after)
	n2, err := NewSource(p2.Node("n2"))
	require.NoError(t, err)
	require.NoError(t, check(t, serve(t, n2, true), ClientConfig{TLS: p.Client("reader")}))
	for _, f := range []string{"ca-key.pem", "nodes/n1-key.pem", "etcd/root.password", "tokens/viewer.token"} {
		fi, err := os.Stat(filepath.Join(b.Dir, f))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), f)
	}
}

// TestBundleIssuesEtcdPeerAndSinkCertificates: etcd's members serve and
// dial each other with one certificate, so it must verify for both
// usages under every member's name, and name etcd-peer (etcd's
// --peer-cert-allowed-cn); the sink's serves only. A bundle written
// before either existed gets them, signed by its CA, when written again.
func TestBundleIssuesEtcdPeerAndSinkCertificates(t *testing.T) {
	b := Bundle{Dir: t.TempDir(), Nodes: []string{"n1"}, Etcd: true}
	_, err := b.Write()
	require.NoError(t, err)
	b.EtcdHosts, b.Sink, b.SinkHosts = []string{"etcd1", "etcd2", "etcd3"}, true, []string{"sink"}
	require.NoError(t, os.Remove(Paths{Dir: b.Dir}.EtcdPeer().Cert)) // as before peer certificates
	p, err := b.Write()
	require.NoError(t, err)

	caPEM, err := os.ReadFile(p.CA())
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	leaf := func(f Files) *x509.Certificate {
		t.Helper()
		data, err := os.ReadFile(f.Cert)
		require.NoError(t, err)
		blk, _ := pem.Decode(data)
		require.NotNil(t, blk, f.Cert)
		c, err := x509.ParseCertificate(blk.Bytes)
		require.NoError(t, err)
		_, err = NewSource(f) // the key matches
		require.NoError(t, err)
		return c
	}
	verify := func(c *x509.Certificate, name string, usage x509.ExtKeyUsage) error {
		_, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}

	peer := leaf(p.EtcdPeer())
	require.Equal(t, EtcdPeerName, peer.Subject.CommonName)
	for _, member := range []string{"etcd1", "etcd2", "etcd3"} {
		require.NoError(t, verify(peer, member, x509.ExtKeyUsageServerAuth), member)
		require.NoError(t, verify(peer, member, x509.ExtKeyUsageClientAuth), member)
	}
	require.Error(t, verify(peer, "sink", x509.ExtKeyUsageServerAuth))

	sink := leaf(p.Sink())
	require.NoError(t, verify(sink, "sink", x509.ExtKeyUsageServerAuth))
	require.NoError(t, verify(sink, "127.0.0.1", x509.ExtKeyUsageServerAuth), "the host's curl reaches it by address")
	require.Error(t, verify(sink, "sink", x509.ExtKeyUsageClientAuth), "the sink's certificate cannot authenticate a client")
	require.Error(t, verify(sink, "etcd1", x509.ExtKeyUsageServerAuth))
}
