package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/durable-run/durable/security"
)

// Ops is what an OpsServer serves; each part is off when unset.
type Ops struct {
	// Metrics, when set, is served at /metrics (Prometheus text format).
	Metrics *prometheus.Registry
	// Health, when set, answers /healthz: 200 "SERVING" while it reports
	// true, 503 "NOT_SERVING" otherwise (for probes that speak HTTP only).
	Health func() bool
	// Dashboard, when set, serves the web dashboard at / (and its /api/).
	Dashboard http.Handler
	// Pprof serves the process's profiles (net/http/pprof) under
	// /debug/pprof/: /debug/pprof/profile?seconds=30 is a CPU profile,
	// /debug/pprof/heap the heap, /debug/pprof/goroutine?debug=2 every
	// goroutine's stack. Profiles expose internals and cost CPU while they
	// are taken: enable them on loopback or a private network only.
	Pprof bool
	// TLS, when set, serves HTTPS with it; Guard, when set, checks every
	// request (opsPermission: health and the dashboard's files are open,
	// profiles need admin, the rest read).
	TLS   *tls.Config
	Guard *security.Guard
	// Hosts filters requests by their Host header when Guard is unset (an
	// unsecured listener): IP literals, localhost and Hosts.Allowed only,
	// against DNS rebinding (security.HostFilter). Its zero value is that
	// default.
	Hosts security.HostFilter
}

// OpsServer serves a node's operator endpoints over HTTP (Ops).
type OpsServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// DebugServer is an OpsServer serving the profiles only (ServeDebug).
type DebugServer = OpsServer

// ServeDebug starts an OpsServer on addr serving only the process's
// profiles (--debug-listen).
func ServeDebug(addr string) (*OpsServer, error) { return ServeOps(addr, Ops{Pprof: true}) }

// ServeOps starts an OpsServer on addr (host:port; port 0 picks one).
func ServeOps(addr string, o Ops) (*OpsServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: HTTP listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	if o.Metrics != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(o.Metrics, promhttp.HandlerOpts{Registry: o.Metrics}))
	}
	if o.Health != nil {
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if o.Health() {
				fmt.Fprintln(w, "SERVING")
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "NOT_SERVING")
		})
	}
	if o.Dashboard != nil {
		mux.Handle("/", o.Dashboard)
	}
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	var h http.Handler = mux
	if o.Guard != nil {
		h = o.Guard.HTTP(opsPermission, mux)
	} else {
		h = o.Hosts.Handler(mux)
	}
	return serveHTTP(lis, h, o.TLS), nil
}

// serveHTTP serves h on lis (with TLS when tlsCfg is set) until Close.
func serveHTTP(lis net.Listener, h http.Handler, tlsCfg *tls.Config) *OpsServer {
	if tlsCfg != nil {
		lis = tls.NewListener(lis, tlsCfg)
	}
	d := &OpsServer{
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute},
		addr: lis.Addr().String(), done: make(chan struct{}),
	}
	go func() {
		defer close(d.done)
		_ = d.srv.Serve(lis) // ErrServerClosed after Close
	}()
	return d
}

// Addr returns the address the server listens on.
func (d *OpsServer) Addr() string { return d.addr }

// Close stops the server, cutting off profiles in progress, and waits for
// it.
func (d *OpsServer) Close() error { return d.closeWithin(time.Second) }

// closeWithin stops the server: requests in flight may finish within
// limit (none at 0), then they are cut off; it waits for the server.
func (d *OpsServer) closeWithin(limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	err := d.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = d.srv.Close() // a CPU profile is still being taken
	}
	<-d.done
	return err
}
