package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/security"
)

// devSecurity is what `durable dev --secure` runs with: a test PKI and the
// TLS configurations etcd's root (the auth setup) and the nodes (etcd's
// user node, by their client certificate) reach etcd with.
type devSecurity struct {
	paths            security.Paths
	rootTLS, nodeTLS *tls.Config
	temp             bool // paths.Dir is removed on exit
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
	for _, c := range []struct {
		user string
		cfg  **tls.Config
	}{{"root", &d.rootTLS}, {"node", &d.nodeTLS}} {
		src, err := security.NewSource(d.paths.EtcdClient(c.user))
		if err != nil {
			d.cleanup()
			return nil, err
		}
		*c.cfg = src.ClientConfig("")
	}
	return d, nil
}

func (d *devSecurity) cleanup() {
	if d.temp {
		_ = os.RemoveAll(d.paths.Dir)
	}
}

// setupEtcd turns on etcd's auth with the nodes' user limited to prefix;
// etcd's users log in by client certificate.
func (d *devSecurity) setupEtcd(ctx context.Context, endpoints []string, prefix string) error {
	root, err := readSecret(d.paths.EtcdPassword("root"))
	if err != nil {
		return err
	}
	return agent.SetupEtcdAuth(ctx, agent.EtcdAuthSetup{Endpoints: endpoints, TLS: d.rootTLS, RootByCert: true, RootPassword: root, User: "node", Prefix: prefix})
}

// apply secures one dev node's configuration.
func (d *devSecurity) apply(cfg *agent.Config) {
	cfg.Security.TLS = d.paths.Node(cfg.Node.ID)
	cfg.Security.Policy = d.paths.Policy()
	cfg.EtcdTLS = d.nodeTLS
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
