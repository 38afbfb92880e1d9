package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// PeersScenario runs the alarms' "same instant" case on the job systems a
// user might pick instead — asynq on Redis and River on PostgreSQL — by
// running bench/peers/run.sh (a separate Go module, so the main module does
// not depend on them), which installs and starts the stores on loopback,
// runs N jobs due at one instant on each and prints the results. Its rows
// share the alarms rows' unit and meaning: fires/s = N / (last completion −
// the due instant); lateness = the handler's start − the due instant.
//
// It is optional (not part of `bench all` unless asked for with --peers):
// it needs the repository's bench/peers directory, the Go toolchain, and
// Debian's packages (installed if missing).
type PeersScenario struct {
	// Dir is the bench/peers directory; empty: ./bench/peers.
	Dir string
}

// Name implements Scenario.
func (PeersScenario) Name() string { return "peers" }

// Description implements Describer.
func (PeersScenario) Description() string {
	return "the same-instant alarms case on asynq (Redis) and River (PostgreSQL), via bench/peers/run.sh"
}

// Optional marks scenarios that `bench all` runs only when asked for.
type Optional interface{ Optional() }

// Optional implements Optional.
func (PeersScenario) Optional() {}

// peerResult is one system's result as bench/peers prints it (-json).
type peerResult struct {
	System      string  `json:"system"`
	Store       string  `json:"store"`
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	EnqueuePerS float64 `json:"enqueue_per_s"`
	FiresPerS   float64 `json:"fires_per_s"`
	DrainPerS   float64 `json:"drain_per_s"`
	LatenessMS  struct {
		P50 float64 `json:"p50"`
		P90 float64 `json:"p90"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"lateness_ms"`
	Early      int `json:"early"`
	Duplicates int `json:"duplicates"`
	Missing    int `json:"missing"`
}

// parsePeerResults reads the JSON array the peers' program prints last on
// stdout; lines before it (a tool that wrote to stdout after all) are
// skipped.
func parsePeerResults(out []byte) ([]peerResult, error) {
	for i := len(out) - 1; i >= 0; i-- {
		if out[i] == '[' && (i == 0 || out[i-1] == '\n') {
			var prs []peerResult
			if json.Unmarshal(out[i:], &prs) == nil {
				return prs, nil
			}
		}
	}
	var prs []peerResult
	if err := json.Unmarshal(out, &prs); err != nil {
		return nil, fmt.Errorf("peers: read the results: %w: %q", err, tail(string(out), 500))
	}
	return prs, nil
}

// Run implements Scenario.
func (s PeersScenario) Run(ctx context.Context, env *Env) ([]Result, error) {
	dir := s.Dir
	if dir == "" {
		dir = filepath.Join("bench", "peers")
	}
	script := filepath.Join(dir, "run.sh")
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("peers: %s not found (run from the repository's root, or give --peers-dir): %w", script, err)
	}
	n := burstSize(env.Profile)
	// A lead over 5 s lets River's 5-s job scheduler move the jobs before
	// their time, as it does for any job scheduled further ahead; asynq
	// stores due times in whole seconds, so T falls on one.
	cmd := exec.CommandContext(ctx, "bash", script, "-system", "all", "-n", fmt.Sprint(n), "-lead", "6s", "-align-second", "-json")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	env.Progress.Linef("%-36s running %s (installs redis and postgresql if missing)", "peers", script)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("peers: %s: %w\n%s", script, err, tail(stderr.String(), 2000))
	}
	prs, err := parsePeerResults(out.Bytes())
	if err != nil {
		return nil, err
	}
	if len(prs) == 0 {
		return nil, errors.New("peers: no results")
	}
	var rows []Result
	for _, p := range prs {
		r := Result{
			Scenario: "alarms", Case: fmt.Sprintf("same instant, %s (%s)", p.System, p.Store),
			Count: int64(p.N - p.Missing), Errors: int64(p.Missing), Rate: p.FiresPerS, Unit: "alarms/s",
			Latency: &Latency{P50: p.LatenessMS.P50, P90: p.LatenessMS.P90, P99: p.LatenessMS.P99, Max: p.LatenessMS.Max},
			Note:    "bench/peers: jobs instead of alarms, same N and definitions",
			Extra: map[string]float64{
				"drain_per_s": p.DrainPerS, "enqueue_per_s": p.EnqueuePerS, "concurrency": float64(p.Concurrency),
				"early": float64(p.Early), "duplicate_runs": float64(p.Duplicates),
			},
		}
		if p.FiresPerS > 0 {
			r.Seconds = float64(p.N-p.Missing) / p.FiresPerS
		}
		r.Target = AtLeast(targetAlarmsPerSec, r.Rate)
		env.Progress.Linef("%-36s %s alarms/s, lateness p50 %.0f ms p99 %.0f ms", "peers "+p.System, thousands(p.FiresPerS), p.LatenessMS.P50, p.LatenessMS.P99)
		rows = append(rows, r)
	}
	return rows, nil
}

// tail returns the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
