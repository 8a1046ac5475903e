package lease

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EtcdConfig says how to reach etcd, with etcdctl's meaning for each field.
type EtcdConfig struct {
	Endpoints   []string      // e.g. http://127.0.0.1:2379; used as given, never synced from the member list
	CACert      string        // like etcdctl --cacert
	Cert        string        // like etcdctl --cert
	Key         string        // like etcdctl --key
	Username    string        // like etcdctl --user
	Password    string        // read from the config's password_file by the caller
	DialTimeout time.Duration // bounds each connection attempt; calls still need their own deadline
	// Logger receives the client's own diagnostics (TLS, balancer,
	// retries); nil is silent, as the hook must be (see Dial).
	Logger *zap.Logger
}

// TLSConfig is the TLS the client speaks to etcd: with the configured
// files, with the system roots for https:// or unixs:// endpoints without
// them (as etcdctl does), nil for none.
func (c EtcdConfig) TLSConfig() (*tls.Config, error) {
	switch {
	case c.CACert != "" || c.Cert != "":
		tlsInfo := transport.TLSInfo{TrustedCAFile: c.CACert, CertFile: c.Cert, KeyFile: c.Key}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS (cacert %q, cert %q, key %q): %w", c.CACert, c.Cert, c.Key, err)
		}
		return tc, nil
	case slices.ContainsFunc(c.Endpoints, func(e string) bool {
		return strings.HasPrefix(e, "https://") || strings.HasPrefix(e, "unixs://")
	}):
		return &tls.Config{MinVersion: tls.VersionTLS12}, nil
	}
	return nil, nil
}

// Dial returns an etcd client. Without a user name it does not wait for a
// connection: the first call, under its own deadline, does. With one it logs
// in first, which DialTimeout bounds.
//
// Outcomes: a client; ErrUnavailable (wrapped) when the login got no answer
// in time; any other error is a configuration problem (TLS files, a refused
// user name or password, bad endpoints).
//
// Two choices matter for safety:
//   - no endpoint sync (AutoSyncInterval 0): a host must talk to etcd only
//     through the endpoints it was given (a proxy, a firewall rule);
//   - a silent logger: the hook's stderr is what virsh shows an operator,
//     and the client's JSON logs would bury our one line.
func Dial(c EtcdConfig) (*clientv3.Client, error) {
	return DialContext(context.Background(), c)
}

// DialContext is Dial whose login (with a user name) also ends with ctx,
// as does every call of the client made without a context of its own: a
// hook's login must end by the hook's deadline, whatever dial_timeout
// says. Outcomes: as Dial.
func DialContext(ctx context.Context, c EtcdConfig) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Context:              ctx,
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Username:             c.Username,
		Password:             c.Password,
		Logger:               c.Logger,
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	tc, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	cfg.TLS = tc
	cli, err := clientv3.New(cfg)
	if err != nil {
		eps := strings.Join(c.Endpoints, ",")
		switch {
		case errors.Is(err, rpctypes.ErrAuthFailed):
			return nil, fmt.Errorf("etcd at %s refused user %q: wrong user name or password", eps, c.Username)
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
			status.Code(err) == codes.Unavailable, status.Code(err) == codes.DeadlineExceeded:
			return nil, fmt.Errorf("logging in to etcd as %q: %w (%s: %v)", c.Username, ErrUnavailable, eps, rpctypes.ErrorDesc(err))
		}
		return nil, fmt.Errorf("etcd client for %s: %w", eps, err)
	}
	return cli, nil
}
