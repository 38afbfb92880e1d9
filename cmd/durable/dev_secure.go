package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/security"
)

// devSecurity is what `durable dev --secure` runs with: a test PKI, etcd's
// passwords and the TLS configuration the nodes reach etcd with.
type devSecurity struct {
	paths   security.Paths
	etcdTLS *tls.Config
	temp    bool // paths.Dir is removed on exit
}

// prepareDevSecurity writes (or reuses) the PKI of a dev cluster of count
// nodes.
func prepareDevSecurity(fs *pflag.FlagSet, count int) (*devSecurity, error) {
	d := &devSecurity{}
	dir, _ := fs.GetString("certs-dir")
	if dir == "" {
		if data, _ := fs.GetString("data-dir"); data != "" {
			dir = filepath.Clean(data) + "-certs"
		} else {
			tmp, err := os.MkdirTemp("", "durable-dev-certs-")
			if err != nil {
				return nil, err
			}
			dir, d.temp = tmp, true
		}
	}
	b := security.Bundle{Dir: dir, Clients: security.DefaultClients, Tokens: security.DefaultTokens, Etcd: true}
	for i := range count {
		b.Nodes = append(b.Nodes, devNodeID(i))
	}
	var err error
	if d.paths, err = b.Write(); err != nil {
		d.cleanup()
		return nil, err
	}
	src, err := security.NewSource(security.Files{CA: d.paths.CA()})
	if err != nil {
		d.cleanup()
		return nil, err
	}
	d.etcdTLS = src.ClientConfig("")
	return d, nil
}

func (d *devSecurity) cleanup() {
	if d.temp {
		_ = os.RemoveAll(d.paths.Dir)
	}
}

func (d *devSecurity) password(user string) (string, error) {
	b, err := os.ReadFile(d.paths.EtcdPassword(user))
	return strings.TrimSpace(string(b)), err
}

// setupEtcd turns on etcd's auth with the nodes' user limited to prefix.
func (d *devSecurity) setupEtcd(ctx context.Context, endpoints []string, prefix string) error {
	root, err := d.password("root")
	if err != nil {
		return err
	}
	nodePW, err := d.password("node")
	if err != nil {
		return err
	}
	return agent.SetupEtcdAuth(ctx, agent.EtcdAuthSetup{Endpoints: endpoints, TLS: d.etcdTLS, RootPassword: root, User: "node", Password: nodePW, Prefix: prefix})
}

// apply secures one dev node's configuration.
func (d *devSecurity) apply(cfg *agent.Config) {
	cfg.Security.TLS = d.paths.Node(cfg.Node.ID)
	cfg.Security.Policy = d.paths.Policy()
	cfg.Security.EtcdUser = "node"
	cfg.Security.EtcdPassword, _ = d.password("node")
	cfg.EtcdTLS = d.etcdTLS
}

// banner tells how to reach the secured cluster.
func (d *devSecurity) banner() string {
	admin := d.paths.Client("admin")
	return fmt.Sprintf(`
  secured: mutual TLS and auth (certificates, tokens and policy in %s)
  CLI as the admin client, in another terminal:
    export DURABLE_TLS_CA=%s DURABLE_TLS_CERT=%s DURABLE_TLS_KEY=%s
  dashboards: the browser does not know the CA (trust %s or accept it);
    paste the read-only token of %s when asked
`, d.paths.Dir, admin.CA, admin.Cert, admin.Key, admin.CA, d.paths.Token("viewer"))
}
