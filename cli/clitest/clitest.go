// Package clitest runs a binary's command line (package cli) in-process for
// tests — durable's own and those of a user's binary built on cli.Main: a
// command to its end (Run), one in the background (Start), and `dev` on
// ports the OS picks (StartDev), stopped when the test ends.
package clitest

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/durable-run/durable/cli"
)

// Output is a command's output, safe to read while the command writes it.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String is the output so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// Run runs the command line args of the binary opts describe to its end and
// returns its output (stdout and stderr) and error.
func Run(ctx context.Context, opts cli.Options, args ...string) (string, error) {
	out, done := Start(ctx, opts, args...)
	err := <-done
	return out.String(), err
}

// Start runs the command line args in the background until it ends (a
// server command: until ctx ends); its output grows in the Output and its
// result arrives on the channel.
func Start(ctx context.Context, opts cli.Options, args ...string) (*Output, <-chan error) {
	out, done := &Output{}, make(chan error, 1)
	go func() {
		cmd := cli.Command(opts)
		cmd.SetOut(out)
		cmd.SetErr(out)
		cmd.SetArgs(args)
		done <- cmd.ExecuteContext(ctx)
	}()
	return out, done
}

// DevFlags put every listener of `dev` on a port the OS picks, turn its
// metrics listener off and log only errors. StartDev passes them before the
// test's own flags, which override them.
var DevFlags = []string{
	"--listen", "127.0.0.1:0", "--etcd-listen", "127.0.0.1:0", "--sink-listen", "127.0.0.1:0",
	"--http-listen", "127.0.0.1:0", "--metrics-listen", "", "--log-level", "error",
}

// Dev is a `dev` running in-process.
type Dev struct {
	// Out is dev's output: its banner, then anything it logs.
	Out *Output
	// Addrs are the nodes' gRPC addresses, HTTP their HTTP front doors
	// ("" for a node without one), in node order.
	Addrs []string
	HTTP  []string
	// Etcd is the embedded etcd's client endpoint.
	Etcd string

	cancel context.CancelFunc
	done   <-chan error
	once   sync.Once
	err    error
}

var (
	nodeLine  = regexp.MustCompile(`(?m)^\s+node \S+\s+(\S+) \(\S+\)(?:.*\s+http (\S+)/v1/)?`)
	etcdLine  = regexp.MustCompile(`(?m)^\s+etcd\s+(\S+)`)
	bannerEnd = "Ctrl-C stops everything."
)

// StartDev runs `dev` DevFlags args and waits, up to a minute, for its
// banner; the test fails if dev ends first. Dev is stopped at cleanup if
// the test has not stopped it.
func StartDev(t testing.TB, opts cli.Options, args ...string) *Dev {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, done := Start(ctx, opts, append(append([]string{"dev"}, DevFlags...), args...)...)
	d := &Dev{Out: out, cancel: cancel, done: done}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("clitest: dev: %v", err)
		}
	})
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), bannerEnd) {
		select {
		case err := <-done:
			d.once.Do(func() { d.err = err })
			t.Fatalf("clitest: dev ended before its banner: %v\n%s", err, out.String())
		case <-deadline.C:
			t.Fatalf("clitest: no banner from dev within a minute:\n%s", out.String())
		case <-tick.C:
		}
	}
	banner := out.String()
	for _, m := range nodeLine.FindAllStringSubmatch(banner, -1) {
		d.Addrs = append(d.Addrs, m[1])
		d.HTTP = append(d.HTTP, m[2])
	}
	if m := etcdLine.FindStringSubmatch(banner); m != nil {
		d.Etcd = m[1]
	}
	return d
}

// Stop stops dev and returns its result: nil for a clean stop, an error if
// it failed or did not stop within a minute. Later calls return the same.
func (d *Dev) Stop() error {
	d.once.Do(func() {
		d.cancel()
		select {
		case d.err = <-d.done:
		case <-time.After(time.Minute):
			d.err = errors.New("dev did not stop within a minute")
		}
	})
	return d.err
}
