package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// A benchmark-regression check compares each row's ratio to its own etcd
// ceiling (Result.Ceilings[0].Ratio) with the ratio a baseline run
// recorded, and fails only when a ratio has fallen below RegressionFactor
// of its baseline. Absolute numbers are never compared: they move with the
// machine (a shared one moves a phase by up to 2× between runs), while a
// row and its ceiling, measured seconds apart in one run, move together.
// Rows in one side only are reported, never failures: a new scenario or
// case has no baseline yet.

// RegressionFactor is the share of its baseline ratio below which a row
// counts as a regression: a drop by more than half.
const RegressionFactor = 0.5

// Baseline is the ratios of a run to compare later runs with; it is kept
// in the repository (bench/baseline-short.json).
type Baseline struct {
	// Note says how to renew the file.
	Note string `json:"note"`
	// Recorded is when the run it was made from started; Commit is the
	// commit it measured, Machine where.
	Recorded time.Time     `json:"recorded"`
	Commit   string        `json:"commit,omitempty"`
	Machine  Machine       `json:"machine"`
	Profile  string        `json:"profile"`
	Rows     []BaselineRow `json:"rows"`
}

// BaselineRow is one row's ratio to its first ceiling.
type BaselineRow struct {
	// Row identifies the row (Result.Key).
	Row string `json:"row"`
	// Ceiling names the ceiling the ratio is to.
	Ceiling string  `json:"ceiling"`
	Ratio   float64 `json:"ratio"`
}

// Key identifies a row within a report: scenario, case, and the transport,
// observability, path and concurrency where set.
func (r Result) Key() string {
	parts := []string{r.Scenario, r.Case}
	for _, s := range []string{r.Transport, r.Observability, r.Path} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if r.Concurrency > 0 {
		parts = append(parts, "c="+strconv.Itoa(r.Concurrency))
	}
	return strings.Join(parts, " / ")
}

// ratios returns the ratio to its first ceiling of every row that has one
// (a positive one), by key, in the report's order; a key seen again gets
// " #2", " #3"… (a case measured twice).
func ratios(rep *Report) []BaselineRow {
	var out []BaselineRow
	seen := map[string]int{}
	for _, r := range rep.Results {
		if len(r.Ceilings) == 0 || r.Ceilings[0].Ratio <= 0 {
			continue
		}
		k := r.Key()
		seen[k]++
		if n := seen[k]; n > 1 {
			k += " #" + strconv.Itoa(n)
		}
		out = append(out, BaselineRow{Row: k, Ceiling: r.Ceilings[0].Name, Ratio: r.Ceilings[0].Ratio})
	}
	return out
}

// NewBaseline makes a baseline of rep, measured at commit.
func NewBaseline(rep *Report, commit string) Baseline {
	return Baseline{
		Note:     "ratios to the etcd ceiling of `durable bench all --short`; renew with `make bench-baseline` on a quiet machine",
		Recorded: rep.Started.UTC(), Commit: commit, Machine: rep.Machine, Profile: rep.Params.Profile,
		Rows: ratios(rep),
	}
}

// ReadBaseline reads a baseline file.
func ReadBaseline(path string) (Baseline, error) {
	var b Baseline
	data, err := os.ReadFile(path)
	if err != nil {
		return b, fmt.Errorf("bench: baseline: %w", err)
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return b, fmt.Errorf("bench: baseline %s: %w", path, err)
	}
	return b, nil
}

// WriteJSON writes the baseline as indented JSON.
func (b Baseline) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(b)
}

// The verdicts of a CheckRow.
const (
	CheckOK        = "ok"
	CheckRegressed = "REGRESSED"
	CheckNew       = "new (no baseline)"
	CheckGone      = "not measured"
)

// CheckRow compares one row with its baseline.
type CheckRow struct {
	Row string `json:"row"`
	// Baseline and Now are the ratios to the ceiling (0: absent).
	Baseline float64 `json:"baseline"`
	Now      float64 `json:"now"`
	// Change is Now / Baseline (0 where either is absent).
	Change  float64 `json:"change"`
	Verdict string  `json:"verdict"`
}

// Check is the comparison of a run with a baseline.
type Check struct {
	Rows []CheckRow `json:"rows"`
	// Regressions counts the rows whose ratio fell below RegressionFactor
	// of the baseline's; New and Gone the rows in one side only.
	Regressions int `json:"regressions"`
	New         int `json:"new"`
	Gone        int `json:"gone"`
}

// Failed reports whether a row regressed.
func (c Check) Failed() bool { return c.Regressions > 0 }

// CompareBaseline compares rep's ratios with b's: the baseline's rows in
// its order, then the rows new in rep.
func CompareBaseline(b Baseline, rep *Report) Check {
	var c Check
	now := map[string]float64{}
	cur := ratios(rep)
	for _, r := range cur {
		now[r.Row] = r.Ratio
	}
	known := map[string]bool{}
	for _, br := range b.Rows {
		known[br.Row] = true
		row := CheckRow{Row: br.Row, Baseline: br.Ratio}
		n, ok := now[br.Row]
		switch {
		case !ok:
			row.Verdict = CheckGone
			c.Gone++
		default:
			row.Now = n
			if br.Ratio > 0 {
				row.Change = n / br.Ratio
			}
			row.Verdict = CheckOK
			if n < RegressionFactor*br.Ratio {
				row.Verdict = CheckRegressed
				c.Regressions++
			}
		}
		c.Rows = append(c.Rows, row)
	}
	for _, r := range cur {
		if !known[r.Row] {
			c.Rows = append(c.Rows, CheckRow{Row: r.Row, Now: r.Ratio, Verdict: CheckNew})
			c.New++
		}
	}
	return c
}

// WriteTable prints the comparison: a row per line, then a summary line.
func (c Check) WriteTable(w io.Writer, b Baseline) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "baseline: %s, commit %s, %s\n", b.Recorded.Format(time.DateOnly), orDash(b.Commit), b.Machine)
	t := table{header: []string{"row", "baseline", "now", "now/baseline", "verdict"}, right: []bool{false, true, true, true, false}}
	cell := func(v float64) string {
		if v == 0 {
			return "—"
		}
		return ratio(v) + "×"
	}
	for _, r := range c.Rows {
		t.rows = append(t.rows, []string{r.Row, cell(r.Baseline), cell(r.Now), cell(r.Change), r.Verdict})
	}
	t.write(bw)
	fmt.Fprintf(bw, "%d rows compared (ratio to the row's own etcd ceiling; a regression is below %.1f× the baseline's): %d regressed, %d new, %d not measured\n",
		len(c.Rows)-c.New-c.Gone, RegressionFactor, c.Regressions, c.New, c.Gone)
	return bw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
