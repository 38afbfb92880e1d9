package security

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"time"
)

// Authority is a certificate authority that issues the cluster's
// certificates: `durable certs` and `durable dev --secure` make a
// throw-away one; production clusters use their own PKI with the same
// certificate layout (see docs/security.md).
type Authority struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
	KeyPEM  []byte
}

// NewAuthority makes a self-signed CA valid for validity from now.
func NewAuthority(name string, validity time.Duration) (*Authority, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"durable"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("security: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Authority{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), Key: key, KeyPEM: keyPEM}, nil
}

// LoadAuthority reads a CA written by WriteFiles.
func LoadAuthority(certFile, keyFile string) (*Authority, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("security: read CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("security: read CA key: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("security: %s or %s holds no PEM block", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("security: parse CA %s: %w", certFile, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("security: parse CA key %s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("security: %s is not a CA with its key", certFile)
	}
	return &Authority{Cert: cert, CertPEM: certPEM, Key: signer, KeyPEM: keyPEM}, nil
}

// Leaf describes a certificate to issue.
type Leaf struct {
	// Identity is the node or client the certificate names (its URI and
	// common name).
	Identity Identity
	// Hosts are the DNS names and IP addresses a server certificate is
	// valid for.
	Hosts []string
	// Server and Client say what the certificate may authenticate; a node's
	// is both (it serves and it dials its peers).
	Server, Client bool
	// NotBefore and NotAfter bound its validity; zero: from a minute ago
	// for Validity.
	NotBefore, NotAfter time.Time
}

// Issued is a certificate and its key, PEM-encoded.
type Issued struct{ CertPEM, KeyPEM []byte }

// Issue signs a certificate for leaf.
func (a *Authority) Issue(leaf Leaf) (Issued, error) {
	if leaf.Identity.Kind != Node && leaf.Identity.Kind != Client {
		return Issued{}, errors.New("security: a certificate names a node or a client")
	}
	if err := ValidName(leaf.Identity.Name); err != nil {
		return Issued{}, err
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return Issued{}, err
	}
	if leaf.NotBefore.IsZero() {
		leaf.NotBefore = time.Now().Add(-time.Minute)
	}
	if leaf.NotAfter.IsZero() {
		leaf.NotAfter = leaf.NotBefore.Add(Validity)
	}
	uri := ClientURI(leaf.Identity.Name)
	if leaf.Identity.Kind == Node {
		uri = NodeURI(leaf.Identity.Name)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: leaf.Identity.Name, Organization: []string{"durable"}},
		NotBefore:    leaf.NotBefore,
		NotAfter:     leaf.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs:         []*url.URL{uri},
	}
	if leaf.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if leaf.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, h := range leaf.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, key.Public(), a.Key)
	if err != nil {
		return Issued{}, fmt.Errorf("security: issue %s: %w", leaf.Identity, err)
	}
	return Issued{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// Validity is how long an issued certificate is valid by default.
const Validity = 365 * 24 * time.Hour

func newKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("security: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pemBlock("PRIVATE KEY", der), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
