package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ReportVersion is Report.Version: bumped when a JSON field changes meaning
// or goes away (new fields may appear without a bump).
const ReportVersion = 1

// Report is one run of `durable bench`; `--json` prints it as is.
type Report struct {
	// Version is ReportVersion.
	Version  int       `json:"version"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	Params   Params    `json:"params"`
	// Timings say how long each step took: "setup" (starting or dialling
	// the cluster), then each scenario, ceilings it measured on demand
	// included.
	Timings []Timing `json:"timings"`
	// Results are the rows in the order they were measured; rows of one
	// scenario share Result.Scenario.
	Results []Result `json:"results"`
	// Error says why the run stopped early; Results then hold what was
	// measured before.
	Error string `json:"error,omitempty"`
}

// Timing is how long one step of the run took.
type Timing struct {
	Step    string  `json:"step"`
	Seconds float64 `json:"seconds"`
}

// Machine describes where the run happened.
type Machine struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	GoVersion string `json:"go_version"`
	// LoadAverage is the 1, 5 and 15 minute load average when the run
	// started (from /proc/loadavg; absent elsewhere): on a shared machine
	// it says how much else was running.
	LoadAverage []float64 `json:"load_average,omitempty"`
}

// Params are the run's parameters.
type Params struct {
	// Profile is the profile's name ("full", "short", …).
	Profile       string  `json:"profile"`
	PhaseSeconds  float64 `json:"phase_seconds"`
	WarmupSeconds float64 `json:"warmup_seconds"`
	// Cluster is "embedded" (started by the bench) or "given" (--addr).
	Cluster string `json:"cluster"`
	// Nodes, Partitions and LeaseTTLSeconds describe an embedded cluster.
	Nodes           int     `json:"nodes"`
	Partitions      int     `json:"partitions,omitempty"`
	LeaseTTLSeconds float64 `json:"lease_ttl_seconds,omitempty"`
	// EmbeddedEtcd is true when the bench ran its own etcd (fsync on).
	EmbeddedEtcd bool     `json:"embedded_etcd"`
	Addrs        []string `json:"addrs,omitempty"`
	Etcd         []string `json:"etcd,omitempty"`
	Scenarios    []string `json:"scenarios"`
}

// Result is one measured case.
type Result struct {
	// Scenario and Case name the row, e.g. "invoke", "increment via owner".
	Scenario string `json:"scenario"`
	Case     string `json:"case"`
	// Concurrency is the number of concurrent callers (0: not applicable,
	// e.g. open-loop phases).
	Concurrency int `json:"concurrency,omitempty"`
	// Count operations succeeded in Seconds of measurement; Errors failed.
	Count   int64   `json:"count"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
	// Rate is Count per second, in Unit (e.g. "ops/s", "puts/s").
	Rate float64 `json:"rate"`
	Unit string  `json:"unit"`
	// Latency is nil where it means nothing.
	Latency *Latency `json:"latency,omitempty"`
	// Ceilings are raw etcd ceilings of the same work, measured in the
	// same run, the first being the one that matters most.
	Ceilings []CeilingRef `json:"ceilings,omitempty"`
	// Target is the DESIGN §7 target this row is checked against, if any.
	Target *Target `json:"target,omitempty"`
	// Goals are the conditions a row is judged by one by one, where one
	// target is not enough (the soak's): each met or missed by how much.
	Goals []Goal `json:"goals,omitempty"`
	// Note is a remark, e.g. "best of 1-put txns".
	Note string `json:"note,omitempty"`
	// Extra holds further metrics, the unit in the name (e.g.
	// "offered_ops/s", "etcd_conns").
	Extra map[string]float64 `json:"extra,omitempty"`
	// Transport is how the clients reached the nodes, on rows measured
	// over more than one (invoke): "plaintext" or "mtls" (mutual TLS 1.3
	// from the client to the node and between nodes).
	Transport string `json:"transport,omitempty"`
	// VsPlaintext compares an mtls row with the plaintext row of the same
	// case and concurrency, measured in the same run.
	VsPlaintext *Ratios `json:"vs_plaintext,omitempty"`
	// Observability is what the nodes measured of themselves, on rows
	// measured with more than one (invoke with CompareObservability):
	// "off", "metrics" or "metrics+tracing" (ClusterConfig.Observability).
	Observability string `json:"observability,omitempty"`
	// VsOff compares a row with the "off" row of the same transport, case
	// and concurrency, measured in the same run.
	VsOff *Ratios `json:"vs_off,omitempty"`
	// Path is how the calls reached the object, on rows measured over more
	// than one (invoke with ComparePaths): "grpc" (an untyped class called
	// over gRPC), "typed" (a typed class, called with client.Call) or
	// "http" (the untyped class through the HTTP front door).
	Path string `json:"path,omitempty"`
	// VsGRPC compares a typed or http row with the grpc row of the same
	// transport, observability, case and concurrency, measured in the same
	// run.
	VsGRPC *Ratios `json:"vs_grpc,omitempty"`
}

// Ratios are a row's rate and latency percentiles divided by another
// row's (zero where the other is zero).
type Ratios struct {
	Rate float64 `json:"rate"`
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
}

// versus returns r's ratios to other.
func (r Result) versus(other Result) *Ratios {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	v := &Ratios{Rate: div(r.Rate, other.Rate)}
	if r.Latency != nil && other.Latency != nil {
		v.P50, v.P99 = div(r.Latency.P50, other.Latency.P50), div(r.Latency.P99, other.Latency.P99)
	}
	return v
}

// CeilingRef places a result beside an etcd ceiling.
type CeilingRef struct {
	// Name says which ceiling, e.g. "etcd 1-put txn c=64" or
	// "etcd batched put 16×64 / 2 keys per increment".
	Name string `json:"name"`
	// Rate is the ceiling, in the result's unit.
	Rate float64 `json:"rate"`
	// Ratio is the result's Rate divided by this Rate.
	Ratio float64 `json:"ratio"`
}

// Target is a DESIGN §7 target and whether the row met it.
type Target struct {
	// Metric is "rate" (the row's Rate, in its unit), "p99_ms",
	// "first_ms" (failover: the first alarm's start after the crash), or,
	// with Op "all", a description of several conditions that must all
	// hold.
	Metric string `json:"metric"`
	// Op is ">=", "<=", "==" or "all".
	Op    string  `json:"op"`
	Value float64 `json:"value"`
	Met   bool    `json:"met"`
}

// Goal is one condition a row is judged by, and the verdict.
type Goal struct {
	// Name says what is judged, e.g. "rate", "p99", "heap flat".
	Name string `json:"name"`
	// Op is ">=" or "<=": Actual Op Value is the goal.
	Op     string  `json:"op"`
	Value  float64 `json:"value"`
	Actual float64 `json:"actual"`
	// Unit is Value's and Actual's, e.g. "alarms/s", "ms", "×".
	Unit string `json:"unit"`
	Met  bool   `json:"met"`
	// Miss is how far Actual is on the wrong side of Value, in Unit (0
	// when met).
	Miss float64 `json:"miss,omitempty"`
	// Note says how Actual was obtained, where the name does not.
	Note string `json:"note,omitempty"`
}

// NewGoal judges actual against value with op (">=" or "<=").
func NewGoal(name, op string, value, actual float64, unit string) Goal {
	g := Goal{Name: name, Op: op, Value: value, Actual: actual, Unit: unit}
	switch op {
	case ">=":
		g.Met = actual >= value
	case "<=":
		g.Met = actual <= value
	}
	if !g.Met {
		g.Miss = math.Abs(actual - value)
	}
	return g
}

// String is "p99 <= 50 ms: met (12.3)" or "p99 <= 50 ms: MISSED by 30.1
// (80.1)", the note after a dash. A goal missed by nothing was not judged:
// its note says why.
func (g Goal) String() string {
	v := fmt.Sprintf("%s %s %s %s", g.Name, g.Op, goalNumber(g.Value, g.Unit), g.Unit)
	switch {
	case g.Met:
		v += fmt.Sprintf(": met (%s)", goalNumber(g.Actual, g.Unit))
	case g.Miss == 0:
		v += ": not met"
	default:
		v += fmt.Sprintf(": MISSED by %s (%s)", goalNumber(g.Miss, g.Unit), goalNumber(g.Actual, g.Unit))
	}
	if g.Note != "" {
		v += " — " + g.Note
	}
	return v
}

func goalNumber(v float64, unit string) string {
	switch unit {
	case "ms":
		return fmtMS(v)
	case "×":
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return number(v)
}

// AtLeast returns a rate target met by rate.
func AtLeast(value, rate float64) *Target {
	return &Target{Metric: "rate", Op: ">=", Value: value, Met: rate >= value}
}

// P99AtMost returns a latency target met by lat.
func P99AtMost(valueMS float64, lat *Latency) *Target {
	return &Target{Metric: "p99_ms", Op: "<=", Value: valueMS, Met: lat != nil && lat.P99 <= valueMS}
}

// Ceiling places r beside c (possibly scaled, e.g. divided by the etcd
// operations one of r's operations costs) and appends it to r's ceilings.
func (r *Result) Ceiling(name string, rate float64) {
	ratio := 0.0
	if rate > 0 {
		ratio = r.Rate / rate
	}
	r.Ceilings = append(r.Ceilings, CeilingRef{Name: name, Rate: rate, Ratio: ratio})
}

func newReport(opts Options, scenarios []Scenario) *Report {
	r := &Report{
		Version: ReportVersion, Started: time.Now(), Machine: ThisMachine(),
		Params: Params{
			Profile: opts.Profile.Name, PhaseSeconds: opts.Profile.Phase.Seconds(),
			WarmupSeconds: opts.Profile.Warmup.Seconds(),
		},
	}
	for _, s := range scenarios {
		r.Params.Scenarios = append(r.Params.Scenarios, s.Name())
	}
	if len(opts.Addrs) > 0 {
		r.Params.Cluster, r.Params.Nodes = "given", len(opts.Addrs)
		r.Params.Addrs, r.Params.Etcd = opts.Addrs, opts.Etcd
	} else {
		c := opts.Cluster.withDefaults()
		r.Params.Cluster, r.Params.Nodes = "embedded", c.Nodes
		r.Params.Partitions, r.Params.LeaseTTLSeconds = c.Partitions, c.LeaseTTL.Seconds()
		r.Params.EmbeddedEtcd = len(c.EtcdEndpoints) == 0
		r.Params.Etcd = c.EtcdEndpoints
	}
	return r
}

// step records that a step of the run started at start ended now.
func (r *Report) step(name string, start time.Time) {
	r.Timings = append(r.Timings, Timing{Step: name, Seconds: time.Since(start).Seconds()})
}

// fail records err as the reason the run stopped and returns it.
func (r *Report) fail(err error) error {
	r.Error = err.Error()
	if r.Finished.IsZero() {
		r.Finished = time.Now()
	}
	return err
}

// ThisMachine describes the machine the process runs on.
func ThisMachine() Machine {
	return Machine{
		OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		CPUModel: cpuModel(), GoVersion: runtime.Version(), LoadAverage: loadAverage(),
	}
}

// loadAverage reads /proc/loadavg, nil if it cannot.
func loadAverage() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return nil
	}
	out := make([]float64, 3)
	for i := range out {
		if out[i], err = strconv.ParseFloat(f[i], 64); err != nil {
			return nil
		}
	}
	return out
}

// cpuModel reads the first "model name" of /proc/cpuinfo, "" if there is
// none (other systems).
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// String is the machine line: "linux/amd64, 2 CPUs (AMD EPYC), go1.26.8".
func (m Machine) String() string {
	s := fmt.Sprintf("%s/%s, %d CPUs", m.OS, m.Arch, m.CPUs)
	if m.CPUModel != "" {
		s += " (" + m.CPUModel + ")"
	}
	s += ", " + m.GoVersion
	if len(m.LoadAverage) == 3 {
		s += fmt.Sprintf("; load average %.2f %.2f %.2f at start", m.LoadAverage[0], m.LoadAverage[1], m.LoadAverage[2])
	}
	return s
}

// String is the parameters line.
func (p Params) String() string {
	var b strings.Builder
	if p.Cluster == "given" {
		fmt.Fprintf(&b, "given cluster: %d nodes %s", p.Nodes, strings.Join(p.Addrs, ","))
		if len(p.Etcd) > 0 {
			fmt.Fprintf(&b, ", etcd %s", strings.Join(p.Etcd, ","))
		} else {
			b.WriteString(", no etcd (no ceilings)")
		}
	} else {
		fmt.Fprintf(&b, "embedded cluster: %d nodes, %d partitions, lease TTL %gs, ", p.Nodes, p.Partitions, p.LeaseTTLSeconds)
		if p.EmbeddedEtcd {
			b.WriteString("in-process etcd (fsync on)")
		} else {
			fmt.Fprintf(&b, "etcd %s", strings.Join(p.Etcd, ","))
		}
	}
	fmt.Fprintf(&b, "; profile %s: %gs per phase after %gs warm-up", p.Profile, p.PhaseSeconds, p.WarmupSeconds)
	return b.String()
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as aligned text tables, one per scenario.
func (r *Report) WriteTable(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "machine: %s\n", r.Machine)
	fmt.Fprintf(bw, "run:     %s\n", r.Params)
	if !r.Started.IsZero() && !r.Finished.IsZero() {
		fmt.Fprintf(bw, "took:    %s", r.Finished.Sub(r.Started).Round(100*time.Millisecond))
		var steps []string
		for _, t := range r.Timings {
			steps = append(steps, fmt.Sprintf("%s %.1fs", t.Step, t.Seconds))
		}
		if len(steps) > 0 {
			fmt.Fprintf(bw, " (%s)", strings.Join(steps, ", "))
		}
		fmt.Fprintln(bw)
	}
	var order []string
	for _, res := range r.Results {
		if !slices.Contains(order, res.Scenario) {
			order = append(order, res.Scenario)
		}
	}
	for _, sc := range order {
		t := table{header: []string{"case", "transport", "observability", "path", "conc", "count", "err", "rate", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "vs plaintext", "vs off", "vs grpc", "vs etcd ceiling", "target"}}
		t.right = []bool{false, false, false, false, true, true, true, true, true, true, true, true, true, false, false, false, false, false}
		var notes []string
		for _, res := range r.Results {
			if res.Scenario != sc {
				continue
			}
			t.rows = append(t.rows, res.cells())
			for _, c := range res.Ceilings[min(1, len(res.Ceilings)):] {
				t.rows = append(t.rows, []string{"", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", c.cell(), ""})
			}
			if res.Note != "" || len(res.Extra) > 0 {
				notes = append(notes, res.notes())
			}
			for _, g := range res.Goals {
				notes = append(notes, res.Case+": goal "+g.String())
			}
		}
		fmt.Fprintf(bw, "\n%s\n", sc)
		t.write(bw)
		for _, n := range notes {
			fmt.Fprintf(bw, "  %s\n", n)
		}
	}
	if r.Error != "" {
		fmt.Fprintf(bw, "\nstopped early: %s\n", r.Error)
	}
	return bw.Flush()
}

func (r Result) cells() []string {
	conc := ""
	if r.Concurrency > 0 {
		conc = strconv.Itoa(r.Concurrency)
	}
	row := []string{r.Case, r.Transport, r.Observability, r.Path, conc, thousands(float64(r.Count)), thousands(float64(r.Errors)), rateCell(r.Rate, r.Unit), "", "", "", "", "", "", "", "", "", ""}
	if l := r.Latency; l != nil {
		row[8], row[9], row[10], row[12] = fmtMS(l.P50), fmtMS(l.P90), fmtMS(l.P99), fmtMS(l.Max)
		if l.P999 > 0 {
			row[11] = fmtMS(l.P999)
		}
	}
	if v := r.VsPlaintext; v != nil {
		row[13] = v.cell()
	}
	if v := r.VsOff; v != nil {
		row[14] = v.cell()
	}
	if v := r.VsGRPC; v != nil {
		row[15] = v.cell()
	}
	if len(r.Ceilings) > 0 {
		row[16] = r.Ceilings[0].cell()
	}
	if t := r.Target; t != nil {
		row[17] = t.cell(r.Unit)
	}
	return row
}

func (v Ratios) cell() string {
	return fmt.Sprintf("rate %s× p50 %s× p99 %s×", ratio(v.Rate), ratio(v.P50), ratio(v.P99))
}

func (c CeilingRef) cell() string {
	return fmt.Sprintf("%s× %s = %s/s", ratio(c.Ratio), c.Name, number(c.Rate))
}

func (t Target) cell(unit string) string {
	what := fmt.Sprintf("%s %s", t.Op, rateCell(t.Value, unit))
	switch t.Metric {
	case "p99_ms":
		what = fmt.Sprintf("p99 %s %s ms", t.Op, fmtMS(t.Value))
	case "first_ms":
		what = fmt.Sprintf("first %s %s ms", t.Op, fmtMS(t.Value))
	}
	switch t.Op {
	case "all":
		what = t.Metric
	case "==":
		what = fmt.Sprintf("%s = %g", t.Metric, t.Value)
	}
	verdict := "met"
	if !t.Met {
		verdict = "MISSED"
	}
	return what + ": " + verdict
}

// notes is the line under the table for a row's note and extra metrics.
func (r Result) notes() string {
	parts := []string{}
	if r.Note != "" {
		parts = append(parts, r.Note)
	}
	keys := make([]string, 0, len(r.Extra))
	for k := range r.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%s", k, number(r.Extra[k])))
	}
	head := r.Case
	if tags := strings.Join(slices.DeleteFunc([]string{r.Transport, r.Observability, r.Path}, func(s string) bool { return s == "" }), ", "); tags != "" {
		head += " (" + tags + ")"
	}
	if r.Concurrency > 0 {
		head += fmt.Sprintf(" c=%d", r.Concurrency)
	}
	return head + ": " + strings.Join(parts, ", ")
}

// table is a text table with aligned columns.
type table struct {
	header []string
	right  []bool // right-align column i
	rows   [][]string
}

// write prints the table, leaving out columns that are empty in every row.
func (t table) write(w io.Writer) {
	width := make([]int, len(t.header))
	used := make([]bool, len(t.header))
	for _, row := range t.rows {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c))
			used[i] = used[i] || c != ""
		}
	}
	for i, c := range t.header {
		width[i] = max(width[i], utf8.RuneCountInString(c))
	}
	line := func(row []string) {
		var b strings.Builder
		for i, c := range row {
			if !used[i] {
				continue
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			b.WriteString("  ")
			if t.right[i] {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	line(t.header)
	for _, row := range t.rows {
		line(row)
	}
}

// thousands formats v rounded to an integer with ',' between thousands.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(math.Abs(v))), 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if v < 0 && s != "0" {
		s = "-" + s
	}
	return s
}

// number formats v with thousands separators, keeping one decimal below 100.
func number(v float64) string {
	if math.Abs(v) < 100 && v != math.Trunc(v) {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return thousands(v)
}

func rateCell(v float64, unit string) string { return number(v) + " " + unit }

// fmtMS formats milliseconds with about three significant digits.
func fmtMS(v float64) string {
	switch {
	case v < 1:
		return strconv.FormatFloat(v, 'f', 3, 64)
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return thousands(v)
	}
}

func ratio(v float64) string {
	if v >= 10 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
