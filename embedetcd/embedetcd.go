// Package embedetcd runs a real, single-member etcd server inside the current
// process, for `durable dev` and for tests.
//
// Job: Start brings up go.etcd.io/etcd/server/v3/embed on loopback, waits
// until the member has elected itself leader and serves client requests, and
// hands back a Server that knows its client endpoints and can dial clients.
// Close stops the member and waits for every etcd goroutine it owns to end.
//
// Invariants:
//   - A Server returned by Start is ready: its Endpoints accept KV requests.
//   - A failed Start leaves nothing behind: the member is stopped, its ports
//     are released and a data directory Start created is removed.
//   - Ports Start picks itself are free loopback ports; a start that loses
//     the race for one ("address already in use") is retried on new ports.
//   - A data directory Start created (Config.Dir empty) is removed by Close;
//     a caller's directory is kept, so `durable dev` can restart on its data.
//   - etcd's own zap logging is routed into Config.Logger at
//     Config.EtcdLogLevel (error by default), never straight to stderr;
//     errors etcd is known to log on a healthy start or stop arrive as
//     warnings, so a clean run logs no error.
//
// Concurrency: Start may run concurrently with other Starts; each Server owns
// its ports and directory. All Server methods are safe for concurrent use and
// Close is idempotent.
//
// For tests: Test starts a quick, quiet server owned by one test,
// TestClient dials a client owned by one test, and UniquePrefix gives many
// tests isolated key prefixes on one shared server.
package embedetcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

const (
	// DefaultName is the etcd member name used when Config.Name is empty.
	DefaultName = "durable"
	// DefaultMaxTxnOps is the default Config.MaxTxnOps. etcd's own default
	// (128) is far below what one event commit of a busy object may write.
	DefaultMaxTxnOps uint = 10240
	// DefaultMaxRequestBytes is the default Config.MaxRequestBytes: etcd's
	// own 1.5 MiB plus 512 KiB of headroom for the keys and compare clauses
	// of a transaction that carries a maximum-size value.
	DefaultMaxRequestBytes uint = 2 * 1024 * 1024
	// DefaultAutoCompactionMode is the default Config.AutoCompactionMode.
	DefaultAutoCompactionMode = "periodic"
	// DefaultAutoCompactionRetention is the default
	// Config.AutoCompactionRetention: keep one hour of history.
	DefaultAutoCompactionRetention = "1h"
	// DefaultStartTimeout is the default Config.StartTimeout.
	DefaultStartTimeout = 30 * time.Second
	// DefaultElectionTimeout is the default Config.ElectionTimeout, etcd's.
	DefaultElectionTimeout = time.Second
	// minElectionTimeout is the shortest Config.ElectionTimeout: ten ticks
	// of etcd's 1 ms resolution.
	minElectionTimeout = 10 * time.Millisecond

	// startAttempts bounds the starts tried when a picked port was taken
	// between picking it and etcd binding it.
	startAttempts = 5
	// grpcOverheadBytes mirrors the slack etcd adds to MaxRequestBytes for
	// its gRPC receive limit, so clients may send what the server accepts.
	grpcOverheadBytes = 512 * 1024
	// dialTimeout bounds the first connection of a client from Client.
	dialTimeout = 5 * time.Second
)

// testHooks lets this package's tests act between the steps of a start.
// Only tests that do not run in parallel set them, and they reset them
// before returning.
var testHooks struct {
	// picked runs after the client port of an attempt is chosen.
	picked func(client hostPort)
	// started runs after etcd started, before the wait for readiness.
	started func(e *embed.Etcd)
}

// Config configures Start. Start from DefaultConfig; zero fields of a literal
// Config get the same defaults.
type Config struct {
	// Dir is the etcd data directory. Empty: a new temporary directory that
	// Close removes. A directory that already holds a member's data restarts
	// that member with its data.
	Dir string
	// ClientAddr is the host:port clients connect to. Empty, an empty host or
	// port 0 pick 127.0.0.1 and a free port. An unspecified host (0.0.0.0,
	// ::) listens on all interfaces and advertises loopback.
	ClientAddr string
	// PeerAddr is the host:port of the raft peer listener, with the same
	// rules as ClientAddr. A restarted single member does not need the same
	// peer port.
	PeerAddr string
	// Name is the etcd member name; DefaultName if empty.
	Name string
	// InitialCluster lists every member of a new multi-member cluster as
	// "name=http://host:peerport,…" (etcd's --initial-cluster). Empty: a
	// single-member cluster. Members of a multi-member cluster need fixed
	// client and peer ports, and must be started concurrently (each waits
	// for a quorum). A member restarted from its data ignores it.
	InitialCluster string
	// MaxTxnOps is the most operations one transaction may hold.
	MaxTxnOps uint
	// MaxRequestBytes is the largest client request etcd accepts; clients
	// from Client may send as much.
	MaxRequestBytes uint
	// AutoCompactionMode is "periodic" or "revision".
	AutoCompactionMode string
	// AutoCompactionRetention is a duration ("1h") in periodic mode or a
	// revision count ("1000") in revision mode; "0" disables compaction.
	AutoCompactionRetention string
	// StartTimeout bounds the wait for the member to become ready.
	StartTimeout time.Duration
	// ElectionTimeout is raft's election timeout; the heartbeat interval is
	// a tenth of it. A fresh single member becomes ready after about one
	// timeout, so tests use a short one. Zero: etcd's default, 1s.
	ElectionTimeout time.Duration
	// QuotaBackendBytes is the most the member's database may hold before
	// etcd refuses writes (its NOSPACE alarm). Zero: etcd's default, 2 GiB.
	QuotaBackendBytes int64
	// UnsafeNoFsync disables fsync in etcd. Only for tests and throwaway
	// dev clusters: a crash of the machine loses acknowledged writes.
	UnsafeNoFsync bool
	// TLSCert and TLSKey, when set, serve clients over TLS (https://
	// endpoints) with this certificate; TLSCA, when set, is the CA Client
	// verifies it with. Peers stay plaintext (a dev member has none).
	TLSCert, TLSKey, TLSCA string
	// ClientCertAuth requires clients to present a certificate TLSCA
	// signed; with etcd's auth on, its common name is the user. Client then
	// presents ClientCert and ClientKey.
	ClientCertAuth        bool
	ClientCert, ClientKey string
	// BcryptCost is the cost of hashing auth passwords; zero: etcd's
	// default. Tests lower it (bcrypt under the race detector takes
	// seconds per hash).
	BcryptCost uint
	// Logger receives this package's logs and etcd's; etcd's carry the
	// attribute origin=etcd. Nil: slog.Default().
	Logger *slog.Logger
	// EtcdLogLevel is the least level of etcd's own logs passed to Logger.
	// Nil: slog.LevelError, which keeps tests and `durable dev` quiet.
	EtcdLogLevel slog.Leveler
}

// neverWarn is a slow-request threshold no request reaches.
const neverWarn = 24 * time.Hour

// DefaultConfig returns the configuration `durable dev` uses: a temporary
// directory, loopback on free ports, 10240 operations and 2 MiB per request,
// one hour of history, etcd's election timing, and etcd's own logs at error
// level only.
func DefaultConfig() Config {
	return Config{
		Name:                    DefaultName,
		MaxTxnOps:               DefaultMaxTxnOps,
		MaxRequestBytes:         DefaultMaxRequestBytes,
		AutoCompactionMode:      DefaultAutoCompactionMode,
		AutoCompactionRetention: DefaultAutoCompactionRetention,
		StartTimeout:            DefaultStartTimeout,
		ElectionTimeout:         DefaultElectionTimeout,
		EtcdLogLevel:            slog.LevelError,
	}
}

// withDefaults fills the zero fields of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Name == "" {
		c.Name = d.Name
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = d.MaxTxnOps
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = d.MaxRequestBytes
	}
	if c.AutoCompactionMode == "" {
		c.AutoCompactionMode = d.AutoCompactionMode
	}
	if c.AutoCompactionRetention == "" {
		c.AutoCompactionRetention = d.AutoCompactionRetention
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = d.StartTimeout
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = d.ElectionTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.EtcdLogLevel == nil {
		c.EtcdLogLevel = d.EtcdLogLevel
	}
	return c
}

// Server is a running embedded etcd member. Its methods are safe for
// concurrent use.
type Server struct {
	etcd      *embed.Etcd
	dir       string
	removeDir bool
	endpoints []string
	tlsClient transport.TLSInfo // what Client dials with, when TLS is on
	maxSend   int
	log       *slog.Logger
	// stopping is set when Close begins; see slogCore.
	stopping *atomic.Bool

	// errsDone is closed when the goroutine draining etcd.Err() ends.
	errsDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Start starts an etcd member as cfg says and returns once it serves client
// requests. It fails if ctx ends or cfg.StartTimeout passes first; a failed
// Start leaves no server, port or created directory behind.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embedetcd: start: %w", err)
	}
	if cfg.ElectionTimeout < minElectionTimeout {
		return nil, fmt.Errorf("embedetcd: election timeout %v is below %v", cfg.ElectionTimeout, minElectionTimeout)
	}
	client, err := parseAddr(cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: client address: %w", err)
	}
	peer, err := parseAddr(cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: peer address: %w", err)
	}

	dir, removeDir := cfg.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "durable-etcd-"); err != nil {
			return nil, fmt.Errorf("embedetcd: create data directory: %w", err)
		}
		removeDir = true
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedetcd: create data directory: %w", err)
	}

	if cfg.InitialCluster != "" && (client.pick || peer.pick) {
		return nil, errors.New("embedetcd: a member of a multi-member cluster needs fixed client and peer ports")
	}
	attempts := 1
	if client.pick || peer.pick {
		attempts = startAttempts
	}
	for attempt := 1; ; attempt++ {
		s, err := startOnce(ctx, cfg, dir, client, peer)
		if err == nil {
			s.removeDir = removeDir
			return s, nil
		}
		if attempt < attempts && errors.Is(err, syscall.EADDRINUSE) {
			cfg.Logger.Warn("embedded etcd port taken, retrying on new ports",
				slog.Int("attempt", attempt), slog.Any("error", err))
			continue
		}
		if removeDir {
			if rmErr := os.RemoveAll(dir); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("embedetcd: remove data directory: %w", rmErr))
			}
		}
		return nil, err
	}
}

// startOnce makes one attempt at starting the member, on freshly picked
// ports where the configuration asks for picking.
func startOnce(ctx context.Context, cfg Config, dir string, client, peer hostPort) (*Server, error) {
	client, peer, err := pickPorts(client, peer)
	if err != nil {
		return nil, err
	}
	if testHooks.picked != nil {
		testHooks.picked(client)
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	clientURL := url.URL{Scheme: scheme, Host: client.listen()}
	peerURL := url.URL{Scheme: "http", Host: peer.listen()}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = dir
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{{Scheme: scheme, Host: client.advertise()}}
	ec.ClientTLSInfo.CertFile, ec.ClientTLSInfo.KeyFile = cfg.TLSCert, cfg.TLSKey
	if cfg.ClientCertAuth {
		ec.ClientTLSInfo.ClientCertAuth, ec.ClientTLSInfo.TrustedCAFile = true, cfg.TLSCA
	}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{{Scheme: "http", Host: peer.advertise()}}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	if cfg.InitialCluster != "" {
		ec.InitialCluster = cfg.InitialCluster
	} else {
		// One member has no follower to catch up: keep little of the
		// raft log in memory. With the defaults (a snapshot every 10,000
		// entries, 5,000 kept) and the committers' Txns of hundreds of
		// operations, the log held hundreds of MB of this process's heap
		// in a 5-minute soak. The data is in the backend either way.
		ec.SnapshotCount, ec.SnapshotCatchUpEntries = 1000, 100
	}
	ec.ElectionMs = uint(cfg.ElectionTimeout.Milliseconds())
	ec.TickMs = ec.ElectionMs / 10
	ec.MaxTxnOps = cfg.MaxTxnOps
	ec.MaxRequestBytes = cfg.MaxRequestBytes
	ec.AutoCompactionMode = cfg.AutoCompactionMode
	ec.AutoCompactionRetention = cfg.AutoCompactionRetention
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	if cfg.BcryptCost > 0 {
		ec.BcryptCost = cfg.BcryptCost
	}
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	ec.Logger = "zap"
	ec.LogLevel = zapLevelName(cfg.EtcdLogLevel.Level())
	if cfg.EtcdLogLevel.Level() > slog.LevelWarn {
		// etcd formats a slow request's whole text (a committer's Txn of
		// hundreds of operations) before its logger drops the warning:
		// under a backlog every request is slow, and that formatting took
		// 5 % of a soak's CPU for logs nobody reads. Warnings that are not
		// passed on are not built (the thresholds are read at start).
		ec.WarningApplyDuration = neverWarn
		ec.WarningUnaryRequestDuration = neverWarn
	}
	etcdLog := cfg.Logger.With(slog.String("origin", "etcd"))
	stopping := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(newSlogCore(etcdLog.Handler(), cfg.EtcdLogLevel, stopping)))

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: start etcd: %w", err)
	}
	if testHooks.started != nil {
		testHooks.started(e)
	}
	if err := waitReady(ctx, e, cfg.StartTimeout); err != nil {
		stopping.Store(true)
		e.Close()
		return nil, err
	}

	s := &Server{
		etcd:      e,
		dir:       dir,
		endpoints: []string{scheme + "://" + client.advertise()},
		tlsClient: transport.TLSInfo{TrustedCAFile: cfg.TLSCA, CertFile: cfg.ClientCert, KeyFile: cfg.ClientKey},
		maxSend:   int(cfg.MaxRequestBytes) + grpcOverheadBytes,
		log:       cfg.Logger,
		stopping:  stopping,
		errsDone:  make(chan struct{}),
	}
	go s.drainErrors()
	s.log.Info("embedded etcd started",
		slog.String("name", cfg.Name),
		slog.String("endpoint", s.endpoints[0]),
		slog.String("peer_url", ec.AdvertisePeerUrls[0].String()),
		slog.String("dir", dir))
	return s, nil
}

// waitReady waits for e to become ready. It fails if ctx ends, timeout
// passes or e stops first; a ctx that has ended wins over readiness.
func waitReady(ctx context.Context, e *embed.Etcd, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case <-ctx.Done():
	case <-timer.C:
		return fmt.Errorf("embedetcd: not ready after %v", timeout)
	case <-e.Server.StopNotify():
		return errors.New("embedetcd: etcd stopped while starting")
	case err := <-e.Err():
		return fmt.Errorf("embedetcd: etcd failed while starting: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedetcd: start: %w", err)
	}
	return nil
}

// drainErrors logs the errors etcd reports while serving; it ends when
// etcd closes the channel in Close.
func (s *Server) drainErrors() {
	defer close(s.errsDone)
	for err := range s.etcd.Err() {
		if err != nil {
			s.log.Error("embedded etcd serving failed", slog.Any("error", err))
		}
	}
}

// Endpoints returns the client URLs of the member, such as
// "http://127.0.0.1:40123".
func (s *Server) Endpoints() []string {
	return append([]string(nil), s.endpoints...)
}

// Dir returns the member's data directory.
func (s *Server) Dir() string { return s.dir }

// Done returns a channel closed once the member has stopped, by Close or by
// a fatal etcd error.
func (s *Server) Done() <-chan struct{} { return s.etcd.Server.StopNotify() }

// Client dials a new client to the member. Its zap logging is discarded and
// it may send requests up to Config.MaxRequestBytes. The caller closes it.
func (s *Server) Client() (*clientv3.Client, error) {
	select {
	case <-s.Done():
		return nil, errors.New("embedetcd: server is stopped")
	default:
	}
	var tlsCfg *tls.Config
	if s.tlsClient.TrustedCAFile != "" {
		var err error
		if tlsCfg, err = s.tlsClient.ClientConfig(); err != nil {
			return nil, fmt.Errorf("embedetcd: %w", err)
		}
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:          s.Endpoints(),
		TLS:                tlsCfg,
		DialTimeout:        dialTimeout,
		MaxCallSendMsgSize: s.maxSend,
		Logger:             zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("embedetcd: dial: %w", err)
	}
	return c, nil
}

// Close stops the member, waits for it to end and removes the data
// directory if Start created it. Only the first call does the work; every
// call returns its result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.stopping.Store(true)
		s.etcd.Close()
		<-s.errsDone
		if s.removeDir {
			if err := os.RemoveAll(s.dir); err != nil {
				s.closeErr = fmt.Errorf("embedetcd: remove data directory: %w", err)
			}
		}
		s.log.Info("embedded etcd stopped", slog.String("endpoint", s.endpoints[0]))
	})
	return s.closeErr
}

// hostPort is one listen address of the member.
type hostPort struct {
	host string
	port int
	// pick is set when the port is to be picked free for each attempt.
	pick bool
}

// parseAddr parses a Config address; see Config.ClientAddr for the rules.
func parseAddr(addr string) (hostPort, error) {
	if addr == "" {
		return hostPort{host: "127.0.0.1", pick: true}, nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return hostPort{}, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return hostPort{}, fmt.Errorf("invalid port %q in %q", portStr, addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return hostPort{host: host, port: port, pick: port == 0}, nil
}

// listen returns the address to bind.
func (h hostPort) listen() string {
	return net.JoinHostPort(h.host, strconv.Itoa(h.port))
}

// advertise returns the address to tell clients and peers: loopback in
// place of an unspecified host.
func (h hostPort) advertise() string {
	host := h.host
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(h.port))
}

// pickPorts replaces port 0 of each address to pick with a port that was
// free a moment ago. Both listeners are held until both ports are picked, so
// the picked ports differ from each other.
func pickPorts(client, peer hostPort) (hostPort, hostPort, error) {
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			_ = ln.Close()
		}
	}()
	pick := func(a hostPort) (hostPort, error) {
		if !a.pick {
			return a, nil
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(a.host, "0"))
		if err != nil {
			return a, fmt.Errorf("embedetcd: pick free port on %s: %w", a.host, err)
		}
		held = append(held, ln)
		a.port = ln.Addr().(*net.TCPAddr).Port
		return a, nil
	}
	client, err := pick(client)
	if err != nil {
		return client, peer, err
	}
	peer, err = pick(peer)
	return client, peer, err
}
