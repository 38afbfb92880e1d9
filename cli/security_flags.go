package cli

import (
	"errors"
	"fmt"
	"net"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/durable-run/durable/agent"
	"github.com/durable-run/durable/security"
)

// addClientSecurityFlags registers the flags of every command that talks
// to a node.
func addClientSecurityFlags(fs *pflag.FlagSet) {
	fs.String("tls-ca", "", "CA bundle that verifies the nodes (PEM); any --tls-* flag or a token turns TLS on")
	fs.String("tls-cert", "", "client certificate (PEM) for mutual TLS")
	fs.String("tls-key", "", "private key of --tls-cert (PEM)")
	fs.String("tls-server-name", "", "check the nodes' certificates against this name instead of the host dialled")
	fs.String("token", "", "bearer token sent with every call, over TLS only (DURABLE_TOKEN keeps it off the command line)")
	fs.String("token-file", "", "file holding the bearer token")
}

// clientSecurity reads the flags of addClientSecurityFlags.
func clientSecurity(fs *pflag.FlagSet) (security.ClientConfig, error) {
	var c security.ClientConfig
	c.TLS.CA, _ = fs.GetString("tls-ca")
	c.TLS.Cert, _ = fs.GetString("tls-cert")
	c.TLS.Key, _ = fs.GetString("tls-key")
	c.ServerName, _ = fs.GetString("tls-server-name")
	c.Token, _ = fs.GetString("token")
	file, _ := fs.GetString("token-file")
	switch {
	case file != "" && c.Token != "":
		return c, usageError{errors.New("give --token or --token-file, not both")}
	case file != "":
		var err error
		if c.Token, err = readSecret(file); err != nil {
			return c, fmt.Errorf("read --token-file: %w", err)
		}
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return c, usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	return c, nil
}

// clientDialOptions are the dial options of the client security flags.
func clientDialOptions(fs *pflag.FlagSet) ([]grpc.DialOption, error) {
	c, err := clientSecurity(fs)
	if err != nil {
		return nil, err
	}
	return c.DialOptions()
}

// addNodeSecurityFlags registers the security flags of `durable agent`.
func addNodeSecurityFlags(fs *pflag.FlagSet) {
	fs.String("tls-ca", "", "the cluster's CA (PEM): verifies clients' and other nodes' certificates; with --tls-cert and --tls-key the node serves mutual TLS 1.3 only and calls its peers with its certificate")
	fs.String("tls-cert", "", "the node's certificate (PEM), naming the node (spiffe://durable/node/<node-id>) and its hosts; reloaded when it changes")
	fs.String("tls-key", "", "private key of --tls-cert (PEM)")
	fs.Bool("tls-client-optional", false, "accept callers without a client certificate (they then need a bearer token)")
	fs.String("auth-policy", "", "auth policy (JSON): roles of client certificates and bearer tokens, see docs/security.md; reloaded when it changes (default with TLS: any certificate of the CA may do everything)")
	fs.Bool("reflection", false, "serve gRPC server reflection (needs the read role when secured)")
	fs.Bool("insecure", false, insecureHelp)
	addEtcdLoginFlags(fs)
	fs.Int("max-connections", agent.DefaultMaxConnections, "open gRPC connections at most; more wait to be accepted")
	fs.Uint32("max-concurrent-streams", agent.DefaultMaxConcurrentStreams, "calls in flight on one gRPC connection at most")
	fs.Duration("max-connection-idle", agent.DefaultMaxConnectionIdle, "close a gRPC connection with no call for this long")
}

// nodeSecurity reads the flags of addNodeSecurityFlags, and refuses to
// serve the network in plaintext unless told --insecure.
func nodeSecurity(fs *pflag.FlagSet, cfg *agent.Config) error {
	s := &cfg.Security
	s.TLS.CA, _ = fs.GetString("tls-ca")
	s.TLS.Cert, _ = fs.GetString("tls-cert")
	s.TLS.Key, _ = fs.GetString("tls-key")
	s.ClientCertOptional, _ = fs.GetBool("tls-client-optional")
	s.Policy, _ = fs.GetString("auth-policy")
	s.Reflection, _ = fs.GetBool("reflection")
	var err error
	if s.EtcdUser, s.EtcdPassword, err = etcdLogin(fs); err != nil {
		return err
	}
	cfg.Limits.MaxConnections, _ = fs.GetInt("max-connections")
	cfg.Limits.MaxConcurrentStreams, _ = fs.GetUint32("max-concurrent-streams")
	cfg.Limits.MaxConnectionIdle, _ = fs.GetDuration("max-connection-idle")
	return checkExposure(fs, s.Enabled(), "give --tls-ca, --tls-cert and --tls-key (see docs/security.md; `durable certs` makes a test CA)",
		"listen", "metrics-listen", "debug-listen", "http-listen")
}

// checkExposure refuses to serve plaintext and unauthenticated on the
// network: an address flag of names that is not loopback needs secured, or
// --insecure; how says how to secure it.
func checkExposure(fs *pflag.FlagSet, secured bool, how string, names ...string) error {
	if insecure, _ := fs.GetBool("insecure"); insecure || secured {
		return nil
	}
	for _, name := range names {
		if addr, _ := fs.GetString(name); addr != "" && !loopback(addr) {
			return usageError{fmt.Errorf("--%s %s is reachable from the network and nothing is secured: "+
				"%s, or --insecure to serve plaintext to anyone who can reach it", name, addr, how)}
		}
	}
	return nil
}

// addAllowedHostsFlag registers --http-allowed-hosts, of the commands
// that serve a node's HTTP listeners (agent, dev).
func addAllowedHostsFlag(fs *pflag.FlagSet) {
	fs.StringSlice("http-allowed-hosts", nil, "names the node's HTTP listeners (--metrics-listen, --http-listen, --debug-listen) are reached by, comma-separated, when it is not secured: "+
		"they answer only requests to an IP address, localhost or these names (* for any), so that a web page cannot reach them by pointing its own name at the node (DNS rebinding)")
}

// allowedHosts reads --http-allowed-hosts; a bad name is a usage error.
func allowedHosts(fs *pflag.FlagSet) ([]string, error) {
	hosts, _ := fs.GetStringSlice("http-allowed-hosts")
	if err := security.ValidateAllowedHosts(hosts); err != nil {
		return nil, usageError{fmt.Errorf("--http-allowed-hosts: %w", err)}
	}
	return hosts, nil
}

const insecureHelp = "serve plaintext without authentication on an address other than loopback: anyone who reaches it can call, read and drain the cluster"

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
