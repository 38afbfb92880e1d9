package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/durable-run/durable/security"
)

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a throw-away CA, node, client and etcd certificates, tokens and an auth policy for a test cluster",
		Long: "Write a test PKI into --dir (see docs/security.md for the layout): a CA, one certificate per\n" +
			"node (--nodes) naming spiffe://durable/node/<id>, one per client (--client NAME=ROLE+ROLE,\n" +
			"named spiffe://durable/client/<name>), with --etcd a server certificate and passwords for\n" +
			"etcd, bearer tokens (--token NAME=ROLE+ROLE) and auth.json giving each client and token its\n" +
			"roles. Running it again keeps what exists and adds what is missing. For production, issue\n" +
			"certificates with your own PKI in the same layout." + envHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			b := security.Bundle{}
			b.Dir, _ = fs.GetString("dir")
			b.Nodes, _ = fs.GetStringSlice("nodes")
			b.Hosts, _ = fs.GetStringSlice("hosts")
			b.Etcd, _ = fs.GetBool("etcd")
			b.EtcdHosts, _ = fs.GetStringSlice("etcd-hosts")
			b.Validity, _ = fs.GetDuration("validity")
			var err error
			clients, _ := fs.GetStringSlice("client")
			if b.Clients, err = parseGrants("--client", clients); err != nil {
				return err
			}
			tokens, _ := fs.GetStringSlice("token")
			if b.Tokens, err = parseGrants("--token", tokens); err != nil {
				return err
			}
			if b.Dir == "" {
				return usageError{errors.New("--dir is required")}
			}
			p, err := b.Write()
			if err != nil {
				return err
			}
			printBundle(cmd.OutOrStdout(), b, p)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.String("dir", "", "directory to write into (created if missing)")
	fs.StringSlice("nodes", nil, "node ids to issue certificates for, comma-separated")
	fs.StringSlice("hosts", nil, "more DNS names or IP addresses of the nodes (and etcd); localhost, 127.0.0.1, ::1 and each node's id are always in")
	fs.StringSlice("client", grantFlags(security.DefaultClients), "client NAME=ROLE+ROLE (roles: invoke, read, admin); repeatable")
	fs.StringSlice("token", grantFlags(security.DefaultTokens), "bearer token NAME=ROLE+ROLE; repeatable")
	fs.Bool("etcd", false, "also a server certificate for etcd and passwords for its root and node users")
	fs.StringSlice("etcd-hosts", nil, "more DNS names or IP addresses of etcd's certificate")
	fs.Duration("validity", security.Validity, "how long the CA and certificates are valid")
	return cmd
}

func grantFlags(m map[string][]security.Role) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(m)) {
		roles := make([]string, len(m[name]))
		for i, r := range m[name] {
			roles[i] = string(r)
		}
		out = append(out, name+"="+strings.Join(roles, "+"))
	}
	return out
}

func parseGrants(flag string, values []string) (map[string][]security.Role, error) {
	out := map[string][]security.Role{}
	for _, v := range values {
		name, roles, ok := strings.Cut(v, "=")
		if !ok || roles == "" {
			return nil, usageError{fmt.Errorf("%s %q: want NAME=ROLE+ROLE", flag, v)}
		}
		for _, r := range strings.Split(roles, "+") {
			role := security.Role(r)
			if role != security.RoleInvoke && role != security.RoleRead && role != security.RoleAdmin {
				return nil, usageError{fmt.Errorf("%s %q: unknown role %q (want invoke, read or admin)", flag, v, r)}
			}
			out[name] = append(out[name], role)
		}
	}
	return out, nil
}

// printBundle says what was written and how to use it.
func printBundle(w io.Writer, b security.Bundle, p security.Paths) {
	fmt.Fprintf(w, "wrote a test PKI in %s (valid until %s)\n", p.Dir, time.Now().Add(b.Validity).Format(time.DateOnly))
	for _, id := range b.Nodes {
		n := p.Node(id)
		fmt.Fprintf(w, "  node %-10s --tls-ca %s --tls-cert %s --tls-key %s\n", id, n.CA, n.Cert, n.Key)
	}
	fmt.Fprintf(w, "  auth policy      --auth-policy %s\n", p.Policy())
	if b.Etcd {
		e := p.EtcdServer()
		fmt.Fprintf(w, "  etcd server      --cert-file %s --key-file %s\n", e.Cert, e.Key)
		fmt.Fprintf(w, "  etcd passwords   %s (root), %s (user node)\n", p.EtcdPassword("root"), p.EtcdPassword("node"))
	}
	for _, name := range slices.Sorted(maps.Keys(b.Tokens)) {
		fmt.Fprintf(w, "  token %-10s %s\n", name, p.Token(name))
	}
	if _, ok := b.Clients["admin"]; ok {
		c := p.Client("admin")
		fmt.Fprintf(w, "\nUse the CLI as the admin client:\n  export DURABLE_TLS_CA=%s DURABLE_TLS_CERT=%s DURABLE_TLS_KEY=%s\n", c.CA, c.Cert, c.Key)
	}
}
