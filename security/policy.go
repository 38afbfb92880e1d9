package security

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Role is what a caller may do.
type Role string

const (
	// RoleInvoke calls objects (of every class, or of Grant.Classes).
	RoleInvoke Role = "invoke"
	// RoleRead reads the cluster: status, locate, alarms, dead letters,
	// metrics and the dashboard.
	RoleRead Role = "read"
	// RoleAdmin changes the cluster: drain, dead-letter requeue and purge,
	// profiles; it includes RoleRead.
	RoleAdmin Role = "admin"
)

// Grant is what one caller may do.
type Grant struct {
	Roles []Role `json:"roles"`
	// Classes limits RoleInvoke to these classes; empty: every class.
	Classes []string `json:"classes,omitempty"`
}

// StaticToken is a bearer token the policy accepts. Only its SHA-256 is
// kept, so the policy file reveals no token.
type StaticToken struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Grant
}

// JWTConfig verifies JSON Web Tokens: signed by one of the public keys in
// Keys (a PEM file of RSA, ECDSA or Ed25519 public keys; a relative path is
// relative to the policy file), with an expiry, the Audience and, when set,
// the Issuer. The caller is the token's subject; its grant is in the claims
// durable_roles and durable_classes.
type JWTConfig struct {
	Keys     string `json:"keys"`
	Issuer   string `json:"issuer,omitempty"`
	Audience string `json:"audience"`
}

// Policy maps callers to grants. It is read from a JSON file (see
// docs/security.md):
//
//	{
//	  "clients": {"ops": {"roles": ["admin", "invoke"]}, "*": {"roles": ["read"]}},
//	  "tokens": [{"name": "ci", "sha256": "<hex>", "roles": ["invoke"], "classes": ["Counter"]}],
//	  "jwt": {"keys": "jwt-keys.pem", "issuer": "https://idp.example", "audience": "durable"}
//	}
//
// Clients are keyed by the name their certificate carries; "*" is any
// client certificate the CA signed. Nodes of the cluster need no entry.
type Policy struct {
	Clients map[string]Grant `json:"clients,omitempty"`
	Tokens  []StaticToken    `json:"tokens,omitempty"`
	JWT     *JWTConfig       `json:"jwt,omitempty"`

	tokens  map[[32]byte]StaticToken
	jwtKeys []crypto.PublicKey
}

// ParsePolicy decodes and validates a policy; dir resolves a relative JWT
// key file. Every problem is reported at once.
func ParsePolicy(data []byte, dir string) (*Policy, error) {
	var p Policy
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("security: auth policy: %w", err)
	}
	if dec.More() {
		return nil, errors.New("security: auth policy: more than one JSON value")
	}
	var errs []error
	for name, g := range p.Clients {
		if name != "*" && ValidName(name) != nil {
			errs = append(errs, fmt.Errorf("client %q: not a valid certificate name", name))
		}
		errs = append(errs, g.validate("client "+name))
	}
	p.tokens = map[[32]byte]StaticToken{}
	names := map[string]bool{}
	for i, t := range p.Tokens {
		what := fmt.Sprintf("token %d (%q)", i, t.Name)
		if ValidName(t.Name) != nil {
			errs = append(errs, fmt.Errorf("%s: a token needs a valid name", what))
		} else if names[t.Name] {
			errs = append(errs, fmt.Errorf("%s: name used twice", what))
		}
		names[t.Name] = true
		sum, err := hex.DecodeString(t.SHA256)
		if err != nil || len(sum) != sha256.Size {
			errs = append(errs, fmt.Errorf("%s: sha256 must be 64 hex digits", what))
		} else {
			p.tokens[[32]byte(sum)] = t
		}
		errs = append(errs, t.validate(what))
	}
	if j := p.JWT; j != nil {
		if j.Audience == "" {
			errs = append(errs, errors.New("jwt: an audience is required"))
		}
		if j.Keys == "" {
			errs = append(errs, errors.New("jwt: a key file is required"))
		} else {
			keys, err := readPublicKeys(resolve(dir, j.Keys))
			errs = append(errs, err)
			p.jwtKeys = keys
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("security: auth policy: %w", err)
	}
	return &p, nil
}

func (g Grant) validate(what string) error {
	var errs []error
	if len(g.Roles) == 0 {
		errs = append(errs, fmt.Errorf("%s: no roles", what))
	}
	for _, r := range g.Roles {
		if r != RoleInvoke && r != RoleRead && r != RoleAdmin {
			errs = append(errs, fmt.Errorf("%s: unknown role %q (want invoke, read or admin)", what, r))
		}
	}
	if len(g.Classes) > 0 && !slices.Contains(g.Roles, RoleInvoke) {
		errs = append(errs, fmt.Errorf("%s: classes limit the invoke role, which it lacks", what))
	}
	for _, c := range g.Classes {
		if c == "" {
			errs = append(errs, fmt.Errorf("%s: empty class name", what))
		}
	}
	return errors.Join(errs...)
}

func resolve(dir, name string) string {
	if filepath.IsAbs(name) || dir == "" {
		return name
	}
	return filepath.Join(dir, name)
}

func readPublicKeys(file string) ([]crypto.PublicKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("jwt: %w", err)
	}
	var keys []crypto.PublicKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("jwt: key file %s: %w", file, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("jwt: key file %s holds no PEM public key", file)
	}
	return keys, nil
}

// TokenSHA256 is the hex SHA-256 a policy keeps for token.
func TokenSHA256(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// errBadToken: a token was presented but is not valid.
var errBadToken = errors.New("the bearer token is not valid")

// tokenGrant returns the identity and grant of a bearer token.
func (p *Policy) tokenGrant(token string, now time.Time) (Identity, Grant, error) {
	sum := sha256.Sum256([]byte(token))
	if t, ok := p.tokens[sum]; ok {
		// The map lookup compares hashes, not the secret; keep the
		// comparison constant-time anyway.
		if want, _ := hex.DecodeString(t.SHA256); subtle.ConstantTimeCompare(want, sum[:]) == 1 {
			return Identity{Kind: Token, Name: t.Name}, t.Grant, nil
		}
	}
	if p.JWT == nil || len(p.jwtKeys) == 0 {
		return Identity{}, Grant{}, errBadToken
	}
	var claims struct {
		jwt.RegisteredClaims
		Roles   []Role   `json:"durable_roles"`
		Classes []string `json:"durable_classes"`
	}
	opts := []jwt.ParserOption{
		jwt.WithExpirationRequired(), jwt.WithAudience(p.JWT.Audience), jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}),
	}
	if p.JWT.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(p.JWT.Issuer))
	}
	for _, k := range p.jwtKeys {
		_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return k, nil }, opts...)
		if err != nil {
			continue
		}
		g := Grant{Roles: claims.Roles, Classes: claims.Classes}
		if claims.Subject == "" || g.validate("jwt") != nil {
			return Identity{}, Grant{}, fmt.Errorf("%w: its subject or durable_roles claim is missing or invalid", errBadToken)
		}
		return Identity{Kind: Token, Name: claims.Subject}, g, nil
	}
	return Identity{}, Grant{}, errBadToken
}

// clientGrant returns the grant of a client certificate's name.
func (p *Policy) clientGrant(name string) (Grant, bool) {
	if g, ok := p.Clients[name]; ok {
		return g, true
	}
	g, ok := p.Clients["*"]
	return g, ok
}

// allows reports whether grant permits perm (on class, for PermInvoke).
func (g Grant) allows(perm Permission, class string) bool {
	has := func(r Role) bool { return slices.Contains(g.Roles, r) }
	switch perm {
	case PermRead:
		return has(RoleRead) || has(RoleAdmin)
	case PermAdmin:
		return has(RoleAdmin)
	case PermInvoke:
		return has(RoleInvoke) && (len(g.Classes) == 0 || slices.Contains(g.Classes, class))
	}
	return false
}
