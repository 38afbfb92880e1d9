package security

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ClientConfig is how a client — the CLI, the load generator, a Go
// program — reaches secured nodes.
type ClientConfig struct {
	// TLS: the CA that verifies the nodes (empty: the system's roots) and
	// the client's certificate and key (empty: none). TLS is on when any is
	// set, or with Token.
	TLS Files
	// ServerName, when set, is the name the nodes' certificates are checked
	// against instead of the host dialled.
	ServerName string
	// Token is a bearer token sent with every call (only over TLS).
	Token string
	// UseTLS turns TLS on with no file set (a public CA, no certificate).
	UseTLS bool
}

// Enabled reports whether the client uses TLS.
func (c ClientConfig) Enabled() bool {
	return c.UseTLS || !c.TLS.Empty() || c.Token != "" || c.ServerName != ""
}

// Credentials returns the transport credentials (nil: plaintext) and the
// bearer token's per-call credentials (nil: none).
func (c ClientConfig) Credentials() (credentials.TransportCredentials, credentials.PerRPCCredentials, error) {
	if !c.Enabled() {
		return nil, nil, nil
	}
	src, err := NewSource(c.TLS)
	if err != nil {
		return nil, nil, err
	}
	var perRPC credentials.PerRPCCredentials
	if c.Token != "" {
		perRPC = bearer(c.Token)
	}
	return credentials.NewTLS(src.ClientConfig(c.ServerName)), perRPC, nil
}

// DialOptions are the gRPC dial options of Credentials; none for
// plaintext.
func (c ClientConfig) DialOptions() ([]grpc.DialOption, error) {
	creds, perRPC, err := c.Credentials()
	if err != nil || creds == nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if perRPC != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(perRPC))
	}
	return opts, nil
}

// bearer sends a token as "authorization: Bearer <token>".
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if b == "" {
		return nil, errors.New("security: empty bearer token")
	}
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity: a token is never sent in plaintext.
func (bearer) RequireTransportSecurity() bool { return true }
