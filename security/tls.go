package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of one side's TLS identity.
type Files struct {
	// CA is the bundle that verifies the other side: the clients' (and
	// peers') certificates on a server, the server's on a client. Empty on
	// a client: the system's roots; empty on a server: no client
	// certificates are asked for.
	CA string
	// Cert and Key are this side's certificate (chain) and private key;
	// both or neither (a client without a certificate).
	Cert, Key string
}

// Empty reports whether no file is named.
func (f Files) Empty() bool { return f.CA == "" && f.Cert == "" && f.Key == "" }

// ReloadCheckEvery is how often, at most, a Source looks whether its files
// changed: it looks during a handshake, so an idle process reads nothing.
const ReloadCheckEvery = time.Second

// Source holds a TLS identity read from Files and reads the files again
// when they change on disk (certificate rotation without a restart): a
// handshake at least ReloadCheckEvery after the last check compares the
// files' sizes and modification times and, when they changed, loads them;
// a set that fails to load (half-written, a key that does not match) is
// reported to OnReload and the previous one stays in use.
type Source struct {
	files Files
	// OnReload, when set, is told of every reload and its outcome (nil
	// error: the new files are in use). Set it before the first handshake.
	OnReload func(error)

	mu      sync.Mutex // guards the fields below
	checked time.Time
	stamp   string
	cur     loaded
}

type loaded struct {
	cert *tls.Certificate // nil: none
	pool *x509.CertPool   // nil: none (system roots on a client)
}

// NewSource loads files; an error names the file that failed.
func NewSource(files Files) (*Source, error) {
	if (files.Cert == "") != (files.Key == "") {
		return nil, errors.New("security: a certificate and its key go together")
	}
	s := &Source{files: files}
	cur, err := load(files)
	if err != nil {
		return nil, err
	}
	s.cur, s.stamp, s.checked = cur, stamp(files), time.Now()
	return s, nil
}

// Files returns the files the source reads.
func (s *Source) Files() Files { return s.files }

func load(f Files) (loaded, error) {
	var l loaded
	if f.Cert != "" {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return loaded{}, fmt.Errorf("security: load certificate %s and key %s: %w", f.Cert, f.Key, err)
		}
		l.cert = &pair
	}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return loaded{}, fmt.Errorf("security: read CA bundle: %w", err)
		}
		l.pool = x509.NewCertPool()
		if !l.pool.AppendCertsFromPEM(pem) {
			return loaded{}, fmt.Errorf("security: CA bundle %s holds no PEM certificate", f.CA)
		}
	}
	return l, nil
}

// stamp identifies the files' versions by size and modification time.
func stamp(f Files) string {
	var s string
	for _, name := range []string{f.CA, f.Cert, f.Key} {
		if name == "" {
			continue
		}
		if fi, err := os.Stat(name); err == nil {
			s += fmt.Sprintf("%d:%d;", fi.Size(), fi.ModTime().UnixNano())
		} else {
			s += "missing;"
		}
	}
	return s
}

// current returns the identity in use, reloading it first when the files
// changed.
func (s *Source) current() loaded {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); now.Sub(s.checked) >= ReloadCheckEvery {
		s.checked = now
		if st := stamp(s.files); st != s.stamp {
			cur, err := load(s.files)
			if err == nil {
				s.cur, s.stamp = cur, st
			}
			if s.OnReload != nil {
				s.OnReload(err)
			}
		}
	}
	return s.cur
}

// Reload checks the files now, as the next handshake would.
func (s *Source) Reload() {
	s.mu.Lock()
	s.checked = time.Time{}
	s.mu.Unlock()
	s.current()
}

// nextProtos serves gRPC (h2) and the operations' HTTP server.
var nextProtos = []string{"h2", "http/1.1"}

// ServerConfig is a TLS 1.3 server configuration that presents the
// current certificate and, with a CA, verifies client certificates against
// it: required with requireClientCert (mutual TLS), otherwise verified when
// given (a caller may authenticate by token instead).
func (s *Source) ServerConfig(requireClientCert bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cur := s.current()
			if cur.cert == nil {
				return nil, errors.New("security: the server has no certificate")
			}
			c := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: nextProtos, Certificates: []tls.Certificate{*cur.cert}}
			if cur.pool != nil {
				c.ClientCAs = cur.pool
				c.ClientAuth = tls.VerifyClientCertIfGiven
				if requireClientCert {
					c.ClientAuth = tls.RequireAndVerifyClientCert
				}
			}
			return c, nil
		},
	}
}

// ClientConfig is a TLS 1.3 client configuration that presents the
// current certificate, if any, and verifies the server's against the
// current CA (the system's roots without one) and the name it was dialled
// by, or serverName when set.
func (s *Source) ClientConfig(serverName string) *tls.Config {
	return s.clientConfig(serverName, func(cs tls.ConnectionState, pool *x509.CertPool) error {
		name := serverName
		if name == "" {
			name = cs.ServerName
		}
		_, err := verify(cs, pool, name)
		return err
	})
}

// PeerConfig is the configuration a node dials other nodes with: it
// presents the node's certificate and accepts a server only when the
// cluster's CA signed a certificate naming a node (the address it was
// dialled by is not checked: the node certificate is the proof).
func (s *Source) PeerConfig() *tls.Config {
	return s.clientConfig("", func(cs tls.ConnectionState, pool *x509.CertPool) error {
		if pool == nil {
			return errors.New("security: no CA to verify peers with")
		}
		leaf, err := verify(cs, pool, "")
		if err != nil {
			return err
		}
		if id, ok := CertIdentity(leaf); !ok || id.Kind != Node {
			return fmt.Errorf("security: peer certificate %q does not name a node of the cluster", leaf.Subject.CommonName)
		}
		return nil
	})
}

func (s *Source) clientConfig(serverName string, check func(tls.ConnectionState, *x509.CertPool) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// Verified by VerifyConnection against the CA in use at the
		// handshake, so that a rotated CA applies to new connections.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return check(cs, s.current().pool)
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cur := s.current(); cur.cert != nil {
				return cur.cert, nil
			}
			return &tls.Certificate{}, nil // none: the server decides
		},
	}
}

// verify checks the server's chain against pool (nil: the system's roots)
// and, when name is set, that it is valid for name; it returns the leaf.
func verify(cs tls.ConnectionState, pool *x509.CertPool, name string) (*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("security: the server presented no certificate")
	}
	opts := x509.VerifyOptions{Roots: pool, DNSName: name, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(opts); err != nil {
		return nil, fmt.Errorf("security: server certificate: %w", err)
	}
	return leaf, nil
}

// Identity is the identity the certificate in use names; ok is false
// without one.
func (s *Source) Identity() (Identity, bool) {
	cur := s.current()
	if cur.cert == nil || cur.cert.Leaf == nil {
		return Identity{}, false
	}
	return CertIdentity(cur.cert.Leaf)
}
