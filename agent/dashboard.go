package agent

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/durable-run/durable/metrics"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// The dashboard's static files: plain HTML, CSS and JavaScript, no build
// step; charts are drawn as SVG by app.js.
//
//go:embed dashboard
var dashboardFiles embed.FS

// dashboard serves the live web dashboard and the JSON it reads:
//
//	/                 the page (dashboard/index.html, app.js, style.css)
//	/api/status       the cluster's status (Admin.Status, as `durable status --json` prints it)
//	/api/node         this node's live figures (counters the page turns into rates)
//	/api/dead         the first page of dead letters
func (a *Agent) dashboard() http.Handler {
	mux := http.NewServeMux()
	files, _ := fs.Sub(dashboardFiles, "dashboard")
	mux.Handle("/", http.FileServerFS(files))
	mux.HandleFunc("/api/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		st, err := a.Status(ctx)
		writeProto(w, st, err)
	})
	mux.HandleFunc("/api/dead", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		resp, err := (&adminServer{a: a}).ListDeadLetters(ctx, &durablev1.ListDeadLettersRequest{Limit: 20})
		writeProto(w, resp, err)
	})
	mux.HandleFunc("/api/node", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.nodeFigures())
	})
	return mux
}

// nodeFigures are this node's live figures for the dashboard: counters
// (the page computes rates between two polls) and gauges.
type nodeFigures struct {
	Node            string  `json:"node"`
	TimeUnixMs      int64   `json:"time_unix_ms"`
	AlarmRuns       float64 `json:"alarm_runs"`
	AlarmFailures   float64 `json:"alarm_failures"`
	AlarmLatenessS  float64 `json:"alarm_lateness_seconds_sum"`
	AlarmLatenessN  float64 `json:"alarm_lateness_count"`
	AlarmsOverdue   int     `json:"alarms_overdue"`
	AlarmsInWindow  int     `json:"alarms_in_window"`
	AlarmsRunning   int     `json:"alarms_running"`
	Invocations     float64 `json:"invocations"`
	Refusals        float64 `json:"refusals"`
	ActiveObjects   int     `json:"active_objects"`
	PartitionsOwned int     `json:"partitions_owned"`
	LeaseMarginMs   int64   `json:"lease_margin_ms"`
}

func (a *Agent) nodeFigures() nodeFigures {
	m, n := a.metrics, a.Node
	sum, count := metrics.HistogramSum(m.AlarmLateness)
	return nodeFigures{
		Node: a.cfg.Node.ID, TimeUnixMs: time.Now().UnixMilli(),
		AlarmRuns: metrics.Value(m.AlarmRuns), AlarmFailures: metrics.Value(m.AlarmRuns) - metrics.Value(m.AlarmRuns.MustCurryWith(map[string]string{"outcome": "success"})),
		AlarmLatenessS: sum, AlarmLatenessN: count,
		AlarmsOverdue: n.AlarmsOverdue(), AlarmsInWindow: n.ScheduledAlarms(), AlarmsRunning: n.RunningAlarms(),
		Invocations: metrics.Value(m.Invocations), Refusals: metrics.Value(m.Refusals),
		ActiveObjects: n.ActiveObjects(), PartitionsOwned: len(a.Member.Owned()),
		LeaseMarginMs: a.Member.Health().Margin.Milliseconds(),
	}
}

// writeProto answers with m as `--json` prints it, or the error.
func writeProto(w http.ResponseWriter, m proto.Message, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	b, err := protojson.MarshalOptions{EmitUnpopulated: true, UseProtoNames: true}.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
