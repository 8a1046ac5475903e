package fence

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
func (m *memSessions) ReleaseStale(context.Context, lease.Holder, lease.DomainStatus, *lease.Intent) (int, error) {
	return 0, nil
}
func (m *memSessions) DropMigration(context.Context, lease.Holder, string) error { return nil }
func (m *memSessions) Intent(context.Context, string) (*lease.Intent, error)     { return nil, nil }
func (m *memSessions) StopWhileAway(context.Context, string, string, int64) (time.Time, bool, error) {
	return time.Time{}, false, nil
}
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

// blockedGuest is one guest that remembers when it was killed and whether
// a blocking call was still stuck then.
type blockedGuest struct {
	mu      sync.Mutex
	clock   *stepClock
	stuck   *atomic.Bool
	killed  bool
	at      time.Duration
	whileIn bool // killed while the blocking call was stuck
}

func (g *blockedGuest) Running(context.Context) ([]Guest, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.killed {
		return nil, nil
	}
	return []Guest{{UUID: "uuid-vm-1", Name: "vm-1", PID: 101}}, nil
}

func (g *blockedGuest) Kill(context.Context, []Guest) []Guest {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.killed {
		g.killed, g.at, g.whileIn = true, g.clock.Now(), g.stuck.Load()
	}
	return nil
}

// TestFenceLoopNeverWaits: whatever else hangs (etcd calls about our
// unfenced record, sd_notify, the journal), the loop fences at the fence
// point. Each hang here never ends until the test does, so a loop that
// waits on it never sleeps again.
func TestFenceLoopNeverWaits(t *testing.T) {
	cfg := DefaultConfig()
	stopped := lease.Session{Host: "host-a", Lease: 7, Boot: "boot", Deadline: int64(5 * time.Second), State: lease.SessionStopped}
	cases := []struct {
		name    string
		session *lease.Session // the session file left by the last stop
		first   error          // the first renewal's outcome
		hang    string         // what hangs: "record", "notify" or "log"
		fenceAt time.Duration
	}{
		// Back within the TTL: the renewal at 0 is acknowledged, and the
		// read of our unfenced record before deleting it hangs.
		{name: "clear-record", session: &stopped, hang: "record", fenceAt: cfg.TTL - cfg.Margin},
		// Back too late: a new session granted at 1 s, and recover's read
		// of the record hangs.
		{name: "recover", session: &stopped, first: lease.ErrNoSession, hang: "record", fenceAt: cfg.RenewInterval + cfg.TTL - cfg.Margin},
		{name: "sd-notify", hang: "notify", fenceAt: cfg.TTL - cfg.Margin},
		{name: "journal", hang: "log", fenceAt: cfg.TTL - cfg.Margin},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			var stuck atomic.Bool
			hang := func() {
				stuck.Store(true)
				<-release
				stuck.Store(false)
			}
			clock := &stepClock{waiters: make(chan waiter)}
			guest := &blockedGuest{clock: clock, stuck: &stuck}
			s := &memSessions{ttl: cfg.TTL, unfenced: &lease.Unfenced{Guests: []lease.UnfencedGuest{{UUID: "uuid-vm-1", Name: "vm-1"}}}, rev: 1}
			var renewals atomic.Int32
			s.renew = func(ctx context.Context, _ lease.ID) (time.Duration, error) {
				if renewals.Add(1) == 1 && tc.session != nil {
					return cfg.TTL, tc.first
				}
				<-ctx.Done() // partitioned from then on
				return 0, ctx.Err()
			}
			o := Options{Config: cfg, Host: "host-a", Version: "test", StateDir: t.TempDir(), BootID: "boot",
				Clock: clock, Sessions: s, Guests: guest, Log: discardLog()}
			switch tc.hang {
			case "record":
				s.getUnfenced = func(context.Context) error { hang(); return errHang }
			case "notify":
				o.Notify = func(string) { hang() }
			case "log":
				o.Log = slog.New(NewLogQueue(slog.NewTextHandler(&gatedWriter{gate: release}, nil), 4))
				stuck.Store(true)
			}
			if tc.session != nil {
				if err := lease.WriteSession(filepath.Join(o.StateDir, "session"), *tc.session); err != nil {
					t.Fatal(err)
				}
			}
			driveLoop(t, clock, New(o), 10*time.Second, func() { close(release) })
			if !guest.killed {
				t.Fatal("never fenced")
			}
			if guest.at != tc.fenceAt || !guest.whileIn {
				t.Errorf("guest killed at %v (the fence point is %v), while the %s call hung: %v; want at the fence point while it hung",
					guest.at, tc.fenceAt, tc.hang, guest.whileIn)
			}
		})
	}
}

// driveLoop runs w on clock, moving the clock to each sleep's wake-up
// time, until until; then it calls unblock (which ends whatever the test
// made hang) and stops w. A loop that does not sleep again within 10 s is
// stuck: the test fails.
func driveLoop(t *testing.T, clock *stepClock, w *Watchdog, until time.Duration, unblock func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		unblock()
		cancel()
		go func() {
			for range clock.waiters {
			}
		}()
		<-done
	}()
	var next waiter
	for clock.Now() < until {
		select {
		case next = <-clock.waiters:
		case err := <-done:
			t.Fatalf("Run returned: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("at %v the loop neither slept nor returned: it waits on something", clock.Now())
		}
		// A reply may wake the loop first: give it the chance.
		select {
		case again := <-clock.waiters:
			next = again
		case <-time.After(20 * time.Millisecond):
		}
		clock.set(max(next.at, clock.Now()+time.Millisecond))
		close(next.ch)
	}
}

var errHang = errors.New("hung")

// listGuests is a fixed set of guests; Kill ends all but the unkillable.
type listGuests struct {
	mu         sync.Mutex
	running    []Guest
	err        error
	unkillable map[string]bool
	killed     []string
}

func (l *listGuests) Running(context.Context) ([]Guest, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.running), l.err
}

func (l *listGuests) Kill(_ context.Context, gs []Guest) (survivors []Guest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range gs {
		if l.unkillable[g.Name] {
			survivors = append(survivors, g)
			continue
		}
		l.killed = append(l.killed, g.Name)
		l.running = slices.DeleteFunc(l.running, func(r Guest) bool { return r.UUID == g.UUID })
	}
	return survivors
}

// TestRecoverSettlesEveryGuest: after a clean stop whose session expired,
// the returning watchdog re-claims the guests its unfenced record lists and
// kills the others; a guest it cannot settle (the guests cannot be listed,
// or one survives SIGKILL) is never left for the reconcile to adopt: the
// host fences.
func TestRecoverSettlesEveryGuest(t *testing.T) {
	vm1 := Guest{UUID: "uuid-vm-1", Name: "vm-1", PID: 101}
	vm2 := Guest{UUID: "uuid-vm-2", Name: "vm-2", PID: 102}
	cases := []struct {
		name       string
		guests     *listGuests
		wantFence  bool
		wantKilled []string
		wantRecord bool // the unfenced record is still there
	}{
		{name: "listed-kept-other-killed", guests: &listGuests{running: []Guest{vm1, vm2}},
			wantKilled: []string{"vm-2"}},
		{name: "cannot-list", guests: &listGuests{running: []Guest{vm1, vm2}, err: errors.New("proc: too many open files")},
			wantFence: true, wantRecord: true},
		{name: "survivor", guests: &listGuests{running: []Guest{vm1, vm2}, unkillable: map[string]bool{"vm-2": true}},
			wantFence: true, wantRecord: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &memSessions{ttl: 10 * time.Second, rev: 1,
				unfenced: &lease.Unfenced{Guests: []lease.UnfencedGuest{{UUID: vm1.UUID, Name: vm1.Name, Disks: []string{"disk-1"}}}}}
			w := New(Options{Config: DefaultConfig(), Host: "host-a", Version: "test", StateDir: t.TempDir(), BootID: "boot",
				Clock: &stepClock{}, Sessions: s, Guests: tc.guests, Log: discardLog()})
			w.launch = func(renewal) {}
			w.lease, w.resumed = 7, lease.SessionStopped // as resume leaves a clean stop
			ctx := context.Background()
			w.handle(ctx, renewal{id: 7, err: lease.ErrNoSession})
			w.handle(ctx, renewal{id: 8, fresh: true, ttl: 10 * time.Second})
			if w.fencing != tc.wantFence || (w.active.Load() == nil) != tc.wantFence {
				t.Errorf("fencing %v, session ok %v; want fencing %v", w.fencing, w.active.Load() != nil, tc.wantFence)
			}
			if tc.wantFence && slices.ContainsFunc(tc.guests.running, func(g Guest) bool { return g.Name == "vm-2" && !tc.guests.unkillable["vm-2"] }) {
				t.Errorf("vm-2, not kept safe, still runs: %v", tc.guests.running)
			}
			if !tc.wantFence && !slices.Equal(tc.guests.killed, tc.wantKilled) {
				t.Errorf("killed %v, want %v", tc.guests.killed, tc.wantKilled)
			}
			if (s.unfenced != nil) != tc.wantRecord {
				t.Errorf("unfenced record left: %v, want %v", s.unfenced != nil, tc.wantRecord)
			}
		})
	}
}

// closeLog is a device that records how it was closed.
type closeLog struct{ closed, disarmed bool }

func (*closeLog) Open() error { return nil }
func (*closeLog) Pet() error  { return nil }
func (c *closeLog) Close(disarm bool) error {
	c.closed, c.disarmed = true, disarm
	return nil
}

// TestStop: SIGTERM never leaves a guest that may run here both unfenced
// and unrecorded, and never loses what the record protects.
func TestStop(t *testing.T) {
	vm1 := Guest{UUID: "uuid-vm-1", Name: "vm-1", PID: 101}
	vm2 := Guest{UUID: "uuid-vm-2", Name: "vm-2", PID: 102}
	listed := &lease.Unfenced{Guests: []lease.UnfencedGuest{{UUID: vm1.UUID, Name: vm1.Name, Disks: []string{"disk-1"}}}}
	held := []lease.DomainStatus{{Record: lease.Record{UUID: vm1.UUID, Name: vm1.Name}, Disks: []string{"disk-1"}}}
	cases := []struct {
		name string
		// the watchdog's state at SIGTERM: "held" (lease 7, ok),
		// "resumed" (a clean stop's session resumed, not confirmed),
		// "recovering" (that session found expired, no new one yet)
		state        string
		guests       []Guest
		held         []lease.DomainStatus
		record       *lease.Unfenced // our unfenced record before the stop
		wantRevoked  bool
		wantRecord   []lease.UnfencedGuest
		wantKilled   []string
		wantDisarmed bool
	}{
		{name: "no-guests", state: "held", wantRevoked: true, wantDisarmed: true},
		// A record left over from a delete that kept failing lists no
		// guest that runs or is held: it goes with the session.
		{name: "no-guests-stale-record", state: "held", record: listed, wantRevoked: true, wantDisarmed: true},
		// The fence sees no QEMU (a blind scan) but the session holds
		// vm-1's key: not revoked, recorded with its disks.
		{name: "blind-key-held", state: "held", held: held, wantRecord: listed.Guests},
		// The resumed lease has expired (its keys are gone): the disks the
		// last stop recorded stay in the record.
		{name: "resumed-expired", state: "resumed", guests: []Guest{vm1}, record: listed, wantRecord: listed.Guests},
		// Stopped again before recover settled the guests: vm-2, which
		// nothing kept safe, is killed; vm-1 stays, kept by the record;
		// the device keeps counting.
		{name: "recovering", state: "recovering", guests: []Guest{vm1, vm2}, record: listed,
			wantRecord: listed.Guests, wantKilled: []string{"vm-2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := &memSessions{ttl: 10 * time.Second, held: tc.held, unfenced: tc.record, rev: 1}
			var fileAtWrite lease.SessionState
			s.setUnfenced = func(context.Context) error {
				f, _ := lease.ReadSession(filepath.Join(dir, "session"))
				fileAtWrite = f.State
				return nil
			}
			guests := &listGuests{running: slices.Clone(tc.guests)}
			dev := &closeLog{}
			w := New(Options{Config: DefaultConfig(), Host: "host-a", Version: "test", StateDir: dir, BootID: "boot",
				Clock: &stepClock{}, Sessions: s, Guests: guests, Device: dev, Log: discardLog()})
			switch tc.state {
			case "held":
				w.lease, w.deadline = 7, Deadline{TTL: 10 * time.Second}
			case "resumed":
				lease.WriteSession(filepath.Join(dir, "session"), lease.Session{Host: "host-a", Lease: 7, Boot: "boot", State: lease.SessionStopped})
				w.resume()
			case "recovering":
				w.recovering = true
			}
			w.stop()
			if got := slices.Contains(s.revoked, 7); got != tc.wantRevoked {
				t.Errorf("revoked: %v, want %v", got, tc.wantRevoked)
			}
			var got []lease.UnfencedGuest
			if s.unfenced != nil {
				got = s.unfenced.Guests
			}
			if !slices.EqualFunc(got, tc.wantRecord, func(a, b lease.UnfencedGuest) bool {
				return a.UUID == b.UUID && slices.Equal(a.Disks, b.Disks)
			}) {
				t.Errorf("unfenced record %+v, want %+v", got, tc.wantRecord)
			}
			if tc.state == "held" && tc.wantRecord != nil && fileAtWrite != lease.SessionOrphaned {
				// A death before the record is durable must leave a
				// session that the restart fences at its old deadline.
				t.Errorf("the session file said %q while the unfenced record was written, want orphaned", fileAtWrite)
			}
			if !slices.Equal(guests.killed, tc.wantKilled) {
				t.Errorf("killed %v, want %v", guests.killed, tc.wantKilled)
			}
			if !dev.closed || dev.disarmed != tc.wantDisarmed {
				t.Errorf("device closed %v, disarmed %v; want disarmed %v", dev.closed, dev.disarmed, tc.wantDisarmed)
			}
		})
	}
}

// TestUnfencedRecordDeleteRetried: back within the TTL, our unfenced
// record goes; a delete that fails is tried again at the next renewal, not
// forgotten (the record would keep its guests from every other host, and
// from HA restart, for good).
func TestUnfencedRecordDeleteRetried(t *testing.T) {
	dir := t.TempDir()
	s := &memSessions{ttl: 10 * time.Second, rev: 1,
		unfenced: &lease.Unfenced{Guests: []lease.UnfencedGuest{{UUID: "uuid-vm-1", Name: "vm-1"}}}}
	var reads atomic.Int32
	s.getUnfenced = func(context.Context) error {
		if reads.Add(1) == 1 {
			return lease.ErrUnavailable
		}
		return nil
	}
	lease.WriteSession(filepath.Join(dir, "session"), lease.Session{Host: "host-a", Lease: 7, Boot: "boot",
		Deadline: int64(5 * time.Second), State: lease.SessionStopped})
	w := New(Options{Config: DefaultConfig(), Host: "host-a", Version: "test", StateDir: dir, BootID: "boot",
		Clock: &stepClock{}, Sessions: s, Guests: &listGuests{running: []Guest{{UUID: "uuid-vm-1", Name: "vm-1", PID: 101}}}, Log: discardLog()})
	w.launch = func(renewal) {}
	w.resume()
	ctx := context.Background()
	w.renewing = 2
	w.handle(ctx, renewal{id: 7, ttl: 10 * time.Second})
	if s.unfenced == nil {
		t.Fatal("the record went although reading it failed")
	}
	w.handle(ctx, renewal{id: 7, sent: time.Second, ttl: 10 * time.Second})
	if s.unfenced != nil {
		t.Errorf("the record is still there after the next renewal: %+v", s.unfenced)
	}
}

// TestSessionFileCarriesFencePoint: the session file names the watchdog's
// own fence point, so a hook whose config has another margin still refuses
// from the moment this watchdog begins to kill.
func TestSessionFileCarriesFencePoint(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	w := New(Options{Config: cfg, Host: "host-a", Version: "test", StateDir: dir, BootID: "boot",
		Clock: &stepClock{}, Sessions: &memSessions{ttl: cfg.TTL}, Guests: &listGuests{}, Log: discardLog()})
	w.lease, w.deadline = 7, Deadline{Sent: 2 * time.Second, TTL: cfg.TTL}
	w.writeSession(lease.SessionOK)
	f, err := lease.ReadSession(filepath.Join(dir, "session"))
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(2*time.Second + cfg.TTL - cfg.Margin); f.FenceAt != want {
		t.Fatalf("fence_at %v, want %v", time.Duration(f.FenceAt), time.Duration(want))
	}
}
