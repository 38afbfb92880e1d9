package cli

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/security"
)

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a throw-away CA, node, client and etcd certificates, tokens and an auth policy for a test cluster",
		Long: "Write a test PKI into --dir (see docs/security.md for the layout): a CA, one certificate per\n" +
			"node (--nodes) naming spiffe://durable/node/<id>, one per client (--client NAME=ROLE+ROLE,\n" +
			"named spiffe://durable/client/<name>), with --etcd a server and a peer certificate and passwords\n" +
			"for etcd, with --sink a server certificate for the sink, bearer tokens (--token NAME=ROLE+ROLE) and auth.json giving each client and token its\n" +
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
			b.Sink, _ = fs.GetBool("sink")
			b.SinkHosts, _ = fs.GetStringSlice("sink-hosts")
			b.Validity, _ = fs.GetDuration("validity")
			b.Readable, _ = fs.GetBool("readable")
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
	fs.StringSlice("etcd-hosts", nil, "more DNS names or IP addresses of etcd's certificates (its members' names: the server and the peer certificate)")
	fs.Bool("sink", false, "also a server certificate for the sink (durable sink --tls-cert)")
	fs.StringSlice("sink-hosts", nil, "more DNS names or IP addresses of the sink's certificate")
	fs.Duration("validity", security.Validity, "how long the CA and certificates are valid")
	fs.Bool("readable", false, "make every file readable by all users, to bind-mount into containers running as another user (the compose demo); never for keys that matter")
	return cmd
}

func newEtcdAuthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "etcd-auth",
		Short: "Turn on etcd's authentication for a cluster: root, a role with read/write on --prefix only, and the nodes' user",
		Long: "Create etcd's root user (or log in as root when auth is on already), the role " + agent.NodeRole + " with\n" +
			"read/write on --prefix and nothing else, the nodes' user (--user) with that role, and enable auth.\n" +
			"It can run again: what exists is kept, the user's password is set again. The compose demo runs it\n" +
			"once before the nodes start." + envHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			s := agent.EtcdAuthSetup{}
			s.Endpoints, _ = fs.GetStringSlice("etcd")
			s.User, _ = fs.GetString("user")
			s.Prefix, _ = fs.GetString("prefix")
			var err error
			if s.TLS, err = etcdTLS(fs); err != nil {
				return err
			}
			rootFile, _ := fs.GetString("root-password-file")
			userFile, _ := fs.GetString("password-file")
			s.RootByCert, _ = fs.GetBool("root-by-cert")
			if rootFile == "" || s.User == "" {
				return usageError{errors.New("--root-password-file and --user are required")}
			}
			if s.RootPassword, err = readSecret(rootFile); err != nil {
				return err
			}
			if userFile != "" {
				if s.Password, err = readSecret(userFile); err != nil {
					return err
				}
			}
			if err := agent.SetupEtcdAuth(cmd.Context(), s); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "etcd auth on at %s: user %s may read and write %s only\n", strings.Join(s.Endpoints, ","), s.User, s.Prefix)
			return nil
		},
	}
	fs := cmd.Flags()
	addEtcdFlags(fs)
	fs.String("root-password-file", "", "file holding the password of etcd's root user")
	fs.String("user", "node", "the nodes' etcd user")
	fs.String("password-file", "", "file holding the nodes' user's password (none: the user logs in by client certificate only, its common name)")
	fs.Bool("root-by-cert", false, "--etcd-cert names etcd's root user (etcd runs with --client-cert-auth): no password login")
	fs.String("prefix", node.DefaultConfig().Prefix, "the cluster's etcd key prefix: all the nodes' role may touch")
	return cmd
}

// readSecret reads a password or token file, without its final newline.
func readSecret(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
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

// cliClient is the client the CLI is shown to use: "admin", else the
// first with the admin role, else the first ("": none).
func cliClient(clients map[string][]security.Role) string {
	names := slices.Sorted(maps.Keys(clients))
	if _, ok := clients["admin"]; ok {
		return "admin"
	}
	for _, n := range names {
		if slices.Contains(clients[n], security.RoleAdmin) {
			return n
		}
	}
	if len(names) > 0 {
		return names[0]
	}
	return ""
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
		pe := p.EtcdPeer()
		fmt.Fprintf(w, "  etcd peers       --peer-cert-file %s --peer-key-file %s --peer-trusted-ca-file %s --peer-client-cert-auth --peer-cert-allowed-cn %s\n", pe.Cert, pe.Key, pe.CA, security.EtcdPeerName)
		fmt.Fprintf(w, "  etcd passwords   %s (root), %s (user node)\n", p.EtcdPassword("root"), p.EtcdPassword("node"))
	}
	if b.Sink {
		sk := p.Sink()
		fmt.Fprintf(w, "  sink             --tls-cert %s --tls-key %s (nodes: --upstream https://… --upstream-ca %s)\n", sk.Cert, sk.Key, sk.CA)
	}
	for _, name := range slices.Sorted(maps.Keys(b.Tokens)) {
		fmt.Fprintf(w, "  token %-10s %s\n", name, p.Token(name))
	}
	if name := cliClient(b.Clients); name != "" {
		c := p.Client(name)
		fmt.Fprintf(w, "\nUse the CLI as the client %s:\n  export DURABLE_TLS_CA=%s DURABLE_TLS_CERT=%s DURABLE_TLS_KEY=%s\n", name, c.CA, c.Cert, c.Key)
	}
}
