package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtlease/virtlease/fence"
	"github.com/virtlease/virtlease/lease"
)

// lazyEtcd is the watchdog's etcd connection, made in the background: until
// it is up every call fails with lease.ErrUnavailable, as a call to an
// unreachable etcd does. So the watchdog enforces its session file from its
// first instant and never exits because etcd is unreachable (or refuses its
// login) at start; it keeps dialling until etcd answers.
//
// It is the watchdog's fence.Sessions and fence.HAStore.
type lazyEtcd struct {
	cur atomic.Pointer[lease.WithRenewer]

	mu     sync.Mutex
	closed bool
	close  []func()
}

// The watchdog's interfaces: a method added to them must be added here.
var (
	_ fence.Sessions = (*lazyEtcd)(nil)
	_ fence.HAStore  = (*lazyEtcd)(nil)
)

func (c *lazyEtcd) get() (lease.WithRenewer, error) {
	if s := c.cur.Load(); s != nil {
		return *s, nil
	}
	return lease.WithRenewer{}, fmt.Errorf("not connected to etcd yet: %w", lease.ErrUnavailable)
}

// connect dials etcd (logging in, with a user name) and then one
// connection per endpoint for renewals, retrying every retry until it
// succeeds or ctx ends; then it calls up (off the fence loop). Every failed
// attempt is logged: a refused login or a bad TLS file is a configuration
// problem an operator must fix, but exiting would leave a session from the
// session file without a fencer.
func (c *lazyEtcd) connect(ctx context.Context, ec lease.EtcdConfig, prefix string, retry time.Duration, log *slog.Logger, up func(*lease.Store)) {
	for attempt := 1; ; attempt++ {
		cli, err := lease.Dial(ec)
		if err == nil {
			store := lease.NewStore(cli, prefix)
			renewer, errs := lease.NewRenewer(ec, store)
			for _, err := range errs {
				log.Warn("renewals will share the main etcd connection for an endpoint that could not be dialled now", "err", err.Error())
			}
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				renewer.Close()
				cli.Close()
				return
			}
			c.close = append(c.close, renewer.Close, func() { cli.Close() })
			c.cur.Store(&lease.WithRenewer{Store: store, Renewer: renewer})
			c.mu.Unlock()
			if attempt > 1 {
				log.Info("connected to etcd", "attempts", attempt)
			}
			if up != nil {
				up(store)
			}
			return
		}
		if attempt == 1 || attempt%30 == 0 {
			log.Error("cannot connect to etcd; retrying (the session file's deadline is enforced meanwhile)", "err", err.Error(), "attempt", attempt)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// Close closes the connections made so far; a connect still under way
// closes its own.
func (c *lazyEtcd) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, f := range c.close {
		f()
	}
	c.close = nil
}

func (c *lazyEtcd) Grant(ctx context.Context, ttl time.Duration) (lease.ID, time.Duration, error) {
	s, err := c.get()
	if err != nil {
		return 0, 0, err
	}
	return s.Grant(ctx, ttl)
}

func (c *lazyEtcd) Renew(ctx context.Context, id lease.ID) (time.Duration, error) {
	s, err := c.get()
	if err != nil {
		return 0, err
	}
	return s.Renew(ctx, id)
}

func (c *lazyEtcd) Revoke(ctx context.Context, id lease.ID) error {
	s, err := c.get()
	if err != nil {
		return err
	}
	return s.Revoke(ctx, id)
}

func (c *lazyEtcd) Register(ctx context.Context, rec lease.HostRecord) error {
	s, err := c.get()
	if err != nil {
		return err
	}
	return s.Register(ctx, rec)
}

func (c *lazyEtcd) Claim(ctx context.Context, h lease.Holder, cl lease.Claim) (lease.ClaimResult, error) {
	s, err := c.get()
	if err != nil {
		return lease.ClaimResult{}, err
	}
	return s.Claim(ctx, h, cl)
}

func (c *lazyEtcd) Release(ctx context.Context, h lease.Holder, uuid string, disks []string, intent *lease.Intent) (int, error) {
	s, err := c.get()
	if err != nil {
		return 0, err
	}
	return s.Release(ctx, h, uuid, disks, intent)
}

func (c *lazyEtcd) ReleaseStale(ctx context.Context, h lease.Holder, d lease.DomainStatus, intent *lease.Intent) (int, error) {
	s, err := c.get()
	if err != nil {
		return 0, err
	}
	return s.ReleaseStale(ctx, h, d, intent)
}

func (c *lazyEtcd) Intent(ctx context.Context, uuid string) (*lease.Intent, error) {
	s, err := c.get()
	if err != nil {
		return nil, err
	}
	return s.Intent(ctx, uuid)
}

func (c *lazyEtcd) StopWhileAway(ctx context.Context, host, uuid string, unfencedRev int64) (time.Time, bool, error) {
	s, err := c.get()
	if err != nil {
		return time.Time{}, false, err
	}
	return s.StopWhileAway(ctx, host, uuid, unfencedRev)
}

func (c *lazyEtcd) DropMigration(ctx context.Context, h lease.Holder, uuid string) error {
	s, err := c.get()
	if err != nil {
		return err
	}
	return s.DropMigration(ctx, h, uuid)
}

func (c *lazyEtcd) Holdings(ctx context.Context, h lease.Holder) (lease.Holdings, error) {
	s, err := c.get()
	if err != nil {
		return lease.Holdings{}, err
	}
	return s.Holdings(ctx, h)
}

func (c *lazyEtcd) Held(ctx context.Context, h lease.Holder) ([]lease.DomainStatus, error) {
	s, err := c.get()
	if err != nil {
		return nil, err
	}
	return s.Held(ctx, h)
}

func (c *lazyEtcd) SetUnfenced(ctx context.Context, host string, u lease.Unfenced) error {
	s, err := c.get()
	if err != nil {
		return err
	}
	return s.SetUnfenced(ctx, host, u)
}

func (c *lazyEtcd) GetUnfenced(ctx context.Context, host string) (lease.Unfenced, int64, bool, error) {
	s, err := c.get()
	if err != nil {
		return lease.Unfenced{}, 0, false, err
	}
	return s.GetUnfenced(ctx, host)
}

func (c *lazyEtcd) ClearUnfenced(ctx context.Context, host string, rev int64) error {
	s, err := c.get()
	if err != nil {
		return err
	}
	return s.ClearUnfenced(ctx, host, rev)
}

func (c *lazyEtcd) HAView(ctx context.Context) (lease.HAView, error) {
	s, err := c.get()
	if err != nil {
		return lease.HAView{}, err
	}
	return s.HAView(ctx)
}

func (c *lazyEtcd) BeginRestart(ctx context.Context, h lease.Holder, r lease.Restartable, maxRestarts int, window time.Duration) (bool, bool, error) {
	s, err := c.get()
	if err != nil {
		return false, false, err
	}
	return s.BeginRestart(ctx, h, r, maxRestarts, window)
}

func (c *lazyEtcd) NoteRestartFailure(ctx context.Context, uuid, reason string) error {
	s, err := c.get()
	if err != nil {
		return err
	}
	return s.NoteRestartFailure(ctx, uuid, reason)
}

func (c *lazyEtcd) MarkCrashed(ctx context.Context, uuid, host string, stoppedAt time.Time) (bool, error) {
	s, err := c.get()
	if err != nil {
		return false, err
	}
	return s.MarkCrashed(ctx, uuid, host, stoppedAt)
}
