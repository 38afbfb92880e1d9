// Package cli is the durable command line as a library: the root command and
// every subcommand (dev, agent, invoke, alarm, status, locate, drain, health,
// load, bench, version, certs, etcd-auth, inspect, sink) with their flags, DURABLE_*
// environment variables, TLS and security options and exit codes. The durable
// binary (cmd/durable) is Main with the example classes; a user's binary is
// Main with its own:
//
//	func main() {
//		cli.Main(cli.Options{Name: "chat", Register: func(reg *node.Registry) error {
//			return node.RegisterClass(reg, "Room", newRoom)
//		}})
//	}
//
// Such a binary gets every command; dev and agent serve the classes Register
// adds. Flags only some classes need are not generic: --upstream (the URL
// durable's example classes deliver to; dev defaults it to its sink) exists
// only when Options.RegisterUpstream is set, as cmd/durable does. Every other
// flag and its DURABLE_<FLAG> variable is the same in every binary.
//
// Exit codes: 0 success, 1 failure, 2 usage or bad input, 3 not found,
// 4 unavailable.
//
// Concurrency: Main and Command build a fresh command tree on each call and
// keep no package state, so tests run several in one process.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/durable-run/durable/node"
)

// Options say what a binary built on this package serves and how it is named.
// The zero value is a binary named "durable" that serves no classes.
type Options struct {
	// Name is the binary's name in help, usage lines, `version` and the
	// prefix of error messages ("chat: …"). Default "durable".
	Name string
	// Short is the one-line description in the root command's help.
	// Default "Durable objects with alarms, on etcd".
	Short string
	// RunAs is how dev's banner tells a user to run the binary, e.g.
	// "go run ./cmd/chat". Default Name.
	RunAs string
	// Register adds the binary's classes to reg. dev and agent call it once
	// per process, before they start serving; dev's nodes share the registry.
	Register func(reg *node.Registry) error
	// RegisterUpstream, when set, gives dev and agent the --upstream flag (the
	// URL classes deliver to; agent's default http://127.0.0.1:4680, dev's
	// its own sink) and --upstream-ca (the CA an https upstream's
	// certificate is verified with), and is called after Register with
	// them: the URL without a trailing slash and the HTTP client to reach
	// it with.
	RegisterUpstream func(reg *node.Registry, up Upstream) error
	// Try lists commands dev's banner suggests, each without the binary's
	// name, e.g. "invoke Counter c increment"; dev inserts --addr after the
	// subcommand when its first node is not at the default address.
	// Default: "status".
	Try []string
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "durable"
	}
	if o.Short == "" {
		o.Short = "Durable objects with alarms, on etcd"
	}
	if o.RunAs == "" {
		o.RunAs = o.Name
	}
	if len(o.Try) == 0 {
		o.Try = []string{"status"}
	}
	return o
}

// Main runs the command line given by os.Args with a context that SIGINT and
// SIGTERM cancel, prints an error prefixed by the binary's name and exits
// with its exit code. It returns only if the command succeeded.
func Main(opts Options) {
	opts = opts.withDefaults()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Command(opts).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", opts.Name, err)
		os.Exit(exitCode(err))
	}
}

// Command returns the root command of a binary built with opts, for a binary
// that adds commands of its own or a test that runs the command line
// in-process (SetArgs, SetOut, ExecuteContext).
func Command(opts Options) *cobra.Command {
	return newRootCmd(opts.withDefaults())
}

// registry is the registry dev and agent serve: opts' classes, with fs's
// --upstream when opts take one.
func registry(opts Options, fs *pflag.FlagSet) (*node.Registry, error) {
	reg := node.NewRegistry()
	if opts.Register != nil {
		if err := opts.Register(reg); err != nil {
			return nil, err
		}
	}
	if opts.RegisterUpstream != nil {
		up, err := upstreamOf(fs)
		if err != nil {
			return nil, err
		}
		if err := opts.RegisterUpstream(reg, up); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// Upstream is where classes deliver: --upstream, and the client that
// reaches it.
type Upstream struct {
	// URL is --upstream without a trailing slash.
	URL string
	// HTTP sends the deliveries: a 10 s timeout, and with --upstream-ca
	// an https upstream's certificate verified against that CA only.
	HTTP *http.Client
}

// UpstreamTimeout bounds one delivery of Upstream.HTTP.
const UpstreamTimeout = 10 * time.Second

// upstreamOf reads --upstream and --upstream-ca; a CA file that cannot be
// read or holds no certificate is an error that names it.
func upstreamOf(fs *pflag.FlagSet) (Upstream, error) {
	url, _ := fs.GetString("upstream")
	up := Upstream{URL: strings.TrimSuffix(url, "/"), HTTP: &http.Client{Timeout: UpstreamTimeout}}
	ca, _ := fs.GetString("upstream-ca")
	if ca == "" {
		return up, nil
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return up, usageError{fmt.Errorf("--upstream-ca: %w", err)}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return up, usageError{fmt.Errorf("--upstream-ca %s holds no PEM certificate", ca)}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	up.HTTP.Transport = tr
	return up, nil
}
