package security

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Bundle is a throw-away PKI and its companions for a test or demo
// cluster, as `durable certs` and `durable dev --secure` write it:
//
//	ca.pem, ca-key.pem                  the CA (keep ca-key.pem private)
//	nodes/<id>.pem, nodes/<id>-key.pem  one per node: spiffe://durable/node/<id>
//	clients/<name>.pem, …-key.pem       one per client: spiffe://durable/client/<name>
//	etcd/server.pem, …-key.pem          etcd's server certificate (with Etcd)
//	etcd/peer.pem, …-key.pem            etcd's members to each other (with Etcd): server and client, CN etcd-peer
//	etcd/root.password, etcd/node.password
//	etcd/node-client.pem, …-key.pem     the nodes' etcd client certificate: CN node, etcd's user
//	etcd/root-client.pem, …-key.pem     etcd's root user's (etcd-auth)
//	sink/server.pem, …-key.pem          the sink's server certificate (with Sink)
//	tokens/<name>.token                 bearer tokens (the policy keeps their SHA-256)
//	auth.json                           the auth policy: each client's roles, each token's
//
// Writing again into the same directory keeps what exists (the CA, every
// certificate, password, token and the policy, which the operator may have
// edited) and adds what is missing: a new node's certificate, say.
type Bundle struct {
	Dir string
	// Nodes are node ids; each certificate is valid for localhost,
	// 127.0.0.1, ::1, the id itself and Hosts.
	Nodes []string
	// Clients maps client names to their roles in auth.json.
	Clients map[string][]Role
	// Tokens maps token names to their roles in auth.json.
	Tokens map[string][]Role
	// Hosts are more DNS names or addresses of the nodes' and etcd's
	// certificates.
	Hosts []string
	// Etcd adds etcd's server certificate (valid for Hosts, localhost and
	// EtcdHosts), its members' peer certificate (the same names; server
	// and client authentication, common name EtcdPeerName), and passwords
	// for its root and node users.
	Etcd      bool
	EtcdHosts []string
	// Sink adds a server certificate for the sink (valid for Hosts,
	// localhost and SinkHosts).
	Sink      bool
	SinkHosts []string
	// Validity of the CA and the certificates; zero: Validity.
	Validity time.Duration
	// Readable writes every file readable by all users (0644; directories
	// 0755), for bind-mounting into containers that run as another user
	// (the compose demo). Never for keys that matter.
	Readable bool
}

// DefaultClients are the clients `durable certs` makes by default.
var DefaultClients = map[string][]Role{
	"admin":   {RoleAdmin, RoleInvoke},
	"loadgen": {RoleInvoke},
	"reader":  {RoleRead},
}

// DefaultTokens are the tokens `durable certs` makes by default: one to
// paste into the dashboard.
var DefaultTokens = map[string][]Role{"viewer": {RoleRead}}

// Paths names the files of a bundle.
type Paths struct{ Dir string }

func (p Paths) path(parts ...string) string {
	return filepath.Join(append([]string{p.Dir}, parts...)...)
}

// CA is the CA's certificate file.
func (p Paths) CA() string { return p.path("ca.pem") }

// Node is node id's files (with the CA).
func (p Paths) Node(id string) Files {
	return Files{CA: p.CA(), Cert: p.path("nodes", id+".pem"), Key: p.path("nodes", id+"-key.pem")}
}

// Client is client name's files (with the CA).
func (p Paths) Client(name string) Files {
	return Files{CA: p.CA(), Cert: p.path("clients", name+".pem"), Key: p.path("clients", name+"-key.pem")}
}

// EtcdServer is etcd's server certificate (with the CA).
func (p Paths) EtcdServer() Files {
	return Files{CA: p.CA(), Cert: p.path("etcd", "server.pem"), Key: p.path("etcd", "server-key.pem")}
}

// EtcdPeer is the certificate etcd's members serve and dial each other
// with (with the CA that verifies the other member's).
func (p Paths) EtcdPeer() Files {
	return Files{CA: p.CA(), Cert: p.path("etcd", "peer.pem"), Key: p.path("etcd", "peer-key.pem")}
}

// EtcdPeerName is the common name of etcd's peer certificate: etcd's
// --peer-cert-allowed-cn, so that no other certificate of the CA (a
// client's) can pose as a member.
const EtcdPeerName = "etcd-peer"

// Sink is the sink's server certificate (with the CA its clients verify
// it with).
func (p Paths) Sink() Files {
	return Files{CA: p.CA(), Cert: p.path("sink", "server.pem"), Key: p.path("sink", "server-key.pem")}
}

// EtcdPassword is the password file of etcd user "root" or "node".
func (p Paths) EtcdPassword(user string) string { return p.path("etcd", user+".password") }

// EtcdClient is the etcd client certificate of etcd user "node" or "root"
// (etcd with --client-cert-auth takes the common name as the user).
func (p Paths) EtcdClient(user string) Files {
	return Files{CA: p.CA(), Cert: p.path("etcd", user+"-client.pem"), Key: p.path("etcd", user+"-client-key.pem")}
}

// Token is token name's file.
func (p Paths) Token(name string) string { return p.path("tokens", name+".token") }

// Policy is the auth policy.
func (p Paths) Policy() string { return p.path("auth.json") }

// Write writes what of the bundle is missing and returns its paths.
func (b Bundle) Write() (Paths, error) {
	p := Paths{Dir: b.Dir}
	if b.Dir == "" {
		return p, errors.New("security: a bundle needs a directory")
	}
	if b.Validity <= 0 {
		b.Validity = Validity
	}
	for _, n := range slices.Concat(b.Nodes, slices.Collect(maps.Keys(b.Clients)), slices.Collect(maps.Keys(b.Tokens))) {
		if err := ValidName(n); err != nil {
			return p, err
		}
	}
	fileMode, dirMode := os.FileMode(0o600), os.FileMode(0o700)
	if b.Readable {
		fileMode, dirMode = 0o644, 0o755
	}
	for _, d := range []string{"", "nodes", "clients", "etcd", "sink", "tokens"} {
		if err := os.MkdirAll(p.path(d), dirMode); err != nil {
			return p, fmt.Errorf("security: %w", err)
		}
		if err := os.Chmod(p.path(d), dirMode); err != nil {
			return p, fmt.Errorf("security: %w", err)
		}
	}
	writeFiles := func(files map[string][]byte) error { return writeFiles(files, fileMode) }
	ca, err := b.authority(p, fileMode)
	if err != nil {
		return p, err
	}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, b.Hosts...)
	now := time.Now().Add(-time.Minute)
	issue := func(f Files, leaf Leaf) error {
		if exists(f.Cert) && exists(f.Key) {
			return nil
		}
		leaf.NotBefore, leaf.NotAfter = now, now.Add(b.Validity)
		is, err := ca.Issue(leaf)
		if err != nil {
			return err
		}
		return writeFiles(map[string][]byte{f.Key: is.KeyPEM, f.Cert: is.CertPEM})
	}
	writeSecret := func(name string) error { return writeSecret(name, fileMode) }
	for _, id := range b.Nodes {
		if err := issue(p.Node(id), Leaf{Identity: Identity{Kind: Node, Name: id}, Hosts: append(slices.Clone(hosts), id), Server: true, Client: true}); err != nil {
			return p, err
		}
	}
	for name := range b.Clients {
		if err := issue(p.Client(name), Leaf{Identity: Identity{Kind: Client, Name: name}, Client: true}); err != nil {
			return p, err
		}
	}
	if b.Etcd {
		// A server certificate only: it names no node and cannot
		// authenticate as a client.
		if err := issue(p.EtcdServer(), Leaf{Identity: Identity{Kind: Client, Name: "etcd"}, Hosts: append(slices.Clone(hosts), b.EtcdHosts...), Server: true}); err != nil {
			return p, err
		}
		// A member serves its peers and dials them with the same
		// certificate: both usages, valid for every member's name. Its
		// client name is in no auth policy, and etcd's client port knows
		// no user of that name.
		if err := issue(p.EtcdPeer(), Leaf{Identity: Identity{Kind: Client, Name: EtcdPeerName}, Hosts: append(slices.Clone(hosts), b.EtcdHosts...), Server: true, Client: true}); err != nil {
			return p, err
		}
		for _, user := range []string{"root", "node"} {
			if err := writeSecret(p.EtcdPassword(user)); err != nil {
				return p, err
			}
			// A client certificate whose common name is the etcd user:
			// etcd then needs no password, and the Go client no login per
			// stream (see docs/security.md).
			if err := issue(p.EtcdClient(user), Leaf{Identity: Identity{Kind: Client, Name: user}, Client: true}); err != nil {
				return p, err
			}
		}
	}
	if b.Sink {
		if err := issue(p.Sink(), Leaf{Identity: Identity{Kind: Client, Name: "sink"}, Hosts: append(slices.Clone(hosts), b.SinkHosts...), Server: true}); err != nil {
			return p, err
		}
	}
	for name := range b.Tokens {
		if err := writeSecret(p.Token(name)); err != nil {
			return p, err
		}
	}
	return p, b.writePolicy(p, fileMode)
}

func (b Bundle) authority(p Paths, mode os.FileMode) (*Authority, error) {
	if exists(p.CA()) {
		return LoadAuthority(p.CA(), p.path("ca-key.pem"))
	}
	ca, err := NewAuthority("durable CA", b.Validity)
	if err != nil {
		return nil, err
	}
	return ca, writeFiles(map[string][]byte{p.path("ca-key.pem"): ca.KeyPEM, p.CA(): ca.CertPEM}, mode)
}

func (b Bundle) writePolicy(p Paths, mode os.FileMode) error {
	if exists(p.Policy()) {
		return nil
	}
	pol := Policy{Clients: map[string]Grant{}}
	for name, roles := range b.Clients {
		pol.Clients[name] = Grant{Roles: roles}
	}
	for _, name := range slices.Sorted(maps.Keys(b.Tokens)) {
		tok, err := os.ReadFile(p.Token(name))
		if err != nil {
			return fmt.Errorf("security: %w", err)
		}
		pol.Tokens = append(pol.Tokens, StaticToken{Name: name, SHA256: TokenSHA256(string(tok)), Grant: Grant{Roles: b.Tokens[name]}})
	}
	data, err := json.MarshalIndent(pol, "", "  ")
	if err != nil {
		return err
	}
	return writeFiles(map[string][]byte{p.Policy(): append(data, '\n')}, mode)
}

func exists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// writeSecret writes a random secret (hex) to name unless it exists.
func writeSecret(name string, mode os.FileMode) error {
	if exists(name) {
		return nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	return writeFiles(map[string][]byte{name: []byte(hex.EncodeToString(b))}, mode)
}

// writeFiles writes each file with mode.
func writeFiles(files map[string][]byte, mode os.FileMode) error {
	for name, data := range files {
		if err := os.WriteFile(name, data, mode); err != nil {
			return fmt.Errorf("security: %w", err)
		}
		if err := os.Chmod(name, mode); err != nil { // whatever the umask
			return fmt.Errorf("security: %w", err)
		}
	}
	return nil
}
