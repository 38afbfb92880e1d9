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
//	etcd/root.password, etcd/node.password
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
	// EtcdHosts) and passwords for its root and node users.
	Etcd      bool
	EtcdHosts []string
	// Validity of the CA and the certificates; zero: Validity.
	Validity time.Duration
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

// EtcdPassword is the password file of etcd user "root" or "node".
func (p Paths) EtcdPassword(user string) string { return p.path("etcd", user+".password") }

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
	for _, d := range []string{"", "nodes", "clients", "etcd", "tokens"} {
		if err := os.MkdirAll(p.path(d), 0o700); err != nil {
			return p, fmt.Errorf("security: %w", err)
		}
	}
	ca, err := b.authority(p)
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
		for _, user := range []string{"root", "node"} {
			if err := writeSecret(p.EtcdPassword(user)); err != nil {
				return p, err
			}
		}
	}
	for name := range b.Tokens {
		if err := writeSecret(p.Token(name)); err != nil {
			return p, err
		}
	}
	return p, b.writePolicy(p)
}

func (b Bundle) authority(p Paths) (*Authority, error) {
	if exists(p.CA()) {
		return LoadAuthority(p.CA(), p.path("ca-key.pem"))
	}
	ca, err := NewAuthority("durable CA", b.Validity)
	if err != nil {
		return nil, err
	}
	return ca, writeFiles(map[string][]byte{p.path("ca-key.pem"): ca.KeyPEM, p.CA(): ca.CertPEM})
}

func (b Bundle) writePolicy(p Paths) error {
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
	return writeFiles(map[string][]byte{p.Policy(): append(data, '\n')})
}

func exists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// writeSecret writes a random secret (hex) to name unless it exists.
func writeSecret(name string) error {
	if exists(name) {
		return nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	return writeFiles(map[string][]byte{name: []byte(hex.EncodeToString(b))})
}

// writeFiles writes each file readable by its owner only.
func writeFiles(files map[string][]byte) error {
	for name, data := range files {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			return fmt.Errorf("security: %w", err)
		}
	}
	return nil
}
