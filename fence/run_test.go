package fence

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// stepClock is a boot clock the test moves by hand. Every After registers a
// waiter and hands it to the test: receiving one means Run's loop is about
// to sleep, so everything it did before sleeping (pets included) has
// happened.
type stepClock struct {
	mu      sync.Mutex
	now     time.Duration
	waiters chan waiter
}

type waiter struct {
	at time.Duration
	ch chan struct{}
}

func (c *stepClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	c.waiters <- waiter{at: c.Now() + d, ch: ch}
	return ch
}

func (c *stepClock) set(t time.Duration) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// partitionedSessions grants one session, then hangs every renewal until
// its deadline: a partition from t=0 on.
type partitionedSessions struct{ Sessions }

func (partitionedSessions) Grant(context.Context, time.Duration) (lease.ID, time.Duration, error) {
	return 1, 10 * time.Second, nil
}
func (partitionedSessions) Register(context.Context, lease.HostRecord) error { return nil }
func (partitionedSessions) Revoke(context.Context, lease.ID) error           { return nil }
func (partitionedSessions) GetUnfenced(context.Context, string) (lease.Unfenced, int64, bool, error) {
	return lease.Unfenced{}, 0, false, nil // no record: the first start of this boot finds none to delete
}
func (partitionedSessions) Renew(ctx context.Context, _ lease.ID) (time.Duration, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// oneGuest runs one guest until it is killed.
type oneGuest struct {
	mu     sync.Mutex
	killed bool
	clock  *stepClock
	at     time.Duration // when it was killed
}

func (g *oneGuest) Running(context.Context) ([]Guest, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.killed {
		return nil, nil
	}
	return []Guest{{UUID: "uuid-vm-1", Name: "vm-1", PID: 101}}, nil
}

func (g *oneGuest) Kill(context.Context, []Guest) []Guest {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.killed {
		g.killed, g.at = true, g.clock.Now()
	}
	return nil
}

type petLog struct {
	mu     sync.Mutex
	clock  *stepClock
	pets   []time.Duration
	opened time.Duration // -1: never
}

func (p *petLog) Open() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opened = p.clock.Now()
	return nil
}

func (p *petLog) Pet() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pets = append(p.pets, p.clock.Now())
	return nil
}
func (p *petLog) Close(bool) error { return nil }

// TestRunPetsDeviceThroughPartition runs the real loop (not the simulator)
// on a hand-moved clock through a partition with the default timings and
// checks what the fault campaign caught the loop doing wrong: the device
// must never go a device timeout without a pet while the watchdog is alive
// and the guests are dead. Two things make that hold: the loop wakes to pet
// at the last allowed moment before the fence, and pets right after the
// fence's kills rather than at its next wake-up.
func TestRunPetsDeviceThroughPartition(t *testing.T) {
	clock := &stepClock{waiters: make(chan waiter)}
	guest := &oneGuest{clock: clock}
	dev := &petLog{clock: clock, opened: -1}
	cfg := DefaultConfig()
	w := New(Options{Config: cfg, Host: "host-a", Version: "test", StateDir: t.TempDir(), BootID: "boot",
		Clock: clock, Sessions: partitionedSessions{}, Guests: guest, Device: dev,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	// Hand the clock to each sleep's wake-up time, ignoring wake-ups a
	// reply pre-empted, until 20 s have passed.
	var next waiter
	for clock.Now() < 20*time.Second {
		select {
		case next = <-clock.waiters:
		case <-time.After(10 * time.Second):
			t.Fatal("the loop neither slept nor returned")
		}
		// A renewal reply may wake the loop first (the grant does): give
		// it the chance, then move time on.
		select {
		case again := <-clock.waiters:
			next = again
		case <-time.After(20 * time.Millisecond):
		}
		clock.set(max(next.at, clock.Now()+time.Millisecond))
		close(next.ch)
	}
	cancel()
	go func() {
		for range clock.waiters {
		}
	}()
	<-done

	if !guest.killed {
		t.Fatal("the partitioned host never fenced")
	}
	// The grant was sent at 0: fence point ttl − margin = 7 s.
	if want := cfg.TTL - cfg.Margin; guest.at != want {
		t.Errorf("fenced at %v, want at the fence point %v", guest.at, want)
	}
	dev.mu.Lock()
	defer dev.mu.Unlock()
	if dev.opened != 0 {
		t.Errorf("device opened at %v, want at the grant's acknowledgement (0)", dev.opened)
	}
	prev := dev.opened // opening the device arms it
	var lastBeforeFence time.Duration
	for _, p := range dev.pets {
		if p-prev >= cfg.DeviceTimeout() {
			t.Errorf("device not petted from %v to %v (timeout %v): the host would be reset though its guests are dead", prev, p, cfg.DeviceTimeout())
		}
		if p < guest.at {
			lastBeforeFence = p
			if p >= 2*cfg.RenewInterval {
				t.Errorf("petted at %v, 2 × renew after the last acknowledged send: unsafe", p)
			}
		}
		prev = p
	}
	if end := clock.Now(); end-prev >= cfg.DeviceTimeout() {
		t.Errorf("no pet since %v (now %v)", prev, end)
	}
	// The last pet before the partition's fence comes just before
	// 2 × renew: the device then fires no earlier than needed.
	if lastBeforeFence < 2*cfg.RenewInterval-cfg.RenewInterval/5 {
		t.Errorf("last pet before the fence at %v, want within %v of %v", lastBeforeFence, cfg.RenewInterval/5, 2*cfg.RenewInterval)
	}
	if !slices.Contains(dev.pets, guest.at) {
		t.Errorf("no pet at the fence (%v) right after its kills; pets: %v", guest.at, dev.pets)
	}
}

// grantSessions grants every session with ttl and registers it.
type grantSessions struct {
	Sessions
	ttl time.Duration
}

func (g grantSessions) Grant(context.Context, time.Duration) (lease.ID, time.Duration, error) {
	return 1, g.ttl, nil
}
func (grantSessions) Register(context.Context, lease.HostRecord) error { return nil }

// A TTL above the one asked means etcd's election timeout is long for our
// timings: warned about, as the margin must exceed that timeout.
func TestNewSessionWarnsLongerTTL(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		warn bool
	}{
		{"as asked", 10 * time.Second, false},
		{"longer", 15 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs strings.Builder
			w := New(Options{Config: DefaultConfig(), Host: "host-a", StateDir: t.TempDir(), BootID: "boot",
				Sessions: grantSessions{ttl: tc.ttl}, Log: slog.New(slog.NewTextHandler(&logs, nil))})
			if _, _, err := w.newSession(context.Background(), 0); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), "longer session TTL"); got != tc.warn {
				t.Fatalf("warned %v, want %v: %s", got, tc.warn, logs.String())
			}
		})
	}
}

// failingSessions answers every renewal at once with an error: etcd
// unreachable.
type failingSessions struct{ Sessions }

func (failingSessions) Renew(context.Context, lease.ID) (time.Duration, error) {
	return 0, lease.ErrUnavailable
}
func (failingSessions) Grant(context.Context, time.Duration) (lease.ID, time.Duration, error) {
	return 0, 0, lease.ErrUnavailable
}
func (failingSessions) Revoke(context.Context, lease.ID) error { return lease.ErrUnavailable }
func (failingSessions) Held(context.Context, lease.Holder) ([]lease.DomainStatus, error) {
	return nil, lease.ErrUnavailable
}
func (failingSessions) SetUnfenced(context.Context, string, lease.Unfenced) error {
	return lease.ErrUnavailable
}
func (failingSessions) GetUnfenced(context.Context, string) (lease.Unfenced, int64, bool, error) {
	return lease.Unfenced{}, 0, false, lease.ErrUnavailable
}
func (failingSessions) ClearUnfenced(context.Context, string, int64) error {
	return lease.ErrUnavailable
}

// READY=1 waits until etcd verified a session: a session resumed from the
// file whose renewals fail is not one (systemd would let libvirtd start
// guests' autostart against a session that may be gone).
func TestRunReadyOnlyOnceVerified(t *testing.T) {
	clock := &stepClock{waiters: make(chan waiter)}
	dir := t.TempDir()
	if err := lease.WriteSession(filepath.Join(dir, "session"), lease.Session{Host: "host-a", Lease: 7, Boot: "boot",
		Deadline: int64(20 * time.Second), State: lease.SessionOK}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notes []string
	states := &stateMetrics{}
	w := New(Options{Config: DefaultConfig(), Host: "host-a", Version: "test", StateDir: dir, BootID: "boot",
		Clock: clock, Sessions: failingSessions{}, Guests: &oneGuest{clock: clock}, Metrics: states,
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Notify: func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for clock.Now() < 5*time.Second {
		var next waiter
		select {
		case next = <-clock.waiters:
		case <-time.After(10 * time.Second):
			t.Fatal("the loop neither slept nor returned")
		}
		select {
		case again := <-clock.waiters:
			next = again
		case <-time.After(20 * time.Millisecond):
		}
		clock.set(max(next.at, clock.Now()+time.Millisecond))
		close(next.ch)
	}
	cancel()
	go func() {
		for range clock.waiters {
		}
	}()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(notes, "READY=1") {
		t.Fatalf("READY=1 sent with every renewal of the resumed session failing: %v", notes)
	}
	if !slices.ContainsFunc(notes, func(s string) bool { return strings.HasPrefix(s, "EXTEND_TIMEOUT_USEC=") }) {
		t.Errorf("no EXTEND_TIMEOUT_USEC while enforcing the resumed session: %v", notes)
	}
	// systemctl status says which session and that etcd has not renewed it.
	if !slices.Contains(notes, "STATUS=session 0000000000000007 resumed, not yet renewed") {
		t.Errorf("no STATUS= for the resumed session: %v", notes)
	}
	if got := states.seen(); len(got) == 0 || got[0] != "resumed" || !slices.Contains(SessionStates(), got[len(got)-1]) {
		t.Errorf("session states exported: %v, want resumed first", got)
	}
}

// stateMetrics records the session states the loop exports.
type stateMetrics struct {
	noMetrics
	mu     sync.Mutex
	states []string
}

func (m *stateMetrics) SessionState(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.states) == 0 || m.states[len(m.states)-1] != s {
		m.states = append(m.states, s)
	}
}

func (m *stateMetrics) seen() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.states)
}

func TestStatusLine(t *testing.T) {
	held := &lease.Holder{}
	for _, tc := range []struct {
		name    string
		lease   lease.ID
		fencing bool
		active  *lease.Holder
		managed int64
		want    string
	}{
		{"no session", 0, false, nil, -1, "no session: waiting for etcd"},
		{"resumed", 0x694d, false, nil, -1, "session 000000000000694d resumed, not yet renewed"},
		{"held", 0x694d, false, held, 3, "session 000000000000694d held, 3 guests"},
		{"fencing", 0x694d, true, nil, 3, "fencing: session 000000000000694d lost, 3 guests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := New(Options{Config: DefaultConfig(), Host: "host-a"})
			w.lease, w.fencing = tc.lease, tc.fencing
			w.active.Store(tc.active)
			w.managed.Store(tc.managed)
			if got := w.statusLine(); got != tc.want {
				t.Errorf("statusLine() = %q, want %q", got, tc.want)
			}
		})
	}
}

// Only the newest STATUS= waits to be sent: a stuck sd_notify must not
// pile up stale ones.
func TestNotifierKeepsNewestStatus(t *testing.T) {
	n := notifier{wake: make(chan struct{}, 1)}
	n.notify("STATUS=a")
	n.notify("WATCHDOG=1")
	n.notify("STATUS=b")
	if want := []string{"WATCHDOG=1", "STATUS=b"}; !slices.Equal(n.pending, want) {
		t.Errorf("pending %v, want %v", n.pending, want)
	}
}
