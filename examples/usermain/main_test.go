package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/cli"
)

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run executes the binary's command line in-process and returns its output.
func run(ctx context.Context, args ...string) (string, error) {
	out := &syncBuffer{}
	cmd := cli.Command(options)
	cmd.SetOut(out)
	cmd.SetErr(out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// start runs the binary's command line in-process until ctx ends.
func start(ctx context.Context, args ...string) (*syncBuffer, <-chan error) {
	out, done := &syncBuffer{}, make(chan error, 1)
	go func() {
		cmd := cli.Command(options)
		cmd.SetOut(out)
		cmd.SetErr(out)
		cmd.SetArgs(args)
		done <- cmd.ExecuteContext(ctx)
	}()
	return out, done
}

// TestDevServesTheUsersClass: the user's binary's `dev` serves Greeter, its
// `invoke` calls it, and its banner names the binary and suggests the
// user's command.
func TestDevServesTheUsersClass(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	devOut, devDone := start(ctx, "dev", "--nodes", "1", "--log-level", "error", "--partitions", "8",
		"--listen", "127.0.0.1:0", "--etcd-listen", "127.0.0.1:0", "--sink-listen", "127.0.0.1:0", "--metrics-listen", "")
	nodeLine := regexp.MustCompile(`node dev-1\s+(\S+) \(dc1\)`)
	var addr string
	require.Eventually(t, func() bool {
		m := nodeLine.FindStringSubmatch(devOut.String())
		if m == nil {
			return false
		}
		addr = m[1]
		return true
	}, 30*time.Second, 10*time.Millisecond, "dev did not print its node: %s", devOut.String())
	require.Contains(t, devOut.String(), "usermain dev is running")
	require.Contains(t, devOut.String(), "go run ./examples/usermain invoke --addr "+addr+" Greeter ada hello")

	for _, want := range []string{"hello ada, visit 1", "hello ada, visit 2"} {
		out, err := run(ctx, "invoke", "--addr", addr, "Greeter", "ada", "hello")
		require.NoError(t, err)
		require.Equal(t, want, strings.TrimSpace(out))
	}
	_, err := run(ctx, "invoke", "--addr", addr, "Counter", "c", "increment")
	require.Error(t, err, "the example classes are durable's, not this binary's")

	cancel()
	require.NoError(t, <-devDone)
}
