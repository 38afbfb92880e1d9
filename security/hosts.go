package security

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/durable-run/durable/metrics"
)

// HostFilter keeps DNS rebinding away from an HTTP listener that serves
// without TLS or authentication (a node's operations listener, its front
// door, its profiles). A page on another origin can point its own name at
// 127.0.0.1 (or any address of the node) once the browser has loaded it,
// and then call the listener as its "own" origin: a same-origin check
// passes, because Origin and Host both carry the attacker's name. What
// gives it away is the Host header: a browser always sends the name the
// page used. So the filter answers only requests whose Host is an IP
// literal, localhost, or a name in Allowed, and refuses the rest with 403.
//
// A secured listener needs no filter: the attacker's name is not in the
// node's certificate, so the browser's TLS handshake fails, and the page
// has no client certificate or token to pass the guard with.
//
// The zero value allows IP literals and localhost and counts nothing.
type HostFilter struct {
	// Allowed are more names the listener is reached by (a DNS name of
	// the node, a proxy's); "*" allows any Host (the filter is off).
	// Compared without case, without a port and without a trailing dot.
	Allowed []string
	// Metrics, when set, counts refusals in
	// durable_auth_refusals_total{reason="host_not_allowed", rpc=What}.
	Metrics *metrics.Set
	// What labels the refusals ("ops", "http").
	What string
}

// HostNotAllowed is the reason label of a refusal by a HostFilter.
const HostNotAllowed = "host_not_allowed"

// ValidateAllowedHosts checks names meant for HostFilter.Allowed: host
// names, "*", or IP addresses (which need no entry), without a port or
// scheme. Every bad name is reported.
func ValidateAllowedHosts(names []string) error {
	var bad []string
	for _, n := range names {
		if n == "*" || net.ParseIP(n) != nil {
			continue
		}
		if !validHostName(strings.TrimSuffix(n, ".")) {
			bad = append(bad, fmt.Sprintf("%q", n))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("security: allowed HTTP hosts %s: want host names (letters, digits, '-', '_', '.'), without port or scheme, or *", strings.Join(bad, ", "))
	}
	return nil
}

func validHostName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Allows reports whether a request whose Host header is host (with or
// without a port) may be answered. An empty host is allowed: a browser
// always sends one, so its absence is no rebinding.
func (f HostFilter) Allows(host string) bool {
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") {
		return true
	}
	for _, a := range f.Allowed {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "."), host) {
			return true
		}
	}
	return false
}

// Handler wraps h: a request whose Host the filter does not allow gets
// 403 with a JSON body saying why, and is counted.
func (f HostFilter) Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.Allows(r.Host) {
			h.ServeHTTP(w, r)
			return
		}
		if f.Metrics != nil {
			f.Metrics.AuthRefusals.WithLabelValues(HostNotAllowed, f.What).Inc()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(struct {
			Error  string `json:"error"`
			Reason string `json:"reason"`
		}{
			Error: fmt.Sprintf("host %q is not allowed: this listener serves without TLS or authentication and answers only "+
				"requests to an IP address, localhost or a name given in --http-allowed-hosts (DURABLE_HTTP_ALLOWED_HOSTS), "+
				"so that a web page cannot reach it by pointing its own name at this address (DNS rebinding)", r.Host),
			Reason: "HOST_NOT_ALLOWED",
		})
	})
}
