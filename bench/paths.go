package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/node"
)

// The paths of the invoke scenario's rows (Result.Path), with ComparePaths.
const (
	// PathGRPC calls the untyped twin of Counter (untypedCounterClass) over
	// gRPC with client.Invoke: the baseline.
	PathGRPC = "grpc"
	// PathTyped calls the typed Counter (durable.Methods, JSON codecs) with
	// client.Call: the baseline plus typed dispatch and encoding on both
	// ends.
	PathTyped = "typed"
	// PathHTTP calls the untyped twin through the HTTP front door (net/http,
	// keep-alive): the baseline with HTTP/1.1 in place of gRPC between the
	// caller and the first node.
	PathHTTP = "http"
)

// paths are the compared paths, in the order their phases run.
var paths = []string{PathGRPC, PathTyped, PathHTTP}

// untypedCounterClass is Counter without typed methods: the same storage
// work (one key, its value in decimal), its own switch on the method name
// and a reply written by hand, so that Counter's rows differ from its by
// typed dispatch and the JSON codecs alone.
const untypedCounterClass = "BenchCounter"

type untypedCounter struct{ st durable.State }

// Prepare implements Preparer: the nodes run untypedCounterClass (the
// example classes, Counter among them, are always there).
func (InvokeScenario) Prepare(reg *node.Registry, _ *node.Config) error {
	return node.RegisterClass(reg, untypedCounterClass, func(_ context.Context, st durable.State) (*untypedCounter, error) {
		return &untypedCounter{st: st}, nil
	})
}

// Invoke serves "get" and "increment" (payload: an optional decimal delta)
// and answers {"value":N}, as Counter does.
func (c *untypedCounter) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	s := c.st.Storage()
	raw, ok, err := s.Get(ctx, counterValueKey)
	if err != nil {
		return nil, err
	}
	var v int64
	if ok {
		if v, err = strconv.ParseInt(string(raw), 10, 64); err != nil {
			return nil, err
		}
	}
	switch method {
	case "get":
	case "increment":
		d := int64(1)
		if len(payload) > 0 {
			if d, err = strconv.ParseInt(string(payload), 10, 64); err != nil {
				return nil, fmt.Errorf("%w: increment takes a decimal delta", durable.ErrBadPayload)
			}
		}
		v += d
		if err := s.Put(ctx, counterValueKey, []byte(strconv.FormatInt(v, 10))); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: %q (want get or increment)", durable.ErrUnknownMethod, method)
	}
	return []byte(`{"value":` + strconv.FormatInt(v, 10) + `}`), nil
}

// counterValueKey is the storage key of Counter's value.
const counterValueKey = "value"

// classOf is the class a path calls.
func classOf(path string) string {
	if path == PathTyped || path == "" {
		return counterClass
	}
	return untypedCounterClass
}

// newHTTPClient returns the front door's client for up to conns callers:
// keep-alive, one idle connection kept per caller and node, so that no
// phase measures connection set-up.
func newHTTPClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = 0, conns, 0
	return &http.Client{Transport: tr, Timeout: opTimeout}
}

// invokeHTTP calls method on class/name through the front door at addr,
// with an empty JSON body (as the gRPC paths send no payload), and reads
// the whole reply so that the connection is reused.
func invokeHTTP(ctx context.Context, hc *http.Client, addr, class, name, method string) error {
	u := "http://" + addr + "/v1/objects/" + url.PathEscape(class) + "/" + url.PathEscape(name) + "/" + url.PathEscape(method)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, http.NoBody)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: POST %s: %s: %s", u, resp.Status, body)
	}
	return nil
}

// comparePaths sets VsGRPC of every typed or http row that has a grpc row
// of the same transport, observability, case and concurrency.
func comparePaths(rows []Result) {
	for i := range rows {
		m := &rows[i]
		if m.Path == "" || m.Path == PathGRPC {
			continue
		}
		j := slices.IndexFunc(rows, func(p Result) bool {
			return p.Path == PathGRPC && p.Transport == m.Transport && p.Observability == m.Observability && p.Case == m.Case && p.Concurrency == m.Concurrency
		})
		if j >= 0 {
			m.VsGRPC = m.versus(rows[j])
		}
	}
}
