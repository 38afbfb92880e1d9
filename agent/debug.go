package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// DebugServer serves the process's profiles (net/http/pprof) over HTTP:
// /debug/pprof/ lists them; /debug/pprof/profile?seconds=30 is a CPU
// profile, /debug/pprof/heap and /debug/pprof/allocs the heap,
// /debug/pprof/goroutine?debug=2 every goroutine's stack. It is off unless
// asked for (--debug-listen): profiles expose internals and cost CPU while
// they are taken, so bind it to loopback or a private network.
type DebugServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// ServeDebug starts a DebugServer on addr (host:port; port 0 picks one).
func ServeDebug(addr string) (*DebugServer, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: debug listener on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	d := &DebugServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		addr: lis.Addr().String(), done: make(chan struct{}),
	}
	go func() {
		defer close(d.done)
		_ = d.srv.Serve(lis) // ErrServerClosed after Close
	}()
	return d, nil
}

// Addr returns the address the server listens on.
func (d *DebugServer) Addr() string { return d.addr }

// Close stops the server, cutting off profiles in progress, and waits for
// it.
func (d *DebugServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := d.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = d.srv.Close() // a CPU profile is still being taken
	}
	<-d.done
	return err
}
