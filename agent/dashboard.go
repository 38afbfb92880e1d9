package agent

import (
	"context"
	"embed"
	"encoding/json"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"time"

	"google.golang.org/grpc/status"
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
//	/api/requeue      POST: requeue one dead letter (Admin.RequeueDeadLetter)
//
// When the node is secured, opsPermission says who may call each path:
// the page's files are open, /api/requeue needs admin, the rest read.
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
	// The page calls /api/requeue from its own origin only. A cross-site
	// page must not make a visitor's browser requeue (CSRF), even on an
	// unsecured loopback node, where no token stands in its way: the
	// handler takes only a POST of application/json, which a cross-origin
	// form cannot send and a cross-origin fetch sends only after a CORS
	// preflight, which this server never grants; and CrossOriginProtection
	// refuses a request whose Sec-Fetch-Site names another origin (same-site
	// or cross-site), or, without it, whose Origin header is present and
	// names another host than the request's Host. (A client that is not a
	// browser sends neither header; it needs the admin role when secured.)
	// A page that rebinds its own name to the node passes this check (its
	// Origin and Host agree): on an unsecured node ServeOps's HostFilter
	// refuses a Host that is not the node's.
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSONError(w, http.StatusForbidden, "", "cross-origin request refused: requeue from the node's own dashboard")
	}))
	mux.Handle("/api/requeue", csrf.Handler(http.HandlerFunc(a.requeue)))
	mux.HandleFunc("/api/node", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.nodeFigures())
	})
	return mux
}

// maxRequeueBody bounds /api/requeue's body: a RequeueDeadLetterRequest
// is a class, an object ID and a time.
const maxRequeueBody = 16 << 10

// requeue serves POST /api/requeue: its body is a RequeueDeadLetterRequest
// as JSON ({"class": …, "object": {"id": …}, "scheduled_unix_ms": …}), its
// reply the RequeueDeadLetterResponse, or {"error", "reason"} with the
// HTTP status of the Admin call's gRPC code. It runs the Admin method
// itself, forwarding to the object's owner included.
func (a *Agent) requeue(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSONError(w, http.StatusMethodNotAllowed, "", "POST a RequeueDeadLetterRequest as JSON")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeJSONError(w, http.StatusUnsupportedMediaType, "", "the body must be application/json (a RequeueDeadLetterRequest)")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequeueBody))
	if err != nil {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "", err.Error())
		return
	}
	req := &durablev1.RequeueDeadLetterRequest{}
	if err := protojson.Unmarshal(body, req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "not a RequeueDeadLetterRequest: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	resp, err := (&adminServer{a: a}).RequeueDeadLetter(ctx, req)
	if err != nil {
		st := status.Convert(err)
		reason := ""
		for _, d := range st.Details() {
			if ed, ok := d.(*durablev1.ErrorDetail); ok {
				reason = ed.GetReason()
			}
		}
		writeJSONError(w, httpStatus(st.Code()), reason, st.Message())
		return
	}
	writeProto(w, resp, nil)
}

// writeJSONError answers {"error": msg, "reason": reason} with code; reason
// is the ErrorDetail's (ALARM_PENDING…), empty when the call never ran.
func writeJSONError(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Error  string `json:"error"`
		Reason string `json:"reason,omitempty"`
	}{msg, reason})
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
