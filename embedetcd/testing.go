package embedetcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
// left behind. Call it from TestMain; tests keep apart with UniquePrefix.
func Main(m *testing.M, shared **Server) {
	cfg := DefaultConfig()
	cfg.UnsafeNoFsync = true
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
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}
