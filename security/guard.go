package security

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable/metrics"
)

// Permission is what one RPC needs.
type Permission int

const (
	// PermOpen: anyone (the health service).
	PermOpen Permission = iota
	PermRead
	PermInvoke
	PermAdmin
)

func (p Permission) String() string {
	return [...]string{"open", "read", "invoke", "admin"}[p]
}

// MethodPermission is what the gRPC method fullMethod needs: methods that
// change the cluster need admin, those that read it need read, Invoke
// needs invoke; a method this table does not know needs admin (a new RPC
// is closed until it is placed here).
func MethodPermission(fullMethod string) Permission {
	switch fullMethod {
	case "/durable.v1.Objects/Invoke":
		return PermInvoke
	case "/durable.v1.Admin/GetAlarm", "/durable.v1.Admin/ListAlarms", "/durable.v1.Admin/ListDeadLetters",
		"/durable.v1.Admin/Status", "/durable.v1.Admin/Locate", "/durable.v1.Admin/ListObjects":
		return PermRead
	case "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/List":
		return PermOpen
	}
	if strings.HasPrefix(fullMethod, "/grpc.reflection.") {
		return PermRead
	}
	return PermAdmin
}

// ReservedHeaderPrefix starts the metadata keys only nodes send each other
// (the forward count, a forwarded admin call): a caller that is not a node
// and sends one is refused, so no client can pose as a forward.
const ReservedHeaderPrefix = "durable-"

// GuardConfig configures a Guard.
type GuardConfig struct {
	// Policy is the auth policy file; it is read again when it changes
	// (checked at most every ReloadCheckEvery). Empty: every client
	// certificate the CA signed may do everything, and no token is
	// accepted.
	Policy  string
	Logger  *slog.Logger
	Metrics *metrics.Set
	// Clock gives the time JWTs are checked at; nil: time.Now.
	Clock func() time.Time
}

// Guard authenticates and authorises every call a node serves: its gRPC
// interceptors check each RPC against MethodPermission, and HTTP wraps the
// operations listener. A caller is a node of the cluster (its certificate
// names one: every permission), a client certificate, or a bearer token
// (Authorization: Bearer …; static or JWT, per the policy): its grant is
// the union of those it presented. No identity → Unauthenticated; not
// permitted → PermissionDenied. Refusals are counted and logged (at most
// a few lines a second).
type Guard struct {
	cfg  GuardConfig
	logs *rate.Limiter

	mu      sync.Mutex // guards the fields below
	checked time.Time
	stamp   string
	policy  *Policy // nil: no policy file
}

// NewGuard reads the policy file, if any.
func NewGuard(cfg GuardConfig) (*Guard, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.Discard()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	g := &Guard{cfg: cfg, logs: rate.NewLimiter(5, 10)}
	if cfg.Policy != "" {
		p, err := readPolicy(cfg.Policy)
		if err != nil {
			return nil, err
		}
		g.policy, g.stamp, g.checked = p, stamp(Files{Cert: cfg.Policy}), time.Now()
	}
	return g, nil
}

func readPolicy(file string) (*Policy, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("security: read auth policy: %w", err)
	}
	return ParsePolicy(data, filepath.Dir(file))
}

// current returns the policy in use, reading the file again when it
// changed; one that fails to parse is logged and the previous stays.
func (g *Guard) current() *Policy {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cfg.Policy == "" {
		return nil
	}
	if now := time.Now(); now.Sub(g.checked) >= ReloadCheckEvery {
		g.checked = now
		if st := stamp(Files{Cert: g.cfg.Policy}); st != g.stamp {
			g.stamp = st
			p, err := readPolicy(g.cfg.Policy)
			result := "ok"
			if err != nil {
				result = "error"
				g.cfg.Logger.Error("auth policy not reloaded; the previous one stays in use", "file", g.cfg.Policy, "err", err)
			} else {
				g.policy = p
				g.cfg.Logger.Info("auth policy reloaded", "file", g.cfg.Policy)
			}
			g.cfg.Metrics.Reloads.WithLabelValues("auth_policy", result).Inc()
		}
	}
	return g.policy
}

// caller is who made a call and what it may do.
type caller struct {
	identities []Identity
	grant      Grant
}

// forceCheck makes the next call look at the policy file (tests).
func (g *Guard) forceCheck() {
	g.mu.Lock()
	g.checked = time.Time{}
	g.mu.Unlock()
}

// Check authorises a call: fullMethod's permission (class for Invoke),
// for the caller identified by cert (the verified client certificate's
// identity, if any) and md (its metadata).
func (g *Guard) Check(fullMethod, class string, cert Identity, hasCert bool, md metadata.MD) error {
	perm := MethodPermission(fullMethod)
	if perm == PermOpen {
		return nil
	}
	return g.check(fullMethod, perm, class, cert, hasCert, md.Get("authorization"), func() bool {
		for k := range md {
			if strings.HasPrefix(k, ReservedHeaderPrefix) {
				return true
			}
		}
		return false
	}())
}

func (g *Guard) check(rpc string, perm Permission, class string, cert Identity, hasCert bool, auth []string, reserved bool) error {
	if hasCert && cert.Kind == Node {
		return nil
	}
	c, err := g.authenticate(cert, hasCert, auth)
	if err != nil {
		return g.refuse(rpc, codes.Unauthenticated, Identity{}, err.Error())
	}
	who := c.identities[0]
	if reserved {
		return g.refuse(rpc, codes.PermissionDenied, who, "only nodes of the cluster may send "+ReservedHeaderPrefix+"* headers")
	}
	if !c.grant.allows(perm, class) {
		what := perm.String()
		if perm == PermInvoke && class != "" {
			what += " " + class
		}
		return g.refuse(rpc, codes.PermissionDenied, who, fmt.Sprintf("%s may not %s", who, what))
	}
	return nil
}

// authenticate finds who the caller is and their grant.
func (g *Guard) authenticate(cert Identity, hasCert bool, auth []string) (caller, error) {
	p := g.current()
	var c caller
	if hasCert {
		if p == nil {
			c.identities = append(c.identities, cert)
			c.grant = Grant{Roles: []Role{RoleAdmin, RoleInvoke}}
		} else if gr, ok := p.clientGrant(cert.Name); ok {
			c.identities = append(c.identities, cert)
			c.grant = union(c.grant, gr)
		}
	}
	if len(auth) > 0 {
		token, ok := strings.CutPrefix(auth[0], "Bearer ")
		if !ok || len(auth) > 1 {
			return caller{}, errors.New("the authorization header must be one \"Bearer <token>\"")
		}
		if p == nil {
			return caller{}, errors.New("this node accepts no bearer tokens (no auth policy)")
		}
		id, gr, err := p.tokenGrant(strings.TrimSpace(token), g.cfg.Clock())
		if err != nil {
			return caller{}, err
		}
		c.identities = append(c.identities, id)
		c.grant = union(c.grant, gr)
	}
	if len(c.identities) == 0 {
		if hasCert {
			return caller{}, fmt.Errorf("the auth policy has no entry for %s", cert)
		}
		return caller{}, errors.New("no client certificate and no bearer token")
	}
	return c, nil
}

func union(a, b Grant) Grant {
	if len(a.Roles) == 0 {
		return b
	}
	out := Grant{Roles: append(append([]Role(nil), a.Roles...), b.Roles...)}
	// A class limit holds only if every grant with invoke has one.
	aAll := slices.Contains(a.Roles, RoleInvoke) && len(a.Classes) == 0
	bAll := slices.Contains(b.Roles, RoleInvoke) && len(b.Classes) == 0
	if !aAll && !bAll {
		out.Classes = append(append([]string(nil), a.Classes...), b.Classes...)
	}
	return out
}

func (g *Guard) refuse(rpc string, code codes.Code, who Identity, why string) error {
	reason := "permission_denied"
	if code == codes.Unauthenticated {
		reason = "unauthenticated"
	}
	g.cfg.Metrics.AuthRefusals.WithLabelValues(reason, rpc).Inc()
	if g.logs.Allow() {
		g.cfg.Logger.Warn("call refused", "reason", reason, "rpc", rpc, "caller", who.String(), "why", why)
	}
	return status.Error(code, why)
}

// classed is an Invoke request, which names its class.
type classed interface{ GetClass() string }

func (g *Guard) checkCtx(ctx context.Context, fullMethod string, req any) error {
	class := ""
	if c, ok := req.(classed); ok && fullMethod == "/durable.v1.Objects/Invoke" {
		class = c.GetClass()
	}
	md, _ := metadata.FromIncomingContext(ctx)
	id, ok := PeerIdentity(ctx)
	return g.Check(fullMethod, class, id, ok, md)
}

// UnaryInterceptor checks every unary call before its handler runs.
func (g *Guard) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := g.checkCtx(ctx, info.FullMethod, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor checks every streaming call before its handler runs
// (none of durable's own RPCs stream; health Watch and reflection do).
func (g *Guard) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := g.checkCtx(ss.Context(), info.FullMethod, nil); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// HTTP wraps an operations handler: perm(path) is what a request needs;
// the caller is its verified client certificate and/or its Authorization
// header. 401 / 403 like Unauthenticated / PermissionDenied.
func (g *Guard) HTTP(perm func(path string) Permission, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.CheckHTTP(r, "ops", perm(r.URL.Path), ""); err != nil {
			code := HTTPStatus(err)
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="durable"`)
			}
			http.Error(w, status.Convert(err).Message(), code)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// CheckHTTP authorises an HTTP request as Check does a gRPC call: perm
// (for class, when perm is PermInvoke and class is set: a grant limited to
// other classes is refused) for the caller its verified client certificate
// and its Authorization header name; what labels the refusal (a route).
// The error is an Unauthenticated or PermissionDenied status (HTTPStatus
// gives 401 or 403).
func (g *Guard) CheckHTTP(r *http.Request, what string, perm Permission, class string) error {
	if perm == PermOpen {
		return nil
	}
	var id Identity
	var hasCert bool
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		id, hasCert = CertIdentity(r.TLS.VerifiedChains[0][0])
	}
	// No reserved headers over HTTP: nodes never forward to each other
	// over it, so a Durable-* header poses as nothing.
	return g.check(what, perm, class, id, hasCert, r.Header.Values("Authorization"), false)
}

// HTTPStatus is the HTTP status of a refusal of CheckHTTP: 401 when the
// caller is unknown, 403 when not permitted.
func HTTPStatus(err error) int {
	if status.Code(err) == codes.Unauthenticated {
		return http.StatusUnauthorized
	}
	return http.StatusForbidden
}
