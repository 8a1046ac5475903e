package fence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// Clock is the boot clock (CLOCK_BOOTTIME in production): monotonic, and
// counting while the machine is suspended, as etcd's clock does.
type Clock interface {
	Now() time.Duration
	// After fires once d has passed on this clock.
	After(d time.Duration) <-chan struct{}
}

// Sessions is the part of the lease store the watchdog uses.
type Sessions interface {
	Grant(ctx context.Context, ttl time.Duration) (lease.ID, time.Duration, error)
	Renew(ctx context.Context, id lease.ID) (time.Duration, error)
	Revoke(ctx context.Context, id lease.ID) error
	Register(ctx context.Context, rec lease.HostRecord) error
	Claim(ctx context.Context, h lease.Holder, c lease.Claim) (lease.ClaimResult, error)
	Release(ctx context.Context, h lease.Holder, uuid string, disks []string, intent *lease.Intent) (int, error)
	ReleaseStale(ctx context.Context, h lease.Holder, d lease.DomainStatus) (int, error)
	DropMigration(ctx context.Context, h lease.Holder, uuid string) error
	Holdings(ctx context.Context, h lease.Holder) (lease.Holdings, error)
	Held(ctx context.Context, h lease.Holder) ([]lease.DomainStatus, error)
	SetUnfenced(ctx context.Context, host string, u lease.Unfenced) error
	GetUnfenced(ctx context.Context, host string) (lease.Unfenced, int64, bool, error)
	ClearUnfenced(ctx context.Context, host string, rev int64) error
}

// Guests finds and kills this host's managed guests. Fencing goes through
// it, so it must not depend on libvirtd answering.
type Guests interface {
	Running(ctx context.Context) ([]Guest, error)
	// Kill ends each guest at once and returns those still alive.
	Kill(ctx context.Context, gs []Guest) (survivors []Guest)
}

// Metrics receives what the watchdog does, for Prometheus. Every method
// must return at once.
type Metrics interface {
	SessionLeft(d time.Duration)      // time until etcd may expire the session (≤ 0: none)
	Renewed(latency time.Duration)    // an acknowledged renewal and its round trip
	RenewFailed()                     // a renewal that failed or timed out
	Fenced()                          // a fence began
	Killed(why string, survivors int) // a round of kills (fence, reconcile, recover)
	Reconciled(action string)         // "adopt", "kill", "release"
	GuestsManaged(n int)              // running guests last seen
	HARestarted(ok bool)              // an HA restart attempt here
}

type noMetrics struct{}

func (noMetrics) SessionLeft(time.Duration) {}
func (noMetrics) Renewed(time.Duration)     {}
func (noMetrics) RenewFailed()              {}
func (noMetrics) Fenced()                   {}
func (noMetrics) Killed(string, int)        {}
func (noMetrics) Reconciled(string)         {}
func (noMetrics) GuestsManaged(int)         {}
func (noMetrics) HARestarted(bool)          {}

// Options wires a Watchdog.
type Options struct {
	Config   Config
	Host     string
	Version  string
	StateDir string // /run/virtlease: session file and markers
	BootID   string
	Clock    Clock
	Sessions Sessions
	Guests   Guests
	// Prefix is the etcd key prefix ("" = the default), to recognise keys
	// named in refusals.
	Prefix string
	Log    *slog.Logger
	// Device, when set, is the hardware watchdog (already opened with
	// Config.DeviceTimeout).
	Device Device
	// Metrics, when set, is told what happens.
	Metrics Metrics
	// HA, when set, runs the HA restarter beside the fence loop.
	HA *HAOptions
	// Reconcile, when set, runs the reconcile loop beside the fence loop.
	Reconcile *ReconcileOptions
	// Notify sends a systemd notification ("READY=1", "WATCHDOG=1",
	// "STOPPING=1"); nil means none.
	Notify func(state string)
}

// Watchdog holds one host's session and fences. Create it with New; Run it
// once.
type Watchdog struct {
	o        Options
	lease    lease.ID
	deadline Deadline
	fencing  bool
	// renewing counts the renewals under way. A new one is sent every
	// renew interval even while others hang (up to maxRenewals): a request
	// stuck on a stopped etcd member, or forwarded to a stopped leader, must
	// not keep the next one, which the client sends to another member, from
	// going out (a false fence in the fault campaign, docs/reliability.md).
	// The cap and each request's deadline bound the load on a slow etcd.
	renewing int
	// granting: a new session is being granted; only one at a time.
	granting  bool
	nextRenew time.Duration
	results   chan renewal
	// launch sends a renewal request off; its outcome comes back through
	// handle. Run launches goroutines; the scenario simulator schedules
	// replies on its fake clock.
	launch func(renewal)
	// started is this process's start, written in every host record so a
	// record of our own (a grant whose reply was lost) is recognised.
	started time.Time
	// resumed is the state of the session file this process resumed, until
	// the first renewal settles whether that session is alive.
	resumed lease.SessionState
	// recovering: the resumed session was left by a clean stop and is dead;
	// the guests listed in our unfenced record are re-claimed under the
	// next session, the others killed.
	recovering bool
	keys       lease.Keys
	// guestsGone: while fencing, the last kill round found no guest left.
	guestsGone bool
	// fencedAt is when the current fence began (boot clock).
	fencedAt time.Duration
	// active is the holder while the session is ok (nil otherwise), for
	// the reconciler's goroutine.
	active atomic.Pointer[lease.Holder]
}

// renewal is one request to etcd and, once answered, its outcome.
type renewal struct {
	id    lease.ID      // the lease renewed; for a fresh session, the one granted
	fresh bool          // grant and register a new session (dropping id, if any)
	sent  time.Duration // boot-clock time the request was sent: what the deadline is dated from
	ttl   time.Duration // TTL etcd returned
	err   error
}

// maxRenewals is how many renewals may be in flight at once: each times out
// after two renew intervals and one is sent per interval.
const maxRenewals = 3

// ErrFatal wraps the reasons the watchdog stops for good (exit 2), such as a
// second machine registered under this host's name.
var ErrFatal = errors.New("fence: cannot run")

// New returns a watchdog; it does nothing until Run.
func New(o Options) *Watchdog {
	if o.Notify == nil {
		o.Notify = func(string) {}
	}
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
	return &Watchdog{o: o, results: make(chan renewal, 1), started: time.Now().UTC().Truncate(time.Second), keys: lease.NewKeys(o.Prefix)}
}

func (w *Watchdog) sessionPath() string { return filepath.Join(w.o.StateDir, "session") }

// Run holds the session until ctx ends. Outcomes on return:
//   - ctx ended with no guest running: the session is revoked (its keys
//     vanish at once) and the session file removed;
//   - ctx ended with guests running: the session is kept for a restart to
//     resume, the session file is marked stopped so that no new guest
//     starts meanwhile;
//   - an error wrapping ErrFatal: this host cannot hold a session at all.
func (w *Watchdog) Run(ctx context.Context) error {
	w.resume()
	w.launch = func(req renewal) {
		go func() { w.results <- w.renew(ctx, req) }()
	}
	if w.o.Reconcile != nil {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go w.reconcile(rctx, *w.o.Reconcile)
	}
	if w.o.HA != nil {
		hctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go w.restarter(hctx, *w.o.HA)
	}
	ready := false
	for {
		now := w.o.Clock.Now()
		w.tick(ctx, now)
		// The loop is alive: systemd's watchdog is about this process, not
		// about etcd (fencing is our own business).
		w.o.Notify("WATCHDOG=1")
		// Pet right after tick, before sleeping: a fence that has just
		// killed the last guest must pet now, not at the next wake-up,
		// which may come after the device has fired.
		w.pet()
		if w.lease != 0 && !w.fencing {
			w.o.Metrics.SessionLeft(w.deadline.At() - w.o.Clock.Now())
		} else {
			w.o.Metrics.SessionLeft(0)
		}
		select {
		case <-ctx.Done():
			return w.stop()
		case <-w.o.Clock.After(w.wake(w.o.Clock.Now())):
		case r := <-w.results:
			if err := w.handle(ctx, r); err != nil {
				return err
			}
			if !ready && w.lease != 0 && !w.fencing {
				ready = true
				w.o.Notify("READY=1")
			}
		}
	}
}

// pet pets the hardware watchdog while that is safe: the last
// acknowledged renewal was sent less than 2 × renew_interval ago, or we are
// fencing and no guest is left. Then a dead or stuck daemon resets the
// machine ≥ 1 s before etcd can expire the session, a fence has
// margin − 1 s to finish before the device fires, and a partitioned host
// whose guests are dead stays up.
func (w *Watchdog) pet() {
	if w.o.Device == nil {
		return
	}
	now := w.o.Clock.Now()
	ok := w.lease != 0 && !w.fencing && w.resumed == "" && now-w.deadline.Sent < 2*w.o.Config.RenewInterval
	if w.fencing && w.guestsGone {
		ok = true
	}
	if !ok {
		return
	}
	if err := w.o.Device.Pet(); err != nil {
		w.o.Log.Error("cannot pet the hardware watchdog", "err", err.Error())
	}
}

// tick does what is due at boot-clock time now: fence once the fence point
// has passed with no newer acknowledgement, keep killing while fencing, and
// launch the next renewal (or new session) when one is due.
func (w *Watchdog) tick(ctx context.Context, now time.Duration) {
	// A session resumed from a clean stop is not fenced at its old
	// deadline: our unfenced record keeps its guests from every other host
	// until the first renewal tells whether the session is still alive.
	if w.lease != 0 && !w.fencing && w.resumed != lease.SessionStopped && now >= w.deadline.FenceAt(w.o.Config.Margin) {
		w.fence(ctx, fmt.Sprintf("no renewal of lease %s acknowledged in time", w.lease))
	}
	if w.fencing {
		// Sticky: keep killing whatever runs until a new session exists.
		w.killAll(ctx, "fencing")
	}
	// After a fence, a new session (which revokes the old lease, freeing
	// its keys) waits until a kill round found no guest left and one
	// margin has passed: a start whose hook claimed just before the fence
	// point has had its QEMU spawned, and killed, by then (found by the
	// model, docs/model: code-prepare-norecheck).
	holdBack := w.fencing && (!w.guestsGone || now-w.fencedAt < w.o.Config.Margin)
	if holdBack && now >= w.nextRenew {
		w.nextRenew = now + w.o.Config.RenewInterval // the next kill round, then look again
	}
	if now < w.nextRenew || !w.canLaunch() {
		return
	}
	if w.lease == 0 || w.fencing {
		w.granting = true
	} else {
		w.renewing++
	}
	w.nextRenew = now + w.o.Config.RenewInterval
	w.launch(renewal{id: w.lease, fresh: w.granting, sent: now})
}

// canLaunch reports whether a request may go out now that one is due: a
// renewal while fewer than maxRenewals are in flight; a new session (none
// yet, or after a fence) only once no renewal of the old one can still
// land, and one grant at a time.
func (w *Watchdog) canLaunch() bool {
	switch {
	case w.granting:
		return false
	case w.lease == 0 || w.fencing:
		return w.renewing == 0
	default:
		return w.renewing < maxRenewals
	}
}

// wake is how long the loop may sleep after tick at now: until the next
// renewal, the fence point or the last moment the device may be petted,
// whichever is first (never longer than one renew interval, so a suspend is
// noticed).
func (w *Watchdog) wake(now time.Duration) time.Duration {
	wait := w.nextRenew - now
	if !w.canLaunch() {
		// A reply wakes the loop; meanwhile only the fence point (or
		// another round of killing while fencing) is due.
		wait = w.o.Config.RenewInterval
	}
	if w.lease != 0 && !w.fencing && w.resumed != lease.SessionStopped {
		wait = min(wait, w.deadline.FenceAt(w.o.Config.Margin)-now)
	}
	if w.o.Device != nil && w.lease != 0 && !w.fencing {
		// pet accepts until 2 × renew after the last acknowledged send;
		// wake just before that so the device's count starts as late as
		// the safety argument allows. Otherwise the last pet may be a whole
		// interval earlier and the device fire before a fence that found
		// the guests dead can pet it (found by the fault campaign).
		if last := w.deadline.Sent + 2*w.o.Config.RenewInterval - w.o.Config.RenewInterval/10; last > now {
			wait = min(wait, last-now)
		}
	}
	return max(wait, 0)
}

// resume adopts the session named in the session file when it is from this
// boot and this host, so that a restart within the TTL keeps the lease and
// its keys (no false fence on upgrade or crash-restart). Its deadline binds
// us from the start: a lease we cannot renew in time is fenced as usual.
func (w *Watchdog) resume() {
	s, err := lease.ReadSession(w.sessionPath())
	if err != nil || s.Boot != w.o.BootID || s.Host != w.o.Host || s.Lease == 0 {
		return
	}
	w.lease = s.Lease
	// The file stores the deadline itself; keep it as a zero-TTL renewal
	// sent at that moment.
	w.deadline = Deadline{Sent: time.Duration(s.Deadline)}
	w.fencing = s.State == lease.SessionFencing
	w.resumed = s.State
	w.o.Log.Info("resuming session from the session file", "lease", s.Lease.String(), "state", string(s.State),
		"deadline_in", (time.Duration(s.Deadline) - w.o.Clock.Now()).String())
}

// renew performs one renewal request: renew the current lease, or, when
// there is none (or after a fence), get a new session. It blocks for at
// most two renew intervals.
func (w *Watchdog) renew(ctx context.Context, req renewal) renewal {
	ctx, cancel := context.WithTimeout(ctx, 2*w.o.Config.RenewInterval)
	defer cancel()
	if req.fresh {
		req.id, req.ttl, req.err = w.newSession(ctx, req.id)
	} else {
		req.ttl, req.err = w.o.Sessions.Renew(ctx, req.id)
	}
	return req
}

// newSession drops the old lease (after a fence its guests are dead, so its
// keys may go) and grants and registers a new one, dated from the send time
// of the grant.
func (w *Watchdog) newSession(ctx context.Context, old lease.ID) (lease.ID, time.Duration, error) {
	if old != 0 {
		if err := w.o.Sessions.Revoke(ctx, old); err != nil {
			return 0, 0, err
		}
	}
	id, ttl, err := w.o.Sessions.Grant(ctx, w.o.Config.TTL)
	if err != nil {
		return 0, 0, err
	}
	rec := lease.HostRecord{Host: w.o.Host, Lease: id, PID: os.Getpid(), Started: w.started, Version: w.o.Version}
	err = w.o.Sessions.Register(ctx, rec)
	var taken *lease.HostTakenError
	if errors.As(err, &taken) && taken.Holder.PID == rec.PID && taken.Holder.Started.Equal(rec.Started) {
		// Our own earlier attempt, whose reply was lost: not a second
		// machine. Drop that lease and register this one.
		w.o.Log.Info("dropping a session this process was granted but never heard back about", "lease", taken.Holder.Lease.String())
		if err = w.o.Sessions.Revoke(ctx, taken.Holder.Lease); err == nil {
			err = w.o.Sessions.Register(ctx, rec)
		}
	}
	if err != nil {
		w.o.Sessions.Revoke(ctx, id)
		return 0, 0, err
	}
	return id, ttl, nil
}

func (w *Watchdog) handle(ctx context.Context, r renewal) error {
	if r.fresh {
		w.granting = false
	} else {
		w.renewing--
	}
	switch {
	case errors.Is(r.err, lease.ErrHostTaken):
		return fmt.Errorf("%w: %v", ErrFatal, r.err)
	case !r.fresh && r.id != w.lease:
		// A late reply about a lease we no longer hold (replaced after a
		// fence): it says nothing about the current session.
		return nil
	case errors.Is(r.err, lease.ErrNoSession) && !r.fresh && r.id == w.lease && w.resumed == lease.SessionStopped:
		// We stopped cleanly and were away longer than the TTL: our
		// unfenced record kept the guests it lists from every other host.
		w.o.Log.Warn("the session left at the last stop has expired: re-claiming the guests our unfenced record lists, killing any other",
			"lease", w.lease.String())
		w.lease, w.recovering, w.resumed = 0, true, ""
		return nil
	case errors.Is(r.err, lease.ErrNoSession) && !r.fresh && r.id == w.lease && !w.fencing:
		// etcd says the lease is gone: our keys are gone, someone may
		// start our guests now. Do not wait for the deadline.
		w.fence(ctx, "etcd reports lease "+w.lease.String()+" gone")
		return nil
	case r.err != nil && r.fresh:
		w.o.Log.Warn("no new session yet", "err", r.err.Error())
		return nil
	case r.err != nil:
		w.o.Metrics.RenewFailed()
		w.o.Log.Warn("renewal failed", "lease", r.id.String(), "err", r.err.Error(),
			"fence_in", (w.deadline.FenceAt(w.o.Config.Margin) - w.o.Clock.Now()).String())
		return nil
	}
	d := Deadline{Sent: r.sent, TTL: r.ttl}
	w.o.Metrics.Renewed(w.o.Clock.Now() - r.sent)
	if !r.fresh && w.resumed != "" {
		// The resumed session is alive: we are back in time, nothing ran
		// unprotected; the unfenced record (if we left one) goes.
		w.resumed = ""
		w.clearUnfenced(ctx)
	}
	if r.fresh {
		// A new session: fencing ends, the old deadline no longer binds.
		old := w.lease
		w.lease, w.deadline, w.fencing = r.id, d, false
		w.o.Log.Info("session held", "lease", r.id.String(), "ttl", r.ttl.String(), "previous", old.String())
	} else {
		w.deadline = w.deadline.Later(d)
	}
	if w.fencing {
		return nil
	}
	if r.fresh && w.recovering {
		w.recover(ctx)
	}
	if r.fresh && w.resumed != "" {
		// A fresh session after a resumed one died (crash, or fencing):
		// any leftover unfenced record of ours is void, its guests dead.
		w.resumed = ""
		w.clearUnfenced(ctx)
	}
	w.active.Store(&lease.Holder{Host: w.o.Host, Lease: w.lease})
	return w.writeSession(lease.SessionOK)
}

// recover runs once the first session after an expired clean stop exists:
// each running guest our unfenced record lists is claimed again (it was
// kept from every other host, so nobody can hold it), any other is killed
// (nobody kept it safe: someone else may run it by now). Only then does
// the record go, so the listed guests are never free.
func (w *Watchdog) recover(ctx context.Context) {
	w.recovering = false
	ctx, cancel := context.WithTimeout(ctx, 2*w.o.Config.RenewInterval)
	defer cancel()
	u, rev, ok, err := w.o.Sessions.GetUnfenced(ctx, w.o.Host)
	if err != nil {
		// Cannot tell which guests were kept safe: kill them all.
		w.o.Log.Error("cannot read our unfenced record; killing every guest", "err", err.Error())
		w.killAll(ctx, "recover")
		return
	}
	listed := map[string]lease.UnfencedGuest{}
	for _, g := range u.Guests {
		listed[g.UUID] = g
	}
	gs, err := w.o.Guests.Running(ctx)
	if err != nil {
		w.o.Log.Error("recover: cannot list guests", "err", err.Error())
	}
	var kill []Guest
	h := lease.Holder{Host: w.o.Host, Lease: w.lease}
	for _, g := range gs {
		lg, ok := listed[g.UUID]
		if !ok {
			kill = append(kill, g)
			continue
		}
		if _, err := w.o.Sessions.Claim(ctx, h, lease.Claim{UUID: g.UUID, Name: lg.Name, Disks: lg.Disks}); err != nil {
			w.o.Log.Error("recover: cannot re-claim a guest our unfenced record kept", "domain", lg.Name, "err", err.Error())
			kill = append(kill, g)
			continue
		}
		w.o.Log.Info("recover: re-claimed", "domain", lg.Name, "uuid", g.UUID)
	}
	w.kill(ctx, kill, "not kept safe while the watchdog was away")
	if ok {
		if err := w.o.Sessions.ClearUnfenced(ctx, w.o.Host, rev); err != nil {
			w.o.Log.Warn("could not delete our unfenced record", "err", err.Error())
		}
	}
}

func (w *Watchdog) clearUnfenced(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*w.o.Config.RenewInterval)
	defer cancel()
	_, rev, ok, err := w.o.Sessions.GetUnfenced(ctx, w.o.Host)
	if err == nil && ok {
		err = w.o.Sessions.ClearUnfenced(ctx, w.o.Host, rev)
	}
	if err != nil {
		w.o.Log.Warn("could not delete our unfenced record", "err", err.Error())
	}
}

func (w *Watchdog) writeSession(state lease.SessionState) error {
	err := lease.WriteSession(w.sessionPath(), lease.Session{Host: w.o.Host, Lease: w.lease, Boot: w.o.BootID,
		Deadline: int64(w.deadline.At()), State: state})
	if err != nil {
		w.o.Log.Error("cannot write the session file: the hook will refuse starts", "err", err.Error())
	}
	return nil
}

// fence kills every managed guest of this host. It never waits on etcd.
func (w *Watchdog) fence(ctx context.Context, reason string) {
	w.fencing = true
	w.fencedAt = w.o.Clock.Now()
	w.active.Store(nil)
	w.o.Metrics.Fenced()
	w.writeSession(lease.SessionFencing)
	w.o.Log.Warn("fencing: killing every guest of this host", "reason", reason, "lease", w.lease.String(),
		"t", w.rel())
	w.killAll(ctx, reason)
}

// killAll kills every running managed guest.
func (w *Watchdog) killAll(ctx context.Context, why string) {
	gs, err := w.o.Guests.Running(ctx)
	if err != nil {
		w.o.Log.Error("fencing: cannot list guests", "err", err.Error(), "t", w.rel())
	}
	survivors := w.kill(ctx, gs, why)
	w.guestsGone = err == nil && len(survivors) == 0
}

// kill kills gs, leaving a kill marker for each first so that the hook's
// release can tell this stop from a clean one (an HA guest's intent stays
// running).
func (w *Watchdog) kill(ctx context.Context, gs []Guest, why string) (survivors []Guest) {
	if len(gs) == 0 {
		return nil
	}
	for _, g := range gs {
		p := filepath.Join(w.o.StateDir, "killed", g.UUID)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(why+"\n"), 0o644)
	}
	kctx, cancel := context.WithTimeout(ctx, w.o.Config.Margin)
	defer cancel()
	survivors = w.o.Guests.Kill(kctx, gs)
	w.o.Metrics.Killed(why, len(survivors))
	for _, g := range gs {
		alive := false
		for _, s := range survivors {
			alive = alive || s.UUID == g.UUID
		}
		if alive {
			w.o.Log.Error("guest survived SIGKILL", "why", why, "domain", g.Name, "uuid", g.UUID, "pid", g.PID, "t", w.rel())
		} else {
			w.o.Log.Warn("killed", "why", why, "domain", g.Name, "uuid", g.UUID, "pid", g.PID, "t", w.rel())
		}
	}
	return survivors
}

// rel is now relative to the session deadline, for logs: "-3.012s" means
// 3 s before etcd may expire the lease.
func (w *Watchdog) rel() string {
	if w.lease == 0 {
		return "no-session"
	}
	return (w.o.Clock.Now() - w.deadline.At()).Round(time.Millisecond).String()
}

// stop ends Run on SIGTERM. With no guest it revokes the session. With
// guests it keeps the session (a restart is expected), lists them with
// their disks in PREFIX/unfenced/HOST (which keeps them from every other
// host, and from HA restart, until we are back or an operator clears it),
// and marks the session file stopped so that no new guest starts here.
func (w *Watchdog) stop() error {
	w.o.Notify("STOPPING=1")
	w.active.Store(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*w.o.Config.RenewInterval)
	defer cancel()
	if w.lease == 0 {
		if w.o.Device != nil {
			w.o.Device.Close(true)
		}
		return nil
	}
	gs, err := w.o.Guests.Running(ctx)
	if err == nil && len(gs) == 0 {
		if err := w.o.Sessions.Revoke(ctx, w.lease); err != nil {
			w.o.Log.Warn("could not revoke the session; it expires on its own", "lease", w.lease.String(), "err", err.Error())
		} else {
			w.o.Log.Info("no guests: session revoked", "lease", w.lease.String())
		}
		os.Remove(w.sessionPath())
		if w.o.Device != nil {
			w.o.Device.Close(true)
		}
		return nil
	}
	if w.o.Device != nil {
		// Keep it counting: if we are not back in time, it resets the
		// machine before the session can expire.
		w.o.Device.Close(false)
	}
	w.writeSession(lease.SessionStopped)
	if w.fencing {
		return nil
	}
	u := lease.Unfenced{Since: time.Now().UTC().Truncate(time.Second)}
	held, herr := w.o.Sessions.Held(ctx, lease.Holder{Host: w.o.Host, Lease: w.lease})
	disks := map[string][]string{}
	for _, d := range held {
		disks[d.UUID] = d.Disks
	}
	for _, g := range gs {
		u.Guests = append(u.Guests, lease.UnfencedGuest{UUID: g.UUID, Name: g.Name, Disks: disks[g.UUID]})
	}
	if herr == nil {
		herr = w.o.Sessions.SetUnfenced(ctx, w.o.Host, u)
	}
	if herr != nil {
		// Without the record the guests are safe only until the lease
		// expires: the returning watchdog must fence at the old deadline.
		w.writeSession(lease.SessionOrphaned)
		w.o.Log.Error("stopping with guests running, and could not record them as unfenced: they are protected only until the session expires",
			"guests", len(gs), "err", herr.Error(), "expires_in", (w.deadline.At() - w.o.Clock.Now()).String())
		return nil
	}
	w.o.Log.Warn("stopping with guests running: keeping the session for a restart and recording them as unfenced; nothing fences this host until the watchdog is back",
		"lease", w.lease.String(), "guests", len(gs), "expires_in", (w.deadline.At() - w.o.Clock.Now()).String())
	return nil
}
