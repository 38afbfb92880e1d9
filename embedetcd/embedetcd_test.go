package embedetcd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig is DefaultConfig made quick and quiet for tests.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.UnsafeNoFsync = true
	cfg.ElectionTimeout = TestElectionTimeout
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// start starts a server from cfg and closes it at cleanup.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// clientPort returns the port of s's single endpoint.
func clientPort(t *testing.T, s *Server) int {
	t.Helper()
	eps := s.Endpoints()
	require.Len(t, eps, 1)
	u, err := url.Parse(eps[0])
	require.NoError(t, err)
	assert.Equal(t, "http", u.Scheme)
	assert.Equal(t, "127.0.0.1", u.Hostname())
	port, err := strconv.Atoi(u.Port())
	require.NoError(t, err)
	return port
}

// putGet writes key=val through c and reads it back.
func putGet(t *testing.T, c *clientv3.Client, key, val string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Put(ctx, key, val)
	require.NoError(t, err)
	resp, err := c.Get(ctx, key)
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	assert.Equal(t, val, string(resp.Kvs[0].Value))
}

// getValue returns key's value through c, or "" if it is absent.
func getValue(t *testing.T, c *clientv3.Client, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, key)
	require.NoError(t, err)
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// tempEntries returns the names in dir that Start's temporary data
// directories use.
func tempEntries(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "durable-etcd-*"))
	require.NoError(t, err)
	return matches
}

// portFree reports whether port can be bound on loopback.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

func TestStartServesClients(t *testing.T) {
	t.Parallel()
	s := start(t, testConfig())
	clientPort(t, s)
	info, err := os.Stat(s.Dir())
	require.NoError(t, err)
	assert.True(t, info.IsDir())

	c, err := s.Client()
	require.NoError(t, err)
	defer func() { assert.NoError(t, c.Close()) }()
	putGet(t, c, "/hello", "world")
}

func TestLimitsAllowLargeRequests(t *testing.T) {
	t.Parallel()
	s := start(t, testConfig())
	c := TestClient(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Beyond etcd's default 1.5 MiB request limit.
	big := strings.Repeat("x", 1600*1024)
	_, err := c.Put(ctx, "/big", big)
	require.NoError(t, err)
	assert.Equal(t, big, getValue(t, c, "/big"))

	// Beyond etcd's default 128 operations per transaction.
	ops := make([]clientv3.Op, 1000)
	for i := range ops {
		ops[i] = clientv3.OpPut(fmt.Sprintf("/txn/%04d", i), "v")
	}
	resp, err := c.Txn(ctx).Then(ops...).Commit()
	require.NoError(t, err)
	assert.True(t, resp.Succeeded)
	got, err := c.Get(ctx, "/txn/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	assert.EqualValues(t, 1000, got.Count)
}

func TestTwoServersAtOnce(t *testing.T) {
	t.Parallel()
	servers := make([]*Server, 2)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Go(func() {
			s, err := Start(context.Background(), testConfig())
			if assert.NoError(t, err) {
				servers[i] = s
			}
		})
	}
	wg.Wait()
	for _, s := range servers {
		if s != nil {
			t.Cleanup(func() { assert.NoError(t, s.Close()) })
		}
	}
	require.NotNil(t, servers[0])
	require.NotNil(t, servers[1])

	assert.NotEqual(t, clientPort(t, servers[0]), clientPort(t, servers[1]))
	assert.NotEqual(t, servers[0].Dir(), servers[1].Dir())
	c0 := TestClient(t, servers[0])
	c1 := TestClient(t, servers[1])
	putGet(t, c0, "/k", "zero")
	putGet(t, c1, "/k", "one")
	assert.Equal(t, "zero", getValue(t, c0, "/k"))
}

func TestCloseRemovesTempDir(t *testing.T) {
	t.Parallel()
	s, err := Start(context.Background(), testConfig())
	require.NoError(t, err)
	dir := s.Dir()
	_, err = os.Stat(dir)
	require.NoError(t, err)
	port := clientPort(t, s)

	require.NoError(t, s.Close())
	_, err = os.Stat(dir)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.True(t, portFree(port), "client port still bound after Close")
	select {
	case <-s.Done():
	default:
		t.Error("Done not closed after Close")
	}
	_, err = s.Client()
	assert.Error(t, err)
	assert.NoError(t, s.Close(), "second Close")
}

func TestCallerDirKeptAndRestartKeepsData(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	cfg := testConfig()
	cfg.Dir = dir

	s1, err := Start(context.Background(), cfg)
	require.NoError(t, err)
	c1, err := s1.Client()
	require.NoError(t, err)
	putGet(t, c1, "/survives", "restart")
	require.NoError(t, c1.Close())
	require.NoError(t, s1.Close())
	_, err = os.Stat(filepath.Join(dir, "member"))
	require.NoError(t, err, "caller's data directory removed")

	// Restart on the same data, with new ports.
	s2 := start(t, cfg)
	assert.Equal(t, dir, s2.Dir())
	assert.Equal(t, "restart", getValue(t, TestClient(t, s2), "/survives"))
}

func TestFixedAddresses(t *testing.T) {
	t.Parallel()
	// Pick two ports, then hand them to Start as fixed addresses.
	picked, _, err := pickPorts(hostPort{host: "127.0.0.1", pick: true}, hostPort{})
	require.NoError(t, err)
	peer, _, err := pickPorts(hostPort{host: "127.0.0.1", pick: true}, hostPort{})
	require.NoError(t, err)
	if picked.port == peer.port {
		t.Skip("picked the same free port twice")
	}
	cfg := testConfig()
	cfg.ClientAddr = picked.listen()
	cfg.PeerAddr = peer.listen()
	s := start(t, cfg)
	assert.Equal(t, []string{"http://" + picked.listen()}, s.Endpoints())
	putGet(t, TestClient(t, s), "/fixed", "yes")
}

// The tests below set TMPDIR or testHooks and so do not run in parallel;
// parallel tests start only after every serial test has returned.

func TestStartFailsCleanly(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { assert.NoError(t, busy.Close()) }()

	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name   string
		ctx    context.Context
		cfg    func(*Config)
		target error
		errSub string
	}{
		{name: "canceled context", ctx: canceled, target: context.Canceled},
		{name: "fixed client port in use", cfg: func(c *Config) { c.ClientAddr = busy.Addr().String() }, target: syscall.EADDRINUSE},
		{name: "fixed peer port in use", cfg: func(c *Config) { c.PeerAddr = busy.Addr().String() }, target: syscall.EADDRINUSE},
		{name: "client address without port", cfg: func(c *Config) { c.ClientAddr = "127.0.0.1" }, errSub: "client address"},
		{name: "peer port out of range", cfg: func(c *Config) { c.PeerAddr = "127.0.0.1:70000" }, errSub: "peer address"},
		{name: "election timeout too short", cfg: func(c *Config) { c.ElectionTimeout = time.Millisecond }, errSub: "election timeout"},
		{name: "bad compaction mode", cfg: func(c *Config) { c.AutoCompactionMode = "sometimes" }, errSub: "sometimes"},
		{name: "host name to bind", cfg: func(c *Config) { c.ClientAddr = "not-an-ip:2379" }, errSub: "not-an-ip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			s, err := Start(ctx, cfg)
			require.Error(t, err)
			assert.Nil(t, s)
			if tt.target != nil {
				assert.ErrorIs(t, err, tt.target)
			}
			assert.Contains(t, err.Error(), tt.errSub)
			assert.Empty(t, tempEntries(t, tmp), "temporary data directory left behind")
		})
	}
}

func TestStartCanceledWhileStarting(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var port int
	testHooks.started = func(e *embed.Etcd) {
		port = e.Clients[0].Addr().(*net.TCPAddr).Port
		cancel()
	}
	defer func() { testHooks.started = nil }()

	s, err := Start(ctx, testConfig())
	require.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, s)
	assert.Empty(t, tempEntries(t, tmp), "temporary data directory left behind")
	require.NotZero(t, port)
	assert.True(t, portFree(port), "client port still bound after failed Start")
}

func TestStartRetriesTakenPort(t *testing.T) {
	var (
		attempts int
		taken    net.Listener
	)
	testHooks.picked = func(client hostPort) {
		attempts++
		if attempts > 1 {
			return
		}
		// Someone else binds the port between picking and starting.
		ln, err := net.Listen("tcp", client.listen())
		require.NoError(t, err)
		taken = ln
	}
	defer func() { testHooks.picked = nil }()

	var logs syncBuffer
	cfg := testConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := start(t, cfg)
	require.NotNil(t, taken)
	defer func() { assert.NoError(t, taken.Close()) }()
	assert.Equal(t, 2, attempts)
	assert.NotEqual(t, taken.Addr().(*net.TCPAddr).Port, clientPort(t, s))
	assert.Contains(t, logs.String(), "embedded etcd port taken, retrying on new ports")
	putGet(t, TestClient(t, s), "/retried", "ok")
}

func TestHelpers(t *testing.T) {
	t.Parallel()
	s := Test(t)
	c := TestClient(t, s)

	var prefixes []string
	for _, name := range []string{"a", "a", "b/c d"} {
		t.Run(name, func(t *testing.T) {
			p := UniquePrefix(t)
			assert.Regexp(t, `^/t/TestHelpers_[A-Za-z0-9_-]+/[0-9a-f]{6}/$`, p)
			putGet(t, c, p+"key", name)
			prefixes = append(prefixes, p)
		})
	}
	require.Len(t, prefixes, 3)
	assert.Contains(t, prefixes[2], "/TestHelpers_b_c_d/")
	seen := map[string]bool{}
	for i, p := range prefixes {
		assert.False(t, seen[p], "prefix %q issued twice", p)
		seen[p] = true
		assert.Equal(t, []string{"a", "a", "b/c d"}[i], getValue(t, c, p+"key"))
	}
}

func TestSanitize(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"TestX":            "TestX",
		"TestX/sub_case-1": "TestX_sub_case-1",
		"a b.c:d":          "a_b_c_d",
		"é/ü":              "___",
		"":                 "",
	}
	for in, want := range tests {
		assert.Equal(t, want, sanitize(in), "sanitize(%q)", in)
	}
}

func TestParseAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in            string
		want          hostPort
		wantAdvertise string
		wantErr       bool
	}{
		{in: "", want: hostPort{host: "127.0.0.1", pick: true}, wantAdvertise: "127.0.0.1:0"},
		{in: ":0", want: hostPort{host: "127.0.0.1", pick: true}, wantAdvertise: "127.0.0.1:0"},
		{in: ":2379", want: hostPort{host: "127.0.0.1", port: 2379}, wantAdvertise: "127.0.0.1:2379"},
		{in: "127.0.0.2:2380", want: hostPort{host: "127.0.0.2", port: 2380}, wantAdvertise: "127.0.0.2:2380"},
		{in: "0.0.0.0:2379", want: hostPort{host: "0.0.0.0", port: 2379}, wantAdvertise: "127.0.0.1:2379"},
		{in: "[::]:2379", want: hostPort{host: "::", port: 2379}, wantAdvertise: "[::1]:2379"},
		{in: "localhost:0", want: hostPort{host: "localhost", pick: true}, wantAdvertise: "localhost:0"},
		{in: "127.0.0.1", wantErr: true},
		{in: "127.0.0.1:x", wantErr: true},
		{in: "127.0.0.1:-1", wantErr: true},
		{in: "127.0.0.1:65536", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseAddr(tt.in)
		if tt.wantErr {
			assert.Error(t, err, "parseAddr(%q)", tt.in)
			continue
		}
		require.NoError(t, err, "parseAddr(%q)", tt.in)
		assert.Equal(t, tt.want, got, "parseAddr(%q)", tt.in)
		assert.Equal(t, tt.wantAdvertise, got.advertise(), "advertise of %q", tt.in)
	}
}

func TestWithDefaults(t *testing.T) {
	t.Parallel()
	got := Config{}.withDefaults()
	d := DefaultConfig()
	assert.Equal(t, d.Name, got.Name)
	assert.Equal(t, d.MaxTxnOps, got.MaxTxnOps)
	assert.Equal(t, d.MaxRequestBytes, got.MaxRequestBytes)
	assert.Equal(t, d.AutoCompactionMode, got.AutoCompactionMode)
	assert.Equal(t, d.AutoCompactionRetention, got.AutoCompactionRetention)
	assert.Equal(t, d.StartTimeout, got.StartTimeout)
	assert.Equal(t, d.ElectionTimeout, got.ElectionTimeout)
	assert.Equal(t, slog.LevelError, got.EtcdLogLevel.Level())
	assert.NotNil(t, got.Logger)
	assert.Greater(t, d.MaxRequestBytes, uint(embed.DefaultMaxRequestBytes))

	set := Config{Name: "n", MaxTxnOps: 7, AutoCompactionRetention: "0", EtcdLogLevel: slog.LevelDebug}.withDefaults()
	assert.Equal(t, "n", set.Name)
	assert.Equal(t, uint(7), set.MaxTxnOps)
	assert.Equal(t, "0", set.AutoCompactionRetention)
	assert.Equal(t, slog.LevelDebug, set.EtcdLogLevel.Level())
}
