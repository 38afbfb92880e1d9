package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The README's command blocks are run here exactly as written, so that an
// edit that breaks one fails CI. Every ```sh block carries a marker on the
// line before it:
//
//	<!-- readme-test: run SECTION -->         run each command line in order
//	<!-- readme-test: background SECTION -->  start the block's one command and
//	                                          leave it running (a terminal of
//	                                          its own), stopping the previous one
//	<!-- readme-test: skip (why) -->          not run
//
// A command line passes when it exits 0, or with N when its comment says
// "exit N"; a comment "# → TEXT" also requires its output to be TEXT.
// TestReadmeTour runs section "dev", TestReadmeCompose section "compose".

// readmeBlock is one fenced sh block of the README.
type readmeBlock struct {
	line    int    // of its opening fence
	kind    string // run, background or skip
	section string
	lines   []readmeLine
}

// readmeLine is one command line of a block.
type readmeLine struct {
	n    int // line number in README.md
	text string
	exit int    // expected exit status
	want string // expected output ("" = not checked)
}

var (
	markerRe   = regexp.MustCompile(`^<!-- readme-test: (run|background|skip)\s*(.*?) -->$`)
	commentRe  = regexp.MustCompile(`\s{2,}#\s?(.*)$`)
	exitRe     = regexp.MustCompile(`\bexit (\d+)\b`)
	expectedRe = regexp.MustCompile(`^→ (.*)$`)
)

// readmeBlocks parses the README; a sh block without a marker fails t.
func readmeBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []readmeBlock
	var cur *readmeBlock
	prev := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && line == "```sh":
			m := markerRe.FindStringSubmatch(prev)
			if m == nil {
				t.Fatalf("%s:%d: a sh block without a <!-- readme-test: run|background|skip … --> marker on the line before", path, n)
			}
			cur = &readmeBlock{line: n, kind: m[1], section: m[2]}
		case cur != nil && line == "```":
			if cur.kind == "background" && len(cur.lines) != 1 {
				t.Fatalf("%s:%d: a background block holds one command, not %d", path, cur.line, len(cur.lines))
			}
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			if l, ok := parseReadmeLine(t, n, line); ok {
				cur.lines = append(cur.lines, l)
			}
		}
		if strings.TrimSpace(line) != "" {
			prev = line
		}
	}
	require.NoError(t, sc.Err())
	require.Nil(t, cur, "%s: a block is not closed", path)
	return out
}

func parseReadmeLine(t *testing.T, n int, line string) (readmeLine, bool) {
	trimmed := strings.TrimSpace(line)
	if trimmed == "" || strings.HasPrefix(trimmed, "#") {
		return readmeLine{}, false
	}
	l := readmeLine{n: n, text: line}
	if m := commentRe.FindStringSubmatch(line); m != nil {
		comment := m[1]
		if e := expectedRe.FindStringSubmatch(comment); e != nil {
			l.want = e[1]
		}
		if e := exitRe.FindStringSubmatch(comment); e != nil {
			l.exit, _ = strconv.Atoi(e[1])
		}
	}
	return l, true
}

func TestReadmeMarkers(t *testing.T) {
	blocks := readmeBlocks(t, "../README.md")
	sections := map[string]int{}
	for _, b := range blocks {
		if b.kind != "skip" {
			sections[b.section]++
		}
	}
	require.Equal(t, []string{"compose", "dev"}, slices.Sorted(maps.Keys(sections)), "the README's sections: each has its test")
	l, ok := parseReadmeLine(t, 1, `bin/durable invoke Counter c increment 41       # → {"value":42}`)
	require.True(t, ok)
	require.Equal(t, readmeLine{n: 1, text: l.text, want: `{"value":42}`}, l)
	l, _ = parseReadmeLine(t, 2, `bin/durable invoke Nope foo add    # durable: unknown class (NotFound), exit 3`)
	require.Equal(t, 3, l.exit)
}

// TestReadmeTour runs the README's development-cluster tour as written:
// `bin/durable dev` in the background, the commands beside it.
func TestReadmeTour(t *testing.T) {
	skipIfShort(t)
	runReadme(t, "dev")
}

// TestReadmeCompose runs the README's docker-compose walk-through as
// written: images, the demo, a node killed and back, a data center down,
// adopted and home again.
func TestReadmeCompose(t *testing.T) {
	skipIfShort(t)
	if err := DockerAvailable(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and Docker is not usable: %v", err)
		}
		t.Skipf("Docker is not usable: %v", err)
	}
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	t.Cleanup(func() {
		// As the walk-through's last line does, also when it failed.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker-compose", "down", "-v")
		cmd.Dir, cmd.Env = root, userEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("docker-compose down -v: %v\n%s", err, out)
		}
	})
	runReadme(t, "compose")
}

// runReadme runs the README's blocks of section in order from the
// repository root, in a user's environment (no DURABLE_* variables).
func runReadme(t *testing.T, section string) {
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	var bg *background
	t.Cleanup(func() { bg.stop(t) })
	env := userEnv() // what `export` lines change, as in one terminal
	ran := 0
	for _, b := range readmeBlocks(t, filepath.Join(root, "README.md")) {
		if b.section != section || b.kind == "skip" {
			continue
		}
		if b.kind == "background" {
			bg.stop(t)
			bg = startBackground(t, root, b.lines[0], env)
			continue
		}
		for _, l := range b.lines {
			env = runReadmeLine(t, root, l, bg, env)
			ran++
		}
	}
	require.NotZero(t, ran, "no command of section %q ran", section)
}

// readmeLineTimeout bounds one command (make images builds etcd).
const readmeLineTimeout = 10 * time.Minute

// runReadmeLine runs one line with env and returns the environment the
// next line sees: env, or what an `export` line left.
func runReadmeLine(t *testing.T, root string, l readmeLine, bg *background, env []string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readmeLineTimeout)
	defer cancel()
	text, export := l.text, strings.HasPrefix(strings.TrimSpace(l.text), "export ")
	if export {
		text += "\nenv -0"
	}
	cmd := exec.CommandContext(ctx, "bash", "-c", text)
	cmd.Dir, cmd.Env = root, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("README.md:%d: %s: %v", l.n, l.text, err)
	}
	shown := head(stdout.String(), 24)
	if export {
		shown = "" // the environment
	}
	t.Logf("README.md:%d (%s, exit %d): %s\n%s", l.n, time.Since(start).Round(time.Millisecond), code, strings.TrimSpace(l.text), shown)
	fail := ""
	switch {
	case code != l.exit:
		fail = "exit status " + strconv.Itoa(code) + ", want " + strconv.Itoa(l.exit)
	case l.want != "" && strings.TrimSpace(stdout.String()) != l.want:
		fail = "output is not " + strconv.Quote(l.want)
	}
	if fail != "" {
		t.Fatalf("README.md:%d: %s\n%s\n--- stdout\n%s--- stderr\n%s--- background\n%s", l.n, strings.TrimSpace(l.text), fail,
			stdout.String(), stderr.String(), bg.tail())
	}
	if export {
		return strings.Split(strings.TrimSuffix(stdout.String(), "\x00"), "\x00")
	}
	return env
}

// userEnv is the test's environment without DURABLE_* variables, as in a
// user's terminal.
func userEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DURABLE_") {
			env = append(env, kv)
		}
	}
	return env
}

// background is a README command left running, as in a terminal of its
// own; stop is Ctrl-C.
type background struct {
	line readmeLine
	cmd  *exec.Cmd
	done chan error
	mu   sync.Mutex
	out  bytes.Buffer
}

func (b *background) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.out.Write(p)
}

func startBackground(t *testing.T, root string, l readmeLine, env []string) *background {
	t.Helper()
	b := &background{line: l, done: make(chan error, 1)}
	b.cmd = exec.Command("bash", "-c", l.text)
	b.cmd.Dir, b.cmd.Env = root, env
	b.cmd.Stdout, b.cmd.Stderr = b, b
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, b.cmd.Start(), "README.md:%d", l.n)
	go func() { b.done <- b.cmd.Wait() }()
	t.Logf("README.md:%d: started in the background: %s", l.n, l.text)
	return b
}

// stop sends Ctrl-C (SIGINT) to the command's process group and waits; it
// must stop cleanly within a minute.
func (b *background) stop(t *testing.T) {
	if b == nil || b.cmd == nil {
		return
	}
	pgid := b.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGINT)
	select {
	case err := <-b.done:
		if err != nil {
			t.Errorf("README.md:%d: %s: after Ctrl-C: %v\n%s", b.line.n, b.line.text, err, b.tail())
		}
	case <-time.After(time.Minute):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-b.done
		t.Errorf("README.md:%d: %s did not stop within a minute of Ctrl-C\n%s", b.line.n, b.line.text, b.tail())
	}
	b.cmd = nil
}

// tail is the end of the background command's output.
func (b *background) tail() string {
	if b == nil {
		return "(none)\n"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.out.String()
	if len(s) > 4000 {
		s = "…" + s[len(s)-4000:]
	}
	return s
}

// head is the first n lines of s.
func head(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		return strings.Join(lines[:n], "") + "…\n"
	}
	return s
}
