package security

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// TrustDomain is the authority of the SPIFFE-style URIs durable's
// certificates carry: spiffe://durable/node/<id> names a node of the
// cluster, spiffe://durable/client/<name> a client. The CA that signs them
// is the cluster's boundary: any certificate it signed with a node URI is a
// node.
const TrustDomain = "durable"

// Kind says what a caller is.
type Kind int

const (
	// Anonymous: no certificate and no token.
	Anonymous Kind = iota
	// Node: a certificate naming a node of the cluster.
	Node
	// Client: a client certificate (by its client URI, or its subject's
	// common name when it carries none).
	Client
	// Token: a bearer token (static or JWT).
	Token
)

func (k Kind) String() string {
	switch k {
	case Node:
		return "node"
	case Client:
		return "client"
	case Token:
		return "token"
	}
	return "anonymous"
}

// Identity is who a caller is.
type Identity struct {
	Kind Kind
	Name string
}

func (id Identity) String() string {
	if id.Kind == Anonymous {
		return "anonymous"
	}
	return id.Kind.String() + "/" + id.Name
}

// nameRE is what a node id or client name in a certificate may be.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidName reports whether name can be a node id or client name in a
// certificate.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("security: %q is not a valid name: want 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit", name)
	}
	return nil
}

// NodeURI is the URI a node's certificate carries.
func NodeURI(id string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/node/" + id}
}

// ClientURI is the URI a client's certificate carries.
func ClientURI(name string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/client/" + name}
}

// CertIdentity is the identity a verified certificate names: a node or a
// client by its durable URI, else a client by its subject's common name;
// ok is false when it names none.
func CertIdentity(cert *x509.Certificate) (Identity, bool) {
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != TrustDomain {
			continue
		}
		kind, name, found := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
		if !found || ValidName(name) != nil {
			continue
		}
		switch kind {
		case "node":
			return Identity{Kind: Node, Name: name}, true
		case "client":
			return Identity{Kind: Client, Name: name}, true
		}
	}
	if cn := cert.Subject.CommonName; cn != "" {
		return Identity{Kind: Client, Name: cn}, true
	}
	return Identity{}, false
}

// PeerIdentity is the identity of the certificate the caller of an
// incoming gRPC call presented and the server verified; ok is false for a
// plaintext call or one without a client certificate.
func PeerIdentity(ctx context.Context) (Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Identity{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	return CertIdentity(info.State.VerifiedChains[0][0])
}
