package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// NodeRole is the etcd role SetupEtcdAuth gives the nodes' user: read and
// write on the cluster's prefix, nothing else.
const NodeRole = "durable-node"

// etcdAuthStepTimeout bounds each call SetupEtcdAuth makes to etcd.
const etcdAuthStepTimeout = 10 * time.Second

// EtcdAuthSetup is what SetupEtcdAuth creates.
type EtcdAuthSetup struct {
	// Endpoints and TLS reach etcd.
	Endpoints []string
	TLS       *tls.Config
	// RootPassword is the password of etcd's root user (created when
	// missing; used to log in when auth is already on).
	RootPassword string
	// User and Password are the nodes' user, granted NodeRole on Prefix.
	// No password: the user logs in by client certificate only (etcd's
	// --client-cert-auth takes a certificate's common name as the user).
	User, Password string
	Prefix         string
	// RootByCert: the TLS client certificate names etcd's root user.
	RootByCert bool
}

// SetupEtcdAuth turns etcd's authentication on for a cluster: the root
// user (etcd requires it before auth is enabled), the nodes' role with
// read/write on the prefix only, the nodes' user with that role, then auth.
// It can run again (a restarted `durable dev --secure`, a compose init
// step): what exists is kept, the nodes' password is set again. Each step
// waits at most etcdAuthStepTimeout for etcd.
func SetupEtcdAuth(ctx context.Context, s EtcdAuthSetup) error {
	if s.RootPassword == "" || s.User == "" || s.Prefix == "" {
		return errors.New("agent: etcd auth setup needs a root password, a user and a prefix")
	}
	octx := ctx
	cfg := clientv3.Config{Endpoints: s.Endpoints, TLS: s.TLS, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Context: ctx}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return fmt.Errorf("agent: etcd at %v: %w", s.Endpoints, err)
	}
	defer func() { cli.Close() }()
	sctx, cancel := context.WithTimeout(ctx, etcdAuthStepTimeout)
	st, err := cli.AuthStatus(sctx)
	cancel()
	if err != nil {
		return fmt.Errorf("agent: etcd at %v: auth status: %w", s.Endpoints, err)
	}
	// Auth on already: log in as root, unless the connection's client
	// certificate names root (no password needed then, and none sent).
	if st.Enabled && !s.RootByCert {
		cli.Close()
		cfg.Username, cfg.Password = "root", s.RootPassword
		if cli, err = clientv3.New(cfg); err != nil {
			return fmt.Errorf("agent: etcd at %v: log in as root: %w", s.Endpoints, rpctypes.Error(err))
		}
	}
	exists := func(err error) error {
		switch rpctypes.Error(err) {
		case rpctypes.ErrUserAlreadyExist, rpctypes.ErrRoleAlreadyExist:
			return nil
		}
		return err
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"add user root", func() error { _, err := cli.UserAdd(ctx, "root", s.RootPassword); return exists(err) }},
		{"add role root", func() error { _, err := cli.RoleAdd(ctx, "root"); return exists(err) }},
		{"grant root", func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role " + NodeRole, func() error { _, err := cli.RoleAdd(ctx, NodeRole); return exists(err) }},
		{"grant " + NodeRole + " the prefix", func() error {
			_, err := cli.RoleGrantPermission(ctx, NodeRole, s.Prefix, clientv3.GetPrefixRangeEnd(s.Prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add user " + s.User, func() error {
			_, err := cli.UserAddWithOptions(ctx, s.User, s.Password, &clientv3.UserAddOptions{NoPassword: s.Password == ""})
			if rpctypes.Error(err) == rpctypes.ErrUserAlreadyExist && s.Password != "" {
				_, err = cli.UserChangePassword(ctx, s.User, s.Password)
			}
			return exists(err)
		}},
		{"grant " + s.User + " " + NodeRole, func() error { _, err := cli.UserGrantRole(ctx, s.User, NodeRole); return err }},
		{"enable auth", func() error {
			if st.Enabled {
				return nil
			}
			_, err := cli.AuthEnable(ctx)
			return err
		}},
	}
	for _, step := range steps {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(octx, etcdAuthStepTimeout)
		err := step.do()
		cancel()
		if err != nil {
			return fmt.Errorf("agent: etcd at %v: %s: %w", s.Endpoints, step.what, rpctypes.Error(err))
		}
	}
	return nil
}
