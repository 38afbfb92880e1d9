package agent

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/durable-run/durable/security"
)

// Security secures a node. Its zero value is plaintext and open: for
// loopback (durable dev) only; `durable agent` refuses to listen on any
// other address that way unless told --insecure.
type Security struct {
	// TLS is the node's certificate and key, and the CA that signs the
	// cluster's certificates: it verifies clients and the other nodes.
	// With it the node serves TLS 1.3 only, calls other nodes with its own
	// certificate and accepts a forwarded call only from a certificate
	// that names a node. The files are read again when they change.
	TLS security.Files
	// ClientCertOptional lets callers connect without a client certificate
	// (they then need a bearer token); by default the TLS handshake
	// requires one (mutual TLS).
	ClientCertOptional bool
	// Policy is the auth policy file (roles of client certificates and
	// tokens, see security.Policy). Empty with TLS: every certificate the CA
	// signed may do everything.
	Policy string
	// Reflection serves gRPC server reflection (it needs the read role
	// when the node is secured).
	Reflection bool
	// EtcdUser and EtcdPassword authenticate the node to etcd (etcd's
	// user/password auth), besides EtcdTLS.
	EtcdUser, EtcdPassword string
	// HTTPAllowedHosts are names the node's HTTP listeners (operations,
	// front door, profiles) are reached by when it is not secured: there
	// they answer only requests whose Host header is an IP address,
	// localhost or one of these ("*": any), so that a web page cannot
	// reach an unsecured node by pointing its own name at the node's
	// address (DNS rebinding; see security.HostFilter). Unused when
	// secured.
	HTTPAllowedHosts []string
}

// Enabled reports whether the node serves TLS.
func (s Security) Enabled() bool { return !s.TLS.Empty() }

func (s Security) validate() error {
	var errs []error
	if !s.TLS.Empty() && (s.TLS.Cert == "" || s.TLS.Key == "" || s.TLS.CA == "") {
		errs = append(errs, errors.New("TLS needs the node's certificate, its key and the cluster's CA (nodes verify each other with it)"))
	}
	if s.TLS.Empty() && (s.Policy != "" || s.ClientCertOptional) {
		errs = append(errs, errors.New("an auth policy or optional client certificates need TLS (tokens are never sent in plaintext)"))
	}
	if s.EtcdPassword != "" && s.EtcdUser == "" {
		errs = append(errs, errors.New("an etcd password needs an etcd user"))
	}
	if err := security.ValidateAllowedHosts(s.HTTPAllowedHosts); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Limits bound what callers can hold on the gRPC server; zero fields take
// the defaults below.
type Limits struct {
	// MaxConnections bounds open connections: more wait to be accepted.
	MaxConnections int
	// MaxConcurrentStreams bounds the calls in flight on one connection.
	MaxConcurrentStreams uint32
	// MaxConnectionIdle closes a connection with no call for this long.
	MaxConnectionIdle time.Duration
	// HandshakeTimeout bounds a new connection's TLS and HTTP/2 handshake.
	HandshakeTimeout time.Duration
	// KeepaliveMinTime: a client pinging more often is disconnected.
	KeepaliveMinTime time.Duration
	// MaxMessageBytes bounds a request and a reply message.
	MaxMessageBytes int
}

// Default limits.
const (
	DefaultMaxConnections       = 4096
	DefaultMaxConcurrentStreams = 1024
	DefaultMaxConnectionIdle    = 2 * time.Minute
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultKeepaliveMinTime     = 10 * time.Second
	// DefaultMaxMessageBytes is gRPC's own default, said explicitly: a
	// payload, a reply (node.Config.MaxReplyBytes stays under it) or a
	// status page of alarms.
	DefaultMaxMessageBytes = 4 << 20
)

func (l *Limits) applyDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxConnections, DefaultMaxConnections)
	def(&l.MaxMessageBytes, DefaultMaxMessageBytes)
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	for _, d := range []struct {
		v *time.Duration
		d time.Duration
	}{{&l.MaxConnectionIdle, DefaultMaxConnectionIdle}, {&l.HandshakeTimeout, DefaultHandshakeTimeout}, {&l.KeepaliveMinTime, DefaultKeepaliveMinTime}} {
		if *d.v <= 0 {
			*d.v = d.d
		}
	}
}

func (l Limits) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.ConnectionTimeout(l.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: l.MaxConnectionIdle, Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(l.MaxMessageBytes),
		grpc.MaxSendMsgSize(l.MaxMessageBytes),
	}
}

// limitListener bounds lis to max open connections and counts them.
func limitListener(lis net.Listener, max int, open *atomic.Int64) net.Listener {
	return &countingListener{Listener: netutil.LimitListener(lis, max), open: open}
}

type countingListener struct {
	net.Listener
	open *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &countedConn{Conn: c, open: l.open}, nil
}

type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// secure builds the node's TLS source, guard and credentials when the
// node is secured: the server's options, and the credentials the node
// calls its peers with.
func (a *Agent) secure() ([]grpc.ServerOption, error) {
	s := a.cfg.Security
	if !s.Enabled() {
		return nil, nil
	}
	src, err := security.NewSource(s.TLS)
	if err != nil {
		return nil, err
	}
	if id, _ := src.Identity(); id.Kind != security.Node || id.Name != a.cfg.Node.ID {
		return nil, fmt.Errorf("the certificate %s names %s, not %q: a node's certificate names the node (spiffe://%s/node/<id>)",
			s.TLS.Cert, describe(id), a.cfg.Node.ID, security.TrustDomain)
	}
	src.OnReload = func(err error) {
		result := "ok"
		if err != nil {
			result = "error"
			a.log.Error("TLS files not reloaded; the previous ones stay in use", "cert", s.TLS.Cert, "err", err)
		} else {
			a.log.Info("TLS files reloaded", "cert", s.TLS.Cert)
		}
		a.metrics.Reloads.WithLabelValues("tls", result).Inc()
	}
	a.guard, err = security.NewGuard(security.GuardConfig{Policy: s.Policy, Logger: a.log, Metrics: a.metrics})
	if err != nil {
		return nil, err
	}
	a.tls = src
	a.cfg.Node.PeerCredentials = credentials.NewTLS(src.PeerConfig())
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(src.ServerConfig(!s.ClientCertOptional))),
		grpc.ChainUnaryInterceptor(a.guard.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(a.guard.StreamInterceptor()),
	}, nil
}

func describe(id security.Identity) string {
	if id.Kind == security.Node {
		return fmt.Sprintf("node %q", id.Name)
	}
	return id.String()
}

// opsPermission is what a request to the operations listener needs when
// the node is secured: probes and the dashboard's static files are open,
// profiles and the dashboard's requeue (it changes the cluster, as
// Admin.RequeueDeadLetter does) need admin, the rest (metrics, the
// dashboard's data) read.
func opsPermission(path string) security.Permission {
	switch {
	case path == "/healthz", path == "/", path == "/index.html", path == "/app.js", path == "/style.css", path == "/favicon.ico":
		return security.PermOpen
	case strings.HasPrefix(path, "/debug/pprof"), path == "/api/requeue":
		return security.PermAdmin
	}
	return security.PermRead
}
