package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
	"github.com/durable-run/durable/security"
)

// The HTTP front door (Config.HTTPListen) serves the Objects and Admin
// APIs as HTTP/JSON, for callers that do not speak gRPC (a web backend, a
// Worker, curl):
//
//	POST /v1/objects/{class}/{name}/{method}       invoke (invoke for class);
//	                                               ?location=dc2 names the object homed in dc2
//	POST /v1/objects/{class}/id/{id}/{method}      the same, by object id
//	GET  /v1/admin/status                          Admin.Status (read)
//	GET  /v1/admin/alarms?class=&limit=&page_token=&due_before_unix_ms=
//	                                               Admin.ListAlarms (read)
//	GET  /v1/admin/alarms/{class}/{name}           Admin.GetAlarm (read)
//	GET  /v1/admin/alarms/{class}/id/{id}          the same, by object id
//	GET  /v1/admin/dead-letters?class=&limit=&page_token=
//	                                               Admin.ListDeadLetters (read)
//	POST /v1/admin/dead-letters/requeue            Admin.RequeueDeadLetter (admin)
//	POST /v1/admin/dead-letters/purge              Admin.PurgeDeadLetters (admin)
//	POST /v1/admin/drain                           Admin.Drain (admin)
//
// An invocation's body is its payload (typed methods take and return
// JSON), its reply the object's reply; it goes through Node.Invoke, so it
// is routed (forwarded to the owner) and deduplicated (Idempotency-Key is
// the request id) as a gRPC call is. The Admin endpoints call the Admin
// service's own methods and answer their messages as protojson with the
// proto field names (as `durable … --json` prints them); POST bodies are
// the request message as JSON. Every request may say its deadline
// (Durable-Timeout header or ?timeout=, a Go duration). Errors are the
// gRPC status's code mapped by httpStatus, with a JSON body (frontError).
//
// When the node is secured, it serves TLS with the node's certificate and
// the guard checks each request as the gRPC interceptors check an RPC:
// client certificate and/or bearer token, invoke for the class in the path,
// read or admin for the Admin endpoints. Browsers are kept from making
// cross-origin writes (CSRF) on every node, secured or not; on an
// unsecured node a request whose Host is not an IP address, localhost or
// one of Security.HTTPAllowedHosts is refused (DNS rebinding: a page whose
// name resolves to the node passes any origin check).

// Deadlines of front-door requests.
const (
	DefaultHTTPTimeout = 30 * time.Second
	MaxHTTPTimeout     = 5 * time.Minute
)

// TimeoutHeader carries a request's deadline, a Go duration ("1.5s").
const TimeoutHeader = "Durable-Timeout"

// maxAdminBody bounds an Admin POST's body (a small request message).
const maxAdminBody = 64 << 10

// frontDoor is the front door's handler.
func (a *Agent) frontDoor() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/objects/{class}/{name}/{method}", a.invokeHTTP)
	mux.HandleFunc("POST /v1/objects/{class}/id/{id}/{method}", a.invokeHTTP)
	admin := &adminServer{a: a}
	read, write := security.PermRead, security.PermAdmin
	mux.Handle("GET /v1/admin/status", adminRoute(a, read, func(*http.Request) (*durablev1.StatusRequest, error) {
		return &durablev1.StatusRequest{}, nil
	}, admin.Status))
	mux.Handle("GET /v1/admin/alarms", adminRoute(a, read, func(r *http.Request) (*durablev1.ListAlarmsRequest, error) {
		q := r.URL.Query()
		limit, err := queryInt(q.Get("limit"), "limit")
		if err != nil {
			return nil, err
		}
		due, err := queryInt(q.Get("due_before_unix_ms"), "due_before_unix_ms")
		return &durablev1.ListAlarmsRequest{Class: q.Get("class"), Limit: int32(limit), PageToken: q.Get("page_token"), DueBeforeUnixMs: due}, err
	}, admin.ListAlarms))
	getAlarm := adminRoute(a, read, func(r *http.Request) (*durablev1.GetAlarmRequest, error) {
		ref := &durablev1.ObjectRef{Ref: &durablev1.ObjectRef_Name{Name: r.PathValue("name")}, Location: r.URL.Query().Get("location")}
		if id := r.PathValue("id"); id != "" {
			ref.Ref = &durablev1.ObjectRef_Id{Id: id}
		}
		return &durablev1.GetAlarmRequest{Class: r.PathValue("class"), Object: ref}, nil
	}, admin.GetAlarm)
	mux.Handle("GET /v1/admin/alarms/{class}/{name}", getAlarm)
	mux.Handle("GET /v1/admin/alarms/{class}/id/{id}", getAlarm)
	mux.Handle("GET /v1/admin/dead-letters", adminRoute(a, read, func(r *http.Request) (*durablev1.ListDeadLettersRequest, error) {
		q := r.URL.Query()
		limit, err := queryInt(q.Get("limit"), "limit")
		return &durablev1.ListDeadLettersRequest{Class: q.Get("class"), Limit: int32(limit), PageToken: q.Get("page_token")}, err
	}, admin.ListDeadLetters))
	mux.Handle("POST /v1/admin/dead-letters/requeue", adminRoute(a, write, bodyOf[*durablev1.RequeueDeadLetterRequest], admin.RequeueDeadLetter))
	mux.Handle("POST /v1/admin/dead-letters/purge", adminRoute(a, write, bodyOf[*durablev1.PurgeDeadLettersRequest], admin.PurgeDeadLetters))
	mux.Handle("POST /v1/admin/drain", adminRoute(a, write, func(*http.Request) (*durablev1.DrainRequest, error) {
		return &durablev1.DrainRequest{}, nil
	}, admin.Drain))

	// A cross-site page must not make a visitor's browser invoke or change
	// the cluster (CSRF), even on an unsecured loopback node, where no
	// token stands in its way: as for the dashboard's /api/requeue, a POST
	// whose Sec-Fetch-Site or Origin names another origin is refused. (A
	// client that is not a browser sends neither header.)
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSONError(w, http.StatusForbidden, "CROSS_ORIGIN", "cross-origin request refused")
	}))
	return csrf.Handler(mux)
}

// authorize checks r against the guard (a secured node): perm, for class
// when perm is PermInvoke. A refusal is answered, 401 or 403, and false
// returned.
func (a *Agent) authorize(w http.ResponseWriter, r *http.Request, perm security.Permission, class string) bool {
	if a.guard == nil {
		return true
	}
	err := a.guard.CheckHTTP(r, r.Pattern, perm, class)
	if err == nil {
		return true
	}
	code, reason := security.HTTPStatus(err), "PERMISSION_DENIED"
	if code == http.StatusUnauthorized {
		reason = "UNAUTHENTICATED"
		w.Header().Set("WWW-Authenticate", `Bearer realm="durable"`)
	}
	writeJSONError(w, code, reason, status.Convert(err).Message())
	return false
}

// invokeHTTP serves POST /v1/objects/…: the body is the payload, the
// reply the object's, as application/json when it is JSON. The reply's
// Durable-Object-Id and Durable-Owner headers name the object and the node
// that ran the call.
func (a *Agent) invokeHTTP(w http.ResponseWriter, r *http.Request) {
	class, method := r.PathValue("class"), r.PathValue("method")
	if !a.authorize(w, r, security.PermInvoke, class) {
		return
	}
	ctx, cancel, err := requestContext(r)
	if err != nil {
		writeFrontError(w, err)
		return
	}
	defer cancel()
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(a.cfg.Limits.MaxMessageBytes)))
	if err != nil {
		writeBodyError(w, err)
		return
	}
	if isJSON(r) && len(payload) > 0 && !json.Valid(payload) {
		writeFrontError(w, fmt.Errorf("%w: the body is not valid JSON", durable.ErrBadPayload))
		return
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		if len(key) > node.MaxRequestIDBytes {
			writeFrontError(w, durable.Invalidf("Idempotency-Key of %d bytes exceeds %d", len(key), node.MaxRequestIDBytes))
			return
		}
		ctx = node.WithRequestID(ctx, key)
	}
	ref := node.Ref{Name: r.PathValue("name"), ID: r.PathValue("id"), Location: r.URL.Query().Get("location")}
	res, err := a.Node.Invoke(ctx, class, ref, method, payload)
	if err != nil {
		writeFrontError(w, err)
		return
	}
	h := w.Header()
	h.Set("Durable-Object-Id", res.ID.String())
	h.Set("Durable-Owner", res.Owner)
	h.Set("X-Content-Type-Options", "nosniff")
	if json.Valid(res.Payload) {
		h.Set("Content-Type", "application/json")
	} else {
		h.Set("Content-Type", "application/octet-stream")
	}
	_, _ = w.Write(res.Payload)
}

// adminRoute serves an Admin method: parse builds its request from the
// HTTP request, call runs it in-process, and the reply is written as
// protojson (writeProto).
func adminRoute[Req, Resp proto.Message](a *Agent, perm security.Permission, parse func(*http.Request) (Req, error), call func(context.Context, Req) (Resp, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.authorize(w, r, perm, "") {
			return
		}
		ctx, cancel, err := requestContext(r)
		if err != nil {
			writeFrontError(w, err)
			return
		}
		defer cancel()
		req, err := parse(r)
		if err != nil {
			writeFrontError(w, err)
			return
		}
		resp, err := call(ctx, req)
		if err != nil {
			writeFrontError(w, err)
			return
		}
		writeProto(w, resp, nil)
	})
}

// bodyOf parses an Admin POST's body, application/json, as Req.
func bodyOf[Req proto.Message](r *http.Request) (Req, error) {
	var req Req
	req = req.ProtoReflect().Type().New().Interface().(Req)
	if !isJSON(r) {
		return req, durable.Invalidf("the body must be application/json (a %s)", req.ProtoReflect().Descriptor().Name())
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return req, fmt.Errorf("%w: read the body: %w", durable.ErrInvalidArgument, err)
	}
	if len(body) > maxAdminBody {
		return req, durable.Invalidf("the body exceeds %d bytes", maxAdminBody)
	}
	if err := protojson.Unmarshal(body, req); err != nil {
		return req, durable.Invalidf("not a %s: %v", req.ProtoReflect().Descriptor().Name(), err)
	}
	return req, nil
}

func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

func queryInt(v, name string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0, durable.Invalidf("%s=%q is not an integer", name, v)
	}
	return n, nil
}

// requestContext is r's context with its deadline: the Durable-Timeout
// header or the timeout parameter, DefaultHTTPTimeout without either, at
// most MaxHTTPTimeout.
func requestContext(r *http.Request) (context.Context, context.CancelFunc, error) {
	d := DefaultHTTPTimeout
	v := r.Header.Get(TimeoutHeader)
	if v == "" {
		v = r.URL.Query().Get("timeout")
	}
	if v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 || d > MaxHTTPTimeout {
			return nil, nil, durable.Invalidf("timeout %q: want a Go duration above 0 and at most %v (e.g. 1.5s)", v, MaxHTTPTimeout)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, nil
}

// frontError is the body of a front-door error: the status's message and
// its ErrorDetail (the same reasons as over gRPC).
type frontError struct {
	Error        string `json:"error"`
	Code         string `json:"code"`
	Reason       string `json:"reason,omitempty"`
	Retryable    bool   `json:"retryable"`
	ObjectError  bool   `json:"object_error,omitempty"`
	OwnerAddress string `json:"owner_address,omitempty"`
	RetryAfterMs int64  `json:"retry_after_ms,omitempty"`
}

// writeFrontError answers err, converted by the node's one table
// (node.ToStatus), with its HTTP status (httpStatus; 422 for an object's
// own error) and, when the caller should wait, Retry-After in seconds.
func writeFrontError(w http.ResponseWriter, err error) {
	st := status.Convert(node.ToStatus(err, ""))
	body := frontError{Error: st.Message(), Code: st.Code().String()}
	for _, d := range st.Details() {
		if ed, ok := d.(*durablev1.ErrorDetail); ok {
			body.Reason, body.Retryable, body.ObjectError = ed.GetReason(), ed.GetRetryable(), ed.GetObjectError()
			body.OwnerAddress, body.RetryAfterMs = ed.GetOwnerAddress(), ed.GetRetryAfterMs()
		}
	}
	code := httpStatus(st.Code())
	if body.ObjectError {
		code = http.StatusUnprocessableEntity
	}
	if body.RetryAfterMs > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((body.RetryAfterMs+999)/1000, 10))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// writeBodyError answers a body that could not be read: 413 when too
// large.
func writeBodyError(w http.ResponseWriter, err error) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "INVALID_ARGUMENT", fmt.Sprintf("the body exceeds %d bytes", tooLarge.Limit))
		return
	}
	writeFrontError(w, fmt.Errorf("%w: read the body: %w", durable.ErrInvalidArgument, err))
}

// httpStatus is the one table from a gRPC code to the HTTP status the
// operations listener and the front door answer with. An object's own
// error (Unknown with object_error) is 422 on the front door: the object
// refused the call, the node did not fail; COMMIT_UNKNOWN (Unknown too)
// and Internal are 500. Unimplemented is an unknown method: 404, the URL
// names nothing.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.NotFound, codes.Unimplemented:
		return http.StatusNotFound
	case codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Canceled:
		return 499 // the client closed the request (nginx's code); it sees nothing
	}
	return http.StatusInternalServerError
}

// serveFrontDoor listens on Config.HTTPListen and serves the front door:
// TLS with the node's certificate when secured, a client certificate
// required unless Security.ClientCertOptional, as on the gRPC listener;
// unsecured, only to the hosts its HostFilter allows.
func (a *Agent) serveFrontDoor() (*OpsServer, error) {
	lis, err := net.Listen("tcp", a.cfg.HTTPListen)
	if err != nil {
		return nil, fmt.Errorf("agent: HTTP front door on %s: %w", a.cfg.HTTPListen, err)
	}
	h, tlsCfg := a.frontDoor(), (*tls.Config)(nil)
	if a.tls != nil {
		tlsCfg = a.tls.ServerConfig(!a.cfg.Security.ClientCertOptional)
	} else {
		// Unsecured: no page may reach it by a name of its own (DNS
		// rebinding), whatever its origin checks say.
		h = a.hostFilter("http").Handler(h)
	}
	return serveHTTP(lis, h, tlsCfg), nil
}
