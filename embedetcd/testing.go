package embedetcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

// TestElectionTimeout is the Config.ElectionTimeout Test uses: a fresh
// member is ready after about this long.
const TestElectionTimeout = 100 * time.Millisecond

// Test starts a fresh member for tb in a directory under tb.TempDir() and
// closes it when tb's cleanup runs. It runs without fsync, with
// TestElectionTimeout, and discards logs; it fails tb if the member does
// not start.
//
// Each member costs a few goroutines, file handles and a bbolt mmap; tests
// that only need isolation should share one Server and use UniquePrefix.
func Test(tb testing.TB) *Server {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(tb.TempDir(), "etcd")
	cfg.UnsafeNoFsync = true
	cfg.BcryptCost = 4 // bcrypt.MinCost
	cfg.ElectionTimeout = TestElectionTimeout
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := Start(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("embedetcd: start test server: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("embedetcd: close test server: %v", err)
		}
	})
	return s
}

// TestMember is one member of a TestCluster: its configuration restarts it
// (Start(ctx, Config)) from its data after Close.
type TestMember struct {
	Config Config
	Server *Server
}

// PeerHTTPLeaks lets through the goroutines of etcd's peer HTTP transport,
// which a multi-member cluster leaves behind after Close (idle keep-alive
// connections between members): pass it to Main in packages that use
// TestCluster.
var PeerHTTPLeaks = []goleak.Option{
	goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
	goleak.IgnoreAnyFunction("net/http.(*connReader).backgroundRead"),
}

// TestCluster starts an n-member cluster for tb on loopback (fixed free
// ports, data under tb.TempDir(), no fsync, TestElectionTimeout, logs
// discarded) and closes every member still running at cleanup. It returns
// the members and the client endpoints of all of them.
func TestCluster(tb testing.TB, n int) ([]*TestMember, []string) {
	tb.Helper()
	// Ports are picked free and bound a moment later; another process can
	// take one in between. Then the whole cluster starts again on new ports.
	for attempt := 1; ; attempt++ {
		members, endpoints, err := startTestCluster(tb, n)
		if err == nil {
			tb.Cleanup(func() {
				for _, m := range members {
					_ = m.Server.Close()
				}
			})
			return members, endpoints
		}
		if !errors.Is(err, syscall.EADDRINUSE) || attempt == 5 {
			tb.Fatalf("embedetcd: start test cluster: %v", err)
		}
	}
}

// startTestCluster starts n members; on failure it closes those that
// started.
func startTestCluster(tb testing.TB, n int) ([]*TestMember, []string, error) {
	var members []*TestMember
	var peers, endpoints []string
	for i := 0; i < n; i++ {
		cfg := DefaultConfig()
		cfg.Name = fmt.Sprintf("m%d", i+1)
		cfg.Dir = filepath.Join(tb.TempDir(), cfg.Name)
		cfg.ClientAddr, cfg.PeerAddr = freeAddr(tb), freeAddr(tb)
		cfg.UnsafeNoFsync = true
		cfg.BcryptCost = 4 // bcrypt.MinCost
		cfg.ElectionTimeout = TestElectionTimeout
		cfg.Logger = slog.New(slog.DiscardHandler)
		peers = append(peers, cfg.Name+"=http://"+cfg.PeerAddr)
		endpoints = append(endpoints, "http://"+cfg.ClientAddr)
		members = append(members, &TestMember{Config: cfg})
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range members {
		m.Config.InitialCluster = strings.Join(peers, ",")
		wg.Go(func() { m.Server, errs[i] = Start(context.Background(), m.Config) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, m := range members {
			if m.Server != nil {
				_ = m.Server.Close()
			}
		}
		return nil, nil, err
	}
	return members, endpoints, nil
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("embedetcd: pick a port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestClient dials a client to s for tb and closes it when tb's cleanup
// runs; it fails tb if the dial fails.
func TestClient(tb testing.TB, s *Server) *clientv3.Client {
	tb.Helper()
	c, err := s.Client()
	if err != nil {
		tb.Fatalf("embedetcd: dial test client: %v", err)
	}
	tb.Cleanup(func() {
		// A client the test closed already reports context.Canceled.
		if err := c.Close(); err != nil && !errors.Is(err, context.Canceled) {
			tb.Errorf("embedetcd: close test client: %v", err)
		}
	})
	return c
}

// issuedPrefixes holds every prefix UniquePrefix returned in this process.
var issuedPrefixes sync.Map

// UniquePrefix returns a key prefix of the form "/t/<test name>/<6 hex>/"
// that no other call in this process returns, so tests sharing one server
// keep apart. The test name has every character other than [A-Za-z0-9_-]
// replaced by '_'.
func UniquePrefix(tb testing.TB) string {
	tb.Helper()
	name := sanitize(tb.Name())
	for {
		var b [3]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails.
		p := "/t/" + name + "/" + hex.EncodeToString(b[:]) + "/"
		if _, taken := issuedPrefixes.LoadOrStore(p, struct{}{}); !taken {
			return p
		}
	}
}

// sanitize replaces every character of name outside [A-Za-z0-9_-] with '_'.
func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '_', r == '-':
			return r
		default:
			return '_'
		}
	}, name)
}

// Main runs a package's tests against one member they all share: it starts
// the member (without fsync), stores it in *shared, runs m, closes the
// member and exits. After a passing run it fails the run if a goroutine was
// left behind, apart from those ignore lets through. Call it from TestMain;
// tests keep apart with UniquePrefix.
func Main(m *testing.M, shared **Server, ignore ...goleak.Option) {
	cfg := DefaultConfig()
	cfg.UnsafeNoFsync = true
	cfg.BcryptCost = 4 // bcrypt.MinCost
	srv, err := Start(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "embedetcd: start the shared test server:", err)
		os.Exit(1)
	}
	*shared = srv
	code := m.Run()
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "embedetcd: close the shared test server:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(ignore...); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}
