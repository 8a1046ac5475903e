package fence

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// memSessions is an in-memory lease store for tests of the real loop:
// grants and renewals succeed at once unless a hook says otherwise; the
// unfenced record is kept in memory.
type memSessions struct {
	mu       sync.Mutex
	next     lease.ID
	ttl      time.Duration
	unfenced *lease.Unfenced
	rev      int64
	held     []lease.DomainStatus
	revoked  []lease.ID
	claims   []string
	// Hooks, when set, replace the default behaviour.
	renew       func(ctx context.Context, id lease.ID) (time.Duration, error)
	claim       func(ctx context.Context, h lease.Holder, c lease.Claim) (lease.ClaimResult, error)
	getUnfenced func(ctx context.Context) error // runs before the read
	setUnfenced func(ctx context.Context) error
	heldErr     error
}

func (m *memSessions) Grant(context.Context, time.Duration) (lease.ID, time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	return m.next, m.ttl, nil
}
func (m *memSessions) Renew(ctx context.Context, id lease.ID) (time.Duration, error) {
	if m.renew != nil {
		return m.renew(ctx, id)
	}
	return m.ttl, nil
}
func (m *memSessions) Revoke(_ context.Context, id lease.ID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revoked = append(m.revoked, id)
	return nil
}
func (m *memSessions) Register(context.Context, lease.HostRecord) error { return nil }
func (m *memSessions) Claim(ctx context.Context, h lease.Holder, c lease.Claim) (lease.ClaimResult, error) {
	if m.claim != nil {
		return m.claim(ctx, h, c)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claims = append(m.claims, c.Name)
	return lease.ClaimResult{Written: 1}, nil
}
func (m *memSessions) Release(context.Context, lease.Holder, string, []string, *lease.Intent) (int, error) {
	return 0, nil
}
func (m *memSessions) DropMigration(context.Context, lease.Holder, string) error { return nil }
func (m *memSessions) Holdings(ctx context.Context, h lease.Holder) (lease.Holdings, error) {
	ds, err := m.Held(ctx, h)
	return lease.Holdings{Domains: ds}, err
}
func (m *memSessions) Held(context.Context, lease.Holder) ([]lease.DomainStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.held, m.heldErr
}
func (m *memSessions) SetUnfenced(ctx context.Context, _ string, u lease.Unfenced) error {
	if m.setUnfenced != nil {
		if err := m.setUnfenced(ctx); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unfenced = &u
	m.rev++
	return nil
}
func (m *memSessions) GetUnfenced(ctx context.Context, _ string) (lease.Unfenced, int64, bool, error) {
	if m.getUnfenced != nil {
		if err := m.getUnfenced(ctx); err != nil {
			return lease.Unfenced{}, 0, false, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.unfenced == nil {
		return lease.Unfenced{}, 0, false, nil
	}
	return *m.unfenced, m.rev, true, nil
}
func (m *memSessions) ClearUnfenced(_ context.Context, _ string, rev int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rev == m.rev {
		m.unfenced = nil
	}
	return nil
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestReconcileKillBesideLoop runs the real reconcile goroutine beside the
// real fence loop (renewing every few milliseconds) while the reconcile
// kills a guest another host holds: under -race, the kill's log line must
// not read the session the loop is rewriting.
func TestReconcileKillBesideLoop(t *testing.T) {
	cfg := Config{TTL: 3 * time.Second, RenewInterval: 5 * time.Millisecond, Margin: 2 * time.Second}
	s := &memSessions{ttl: cfg.TTL}
	s.claim = func(_ context.Context, h lease.Holder, c lease.Claim) (lease.ClaimResult, error) {
		return lease.ClaimResult{}, &lease.HeldError{Key: "/virtlease/domains/" + c.UUID, Want: c.Name, Held: lease.Record{Host: "host-b"}}
	}
	guests := &signalKills{killed: make(chan struct{}, 100)}
	doms := &fakeDomains{running: []Guest{{UUID: "u-1", Name: "vm-1", PID: 1001, XML: "u-1"}}}
	w := New(Options{Config: cfg, Host: "host-a", Version: "test", StateDir: t.TempDir(), BootID: "boot",
		Clock: wallClock{}, Sessions: s, Guests: guests, Log: discardLog(),
		Reconcile: &ReconcileOptions{Interval: time.Millisecond, Domains: doms, Parse: func(xml string) (lease.Claim, bool, error) {
			return lease.Claim{UUID: xml, Name: "vm-1"}, true, nil
		}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for range 5 {
		<-guests.killed
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// signalKills kills nothing for real; it signals each kill round.
type signalKills struct{ killed chan struct{} }

func (signalKills) Running(context.Context) ([]Guest, error) { return nil, nil }
func (s signalKills) Kill(_ context.Context, gs []Guest) []Guest {
	select {
	case s.killed <- struct{}{}:
	default:
	}
	return nil
}

// TestRunLeavesNoRenewalBehind: renewals still in flight when Run returns
// must end, not block forever on a channel nobody reads.
func TestRunLeavesNoRenewalBehind(t *testing.T) {
	cfg := Config{TTL: 10 * time.Second, RenewInterval: 5 * time.Millisecond, Margin: 3 * time.Second}
	s := &memSessions{ttl: cfg.TTL}
	hung := make(chan struct{}, 100)
	s.renew = func(ctx context.Context, _ lease.ID) (time.Duration, error) {
		hung <- struct{}{}
		<-ctx.Done() // a partition: every renewal hangs until Run ends
		return 0, ctx.Err()
	}
	w := New(Options{Config: cfg, Host: "host-a", Version: "test", StateDir: t.TempDir(), BootID: "boot",
		Clock: wallClock{}, Sessions: s, Guests: &fakeGuests{}, Log: discardLog()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for range maxRenewals {
		<-hung
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the renewal goroutines to end", 5*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "fence.(*Watchdog).Run.func")
	})
}
