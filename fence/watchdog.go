package fence

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	ReleaseStale(ctx context.Context, h lease.Holder, d lease.DomainStatus, intent *lease.Intent) (int, error)
	DropMigration(ctx context.Context, h lease.Holder, uuid string) error
	Holdings(ctx context.Context, h lease.Holder) (lease.Holdings, error)
	// Intent reads uuid's HA intent; nil when it has none.
	Intent(ctx context.Context, uuid string) (*lease.Intent, error)
	Held(ctx context.Context, h lease.Holder) ([]lease.DomainStatus, error)
	SetUnfenced(ctx context.Context, host string, u lease.Unfenced) error
	GetUnfenced(ctx context.Context, host string) (lease.Unfenced, int64, bool, error)
	ClearUnfenced(ctx context.Context, host string, rev int64) error
	StopWhileAway(ctx context.Context, host, uuid string, unfencedRev int64) (time.Time, bool, error)
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
	SessionState(state string)        // SessionStates: the session as the loop sees it
	DeviceArmed(armed bool)           // the hardware watchdog is open and counting
	HAIntentsFailed(n int)            // HA intents (cluster-wide) that gave up, last seen
}

// SessionStates are the values Metrics.SessionState takes: held (renewed by
// etcd), resumed (from the session file, not yet renewed), fencing, none.
func SessionStates() []string { return []string{"held", "resumed", "fencing", "none"} }

type noMetrics struct{}

func (noMetrics) SessionLeft(time.Duration) {}
func (noMetrics) Renewed(time.Duration)     {}
func (noMetrics) RenewFailed()              {}
func (noMetrics) Fenced()                   {}
func (noMetrics) Killed(string, int)        {}
func (noMetrics) Reconciled(string)         {}
func (noMetrics) GuestsManaged(int)         {}
func (noMetrics) HARestarted(bool)          {}
func (noMetrics) SessionState(string)       {}
func (noMetrics) DeviceArmed(bool)          {}
func (noMetrics) HAIntentsFailed(int)       {}

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
	// Device, when set, is the hardware watchdog, not yet open (see Device
	// for when the watchdog opens it; its timeout is Config.DeviceTimeout).
	Device Device
	// Metrics, when set, is told what happens.
	Metrics Metrics
	// HA, when set, runs the HA restarter beside the fence loop.
	HA *HAOptions
	// Reconcile, when set, runs the reconcile loop beside the fence loop.
	Reconcile *ReconcileOptions
	// Notify sends a systemd notification ("READY=1", "WATCHDOG=1",
	// "STOPPING=1"); nil means none. It may block: the watchdog calls it
	// from a goroutine of its own, never from the fence loop.
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
	// background runs etcd work the loop must not wait for (it never
	// waits on etcd): work returns what the loop then applies. New runs it
	// inline (the scenario simulator and unit tests); Run on a goroutine,
	// its outcome fed back through applies.
	background func(work func() (apply func()))
	applies    chan func()
	// recoverRunning: recover is under way; clearing: a delete of our
	// unfenced record is under way.
	recoverRunning, clearing bool
	// clearRecord: our unfenced record, if any, is void (its guests are
	// ours again under a live session, or dead) and is to be deleted;
	// retried after every renewal until done.
	clearRecord bool
	// heldOnce: this process has held a session.
	heldOnce bool
	notifier notifier
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
	// devOpen: the hardware watchdog is open (see openDevice); devFailed:
	// opening it failed, so the watchdog goes on without it.
	devOpen, devFailed bool
	// idle: there is no session and the last look found no guest running
	// (looked at only while the device is open): as safe as fenced with
	// none left, so the device is petted.
	idle bool
	// managed is the count of managed guests the last reconcile saw (-1:
	// none yet), for STATUS=; status is the STATUS= last sent.
	managed atomic.Int64
	status  string
	// view is the session as the loop last published it, for log lines
	// written on other goroutines (the reconciler's kills): the loop alone
	// reads and writes lease and deadline.
	view atomic.Pointer[sessionView]
	// quit closes when Run returns: work still under way then (a renewal
	// stuck until its deadline) drops its outcome instead of waiting for a
	// loop that is gone.
	quit chan struct{}
}

// sessionView is the session as other goroutines see it.
type sessionView struct {
	lease lease.ID
	at    time.Duration // the deadline: when etcd may expire the lease
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
	w := &Watchdog{o: o, results: make(chan renewal, 1), started: time.Now().UTC().Truncate(time.Second), keys: lease.NewKeys(o.Prefix),
		quit: make(chan struct{}), applies: make(chan func())}
	w.background = func(work func() func()) { work()() }
	w.notifier = notifier{send: o.Notify, wake: make(chan struct{}, 1)}
	w.managed.Store(-1)
	return w
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
	defer close(w.quit)
	w.launch = func(req renewal) {
		go func() {
			r := w.renew(ctx, req)
			select {
			case w.results <- r:
			case <-w.quit:
			}
		}()
	}
	w.background = func(work func() func()) {
		go func() {
			apply := work()
			select {
			case w.applies <- apply:
			case <-w.quit:
			}
		}()
	}
	go w.notifier.run(w.quit)
	if w.o.Reconcile != nil {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go w.reconcile(rctx, *w.o.Reconcile)
	}
	if w.o.HA != nil {
		hctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go w.restarter(hctx, *w.o.HA, w.lease)
	}
	ready := false
	for {
		now := w.o.Clock.Now()
		w.tick(ctx, now)
		// The loop is alive: systemd's watchdog is about this process, not
		// about etcd (fencing is our own business).
		w.notifier.notify("WATCHDOG=1")
		if !ready && w.lease != 0 {
			// Enforcing a session resumed from the file (etcd not answering
			// yet): systemd must not stop us for a slow start, or nothing
			// fences at that session's fence point.
			w.notifier.notify(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", (3 * w.o.Config.RenewInterval).Microseconds()))
		}
		// Pet right after tick, before sleeping: a fence that has just
		// killed the last guest must pet now, not at the next wake-up,
		// which may come after the device has fired.
		w.pet()
		if s := w.statusLine(); s != w.status {
			w.status = s
			w.notifier.notify("STATUS=" + s)
		}
		if w.lease != 0 && !w.fencing {
			w.o.Metrics.SessionLeft(w.deadline.At() - w.o.Clock.Now())
		} else {
			w.o.Metrics.SessionLeft(0)
		}
		w.o.Metrics.SessionState(w.sessionState())
		w.o.Metrics.DeviceArmed(w.devOpen)
		select {
		case <-ctx.Done():
			return w.stop()
		case <-w.o.Clock.After(w.wake(w.o.Clock.Now())):
		case r := <-w.results:
			if err := w.handle(ctx, r); err != nil {
				return err
			}
			// READY=1 once a session is verified by etcd (a grant, or a
			// renewal of the resumed one), not on a resumed session's
			// failed renewal.
			if !ready && w.active.Load() != nil {
				ready = true
				w.notifier.notify("READY=1")
			}
		case apply := <-w.applies:
			apply()
		}
	}
}

// sessionState is one of SessionStates.
func (w *Watchdog) sessionState() string {
	switch {
	case w.lease == 0:
		return "none"
	case w.fencing:
		return "fencing"
	case w.active.Load() == nil:
		return "resumed"
	}
	return "held"
}

// statusLine is what `systemctl status` shows for the watchdog (STATUS=):
// the session and its state, and the managed guests last counted. It
// changes only with those, not every second.
func (w *Watchdog) statusLine() string {
	var s string
	switch w.sessionState() {
	case "none":
		s = "no session: waiting for etcd"
	case "fencing":
		s = "fencing: session " + w.lease.String() + " lost"
	case "resumed":
		s = "session " + w.lease.String() + " resumed, not yet renewed"
	default:
		s = "session " + w.lease.String() + " held"
	}
	if n := w.managed.Load(); n >= 0 {
		s += fmt.Sprintf(", %d guests", n)
	}
	return s
}

// pet pets the hardware watchdog while that is safe:
//   - the last acknowledged renewal was sent less than 2 × renew_interval
//     ago (a verified session): then a dead or stuck daemon resets the
//     machine ≥ 1 s before etcd can expire the session, and a fence has
//     margin − 1 s to finish before the device fires;
//   - we are fencing and no guest is left, or there is no session and no
//     guest runs: a partitioned host whose guests are dead, or one that
//     boots while etcd is unreachable, stays up.
//
// The device is opened (see Device) only when the first rule holds, or by
// resume, to enforce a deadline from the session file: so a start never
// pets it before a session is verified, and a host that never held a
// session on this boot (etcd unreachable at boot) never arms it.
func (w *Watchdog) pet() {
	if w.o.Device == nil {
		return
	}
	now := w.o.Clock.Now()
	verified := w.lease != 0 && !w.fencing && w.resumed == "" && now-w.deadline.Sent < 2*w.o.Config.RenewInterval
	if verified {
		w.openDevice("session verified")
	}
	ok := verified || (w.fencing && w.guestsGone) || (w.lease == 0 && !w.fencing && w.idle)
	if !ok || !w.devOpen {
		return
	}
	if err := w.o.Device.Pet(); err != nil {
		w.o.Log.Error("cannot pet the hardware watchdog", "err", err.Error())
	}
}

// openDevice opens the hardware watchdog if it is configured and not open
// yet. A device that cannot be opened is not tried again: the watchdog goes
// on without it (see FileDevice.Open for why it does not exit).
func (w *Watchdog) openDevice(why string) {
	if w.o.Device == nil || w.devOpen || w.devFailed {
		return
	}
	if err := w.o.Device.Open(); err != nil {
		w.devFailed = true
		w.o.Log.Error("cannot use the hardware watchdog: going on without it; if this process dies, nothing fences this host's guests",
			"err", err.Error())
		return
	}
	w.devOpen = true
	w.o.Log.Info("hardware watchdog open", "why", why, "timeout", w.o.Config.DeviceTimeout().String())
}

// tick does what is due at boot-clock time now: fence once the fence point
// has passed with no newer acknowledgement, keep killing while fencing, and
// launch the next renewal (or new session) when one is due.
func (w *Watchdog) tick(ctx context.Context, now time.Duration) {
	w.publish()
	if w.devOpen && w.lease == 0 && !w.fencing {
		// No session (a dead resumed one): pet only while no guest runs.
		gs, err := w.o.Guests.Running(ctx)
		w.idle = err == nil && len(gs) == 0
	}
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
// It reads only local files: Run calls it before anything waits on etcd.
//
// Outcomes:
//   - a usable session file: its lease and deadline are ours, a fence it
//     records goes on (dated from now, so the hold-back before a new
//     session applies), and the hardware watchdog is opened to back that
//     deadline (it usually still counts from the previous process);
//   - none, on a boot where a session was already held (HeldThisBoot): the
//     guests running now were not kept safe by a session we know of, so
//     the first session kills them instead of adopting them (recover:
//     only guests our unfenced record lists are claimed again);
//   - none, on a boot with no session held yet: a first start; the
//     reconcile adopts running guests (a rollout onto a running cluster).
func (w *Watchdog) resume() {
	s, err := lease.ReadSession(w.sessionPath())
	if err != nil || s.Boot != w.o.BootID || s.Host != w.o.Host || s.Lease == 0 {
		if HeldThisBoot(w.o.StateDir) {
			w.recovering = true
			w.o.Log.Warn("a session was held on this boot but the session file is missing or unusable: guests running now are killed, not adopted, unless our unfenced record lists them")
		}
		return
	}
	w.lease = s.Lease
	// The file stores the deadline itself; keep it as a zero-TTL renewal
	// sent at that moment.
	w.deadline = Deadline{Sent: time.Duration(s.Deadline)}
	w.fencing = s.State == lease.SessionFencing
	if w.fencing {
		w.fencedAt = w.o.Clock.Now()
	}
	w.resumed = s.State
	// The file proves a session was held on this boot (by a watchdog
	// older than the marker, perhaps).
	if err := MarkHeldThisBoot(w.o.StateDir); err != nil {
		w.o.Log.Error("cannot mark that a session was held on this boot", "err", err.Error())
	}
	w.o.Log.Info("resuming session from the session file", "lease", s.Lease.String(), "state", string(s.State),
		"deadline_in", (time.Duration(s.Deadline) - w.o.Clock.Now()).String())
	w.openDevice("enforcing the session file's deadline")
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
	if ttl > w.o.Config.TTL {
		// etcd raises a TTL below its minimum, 1.5 × its election timeout:
		// then that timeout is long next to ours, and the margin may not
		// cover a deposed leader's last acknowledgement.
		w.o.Log.Warn("etcd granted a longer session TTL than asked: its election timeout is long for session.ttl, and fence.margin may not exceed it, which the fence relies on",
			"asked", w.o.Config.TTL.String(), "granted", ttl.String())
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
	defer w.publish()
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
		w.clearRecord = true
	}
	if r.fresh {
		// A new session: fencing ends, the old deadline no longer binds.
		old := w.lease
		w.lease, w.deadline, w.fencing = r.id, d, false
		w.o.Log.Info("session held", "lease", r.id.String(), "ttl", r.ttl.String(), "previous", old.String())
		if !w.heldOnce {
			w.heldOnce = true
			if w.firstStartThisBoot() {
				// Our unfenced record, if any, is from an earlier boot:
				// the guests it lists died with it.
				w.clearRecord = true
			}
			if err := MarkHeldThisBoot(w.o.StateDir); err != nil {
				w.o.Log.Error("cannot mark that a session was held on this boot", "err", err.Error())
			}
		}
	} else {
		w.deadline = w.deadline.Later(d)
	}
	w.publish()
	if w.fencing {
		return nil
	}
	if r.fresh && w.resumed != "" {
		// A fresh session after a resumed one died (crash, or fencing):
		// any leftover unfenced record of ours is void, its guests dead.
		w.resumed = ""
		w.clearRecord = true
	}
	if w.recovering {
		// The session is not ok (no starts, no reconcile) until recover
		// has settled every guest.
		if r.fresh {
			w.startRecover(ctx)
		}
		return nil
	}
	w.startClear(ctx)
	w.active.Store(&lease.Holder{Host: w.o.Host, Lease: w.lease})
	return w.writeSession(lease.SessionOK)
}

// startRecover runs recover off the loop, under the current session. Its
// outcome: every guest settled → the session is ok; a guest it could not
// settle → fence (sticky); the session replaced meanwhile → recover again
// under the new one.
func (w *Watchdog) startRecover(ctx context.Context) {
	if w.recoverRunning {
		return
	}
	w.recoverRunning = true
	h := lease.Holder{Host: w.o.Host, Lease: w.lease}
	w.background(func() func() {
		recordLeft, err := w.recover(ctx, h)
		return func() {
			w.recoverRunning = false
			switch {
			case w.lease != h.Lease || w.fencing:
				// A fence or a new session came first: recover again
				// once there is a session to claim under.
				if w.lease != 0 && !w.fencing && w.recovering {
					w.startRecover(ctx)
				}
			case err != nil:
				// Some guest may run here that nobody kept safe: kill
				// everything until a new session exists. Every guest
				// is dead then, so the record goes too.
				w.recovering, w.clearRecord = false, true
				w.fence(ctx, err.Error())
			default:
				w.recovering, w.clearRecord = false, recordLeft
				w.startClear(ctx)
				w.active.Store(&h)
				w.writeSession(lease.SessionOK)
			}
		}
	})
}

// recover runs once the first session after an expired clean stop exists:
// each running guest our unfenced record lists is claimed again (it was
// kept from every other host, so nobody can hold it), any other is killed
// (nobody kept it safe: someone else may run it by now). Only then does
// the record go, so the listed guests are never free. It runs off the
// loop: it waits on etcd.
//
// Outcomes:
//   - nil, false: every guest settled, the record (if any) deleted;
//   - nil, true: every guest settled, the record could not be deleted (to
//     be retried);
//   - an error: the record could not be read, the guests could not be
//     listed, or a guest to kill survived; the caller fences.
func (w *Watchdog) recover(ctx context.Context, h lease.Holder) (recordLeft bool, err error) {
	ectx, cancel := context.WithTimeout(ctx, 2*w.o.Config.RenewInterval)
	defer cancel()
	u, rev, ok, err := w.o.Sessions.GetUnfenced(ectx, w.o.Host)
	if err != nil {
		// Cannot tell which guests were kept safe: kill them all.
		return false, fmt.Errorf("recover: cannot read our unfenced record, so every guest is killed: %w", err)
	}
	listed := map[string]lease.UnfencedGuest{}
	for _, g := range u.Guests {
		listed[g.UUID] = g
	}
	gs, err := w.o.Guests.Running(ectx)
	if err != nil {
		return false, fmt.Errorf("recover: cannot list guests, so every guest is killed: %w", err)
	}
	if ok {
		w.recordStopsWhileAway(ectx, u, rev, gs)
	}
	var kill []Guest
	for _, g := range gs {
		lg, ok := listed[g.UUID]
		if !ok {
			kill = append(kill, g)
			continue
		}
		if _, err := w.o.Sessions.Claim(ectx, h, lease.Claim{UUID: g.UUID, Name: lg.Name, Disks: lg.Disks}); err != nil {
			w.o.Log.Error("recover: cannot re-claim a guest our unfenced record kept", "domain", lg.Name, "err", err.Error())
			kill = append(kill, g)
			continue
		}
		w.o.Log.Info("recover: re-claimed", "domain", lg.Name, "uuid", g.UUID)
	}
	// The kill has its own time (kill bounds it by the margin), not what
	// the etcd calls above left of theirs.
	if survivors := w.kill(ctx, kill, "not kept safe while the watchdog was away"); len(survivors) > 0 {
		return false, fmt.Errorf("recover: %d guests not kept safe survived SIGKILL", len(survivors))
	}
	if ok {
		if err := w.o.Sessions.ClearUnfenced(ectx, w.o.Host, rev); err != nil {
			w.o.Log.Warn("could not delete our unfenced record; retrying", "err", err.Error())
			return true, nil
		}
	}
	return false, nil
}

// recordStopsWhileAway sets the HA intent of each guest our unfenced
// record lists that no longer runs here to stopped when it stopped cleanly
// (lease.StopState.JudgeStop): the operator shut it down after our session
// had expired, so the hook's release had no key to record the stop with.
// Left running, the intent would have HA start the guest elsewhere once the
// record goes. As after the hook's clean stops, a stopped marker lets
// the HA restarter ask libvirt whether the QEMU crashed instead
// (reviveCrashed).
func (w *Watchdog) recordStopsWhileAway(ctx context.Context, u lease.Unfenced, rev int64, running []Guest) {
	st := w.stops()
	for _, g := range u.Guests {
		if slices.ContainsFunc(running, func(r Guest) bool { return r.UUID == g.UUID }) || st.JudgeStop(g.UUID) != lease.StopClean {
			continue
		}
		since, stopped, err := w.o.Sessions.StopWhileAway(ctx, w.o.Host, g.UUID, rev)
		if err != nil {
			continue
		}
		os.Remove(st.Marker("started", g.UUID))
		if stopped {
			p := st.Marker("stopped", g.UUID)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte(since.Format(time.RFC3339)+"\n"), 0o644)
			w.o.Log.Info("recover: a guest stopped cleanly while the watchdog was away: its HA intent is stopped", "domain", g.Name, "uuid", g.UUID)
		}
	}
}

// startClear deletes our unfenced record off the loop, when one is void
// and no delete is under way; a failed delete is retried at the next call
// (every renewal).
func (w *Watchdog) startClear(ctx context.Context) {
	if !w.clearRecord || w.clearing {
		return
	}
	w.clearing = true
	h := lease.Holder{Host: w.o.Host, Lease: w.lease}
	w.background(func() func() {
		err := w.clearUnfenced(ctx, h)
		return func() {
			w.clearing = false
			if err != nil {
				w.o.Log.Warn("could not delete our unfenced record; retrying", "err", err.Error())
				return
			}
			w.clearRecord = false
		}
	})
}

// clearUnfenced deletes our unfenced record, if it has not changed since
// it was read (a stop may have written a new one meanwhile). Each guest it
// lists that runs here is claimed under h first (a no-op when its keys are
// h's already): until then the record is all that keeps it from other
// hosts.
//
// Outcomes: nil (deleted, or there was none, or it changed since the
// read); an error (etcd, the guest list, or a claim failed): the record
// stays, to be tried again.
func (w *Watchdog) clearUnfenced(ctx context.Context, h lease.Holder) error {
	ctx, cancel := context.WithTimeout(ctx, 2*w.o.Config.RenewInterval)
	defer cancel()
	u, rev, ok, err := w.o.Sessions.GetUnfenced(ctx, w.o.Host)
	if err != nil || !ok {
		return err
	}
	if len(u.Guests) > 0 {
		gs, err := w.o.Guests.Running(ctx)
		if err != nil {
			return fmt.Errorf("listing the guests it names: %w", err)
		}
		for _, g := range gs {
			i := slices.IndexFunc(u.Guests, func(l lease.UnfencedGuest) bool { return l.UUID == g.UUID })
			if i < 0 {
				continue
			}
			l := u.Guests[i]
			if _, err := w.o.Sessions.Claim(ctx, h, lease.Claim{UUID: l.UUID, Name: l.Name, Disks: l.Disks}); err != nil {
				return fmt.Errorf("claiming %s, which it names and which runs here: %w", l.Name, err)
			}
		}
	}
	return w.o.Sessions.ClearUnfenced(ctx, w.o.Host, rev)
}

func (w *Watchdog) writeSession(state lease.SessionState) error {
	err := lease.WriteSession(w.sessionPath(), lease.Session{Host: w.o.Host, Lease: w.lease, Boot: w.o.BootID,
		Deadline: int64(w.deadline.At()), FenceAt: int64(w.deadline.FenceAt(w.o.Config.Margin)), State: state})
	if err != nil {
		w.o.Log.Error("cannot write the session file: the hook will refuse starts", "err", err.Error())
	}
	return nil
}

// fence kills every managed guest of this host. It never waits on etcd,
// and it kills before it logs: a log write can block (a journal that does
// not read its pipe) where a kill must not.
func (w *Watchdog) fence(ctx context.Context, reason string) {
	w.fencing = true
	w.fencedAt = w.o.Clock.Now()
	w.active.Store(nil)
	w.o.Metrics.Fenced()
	// The hook refuses starts from here on.
	w.writeSession(lease.SessionFencing)
	began := w.rel()
	w.killAll(ctx, reason)
	w.o.Log.Warn("fencing: killing every guest of this host", "reason", reason, "lease", w.lease.String(),
		"t", began)
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

// publish makes the loop's view of the session readable by other
// goroutines.
func (w *Watchdog) publish() {
	w.view.Store(&sessionView{lease: w.lease, at: w.deadline.At()})
}

// rel is now relative to the session deadline, for logs: "-3.012s" means
// 3 s before etcd may expire the lease. Any goroutine may call it: it reads
// what the loop last published.
func (w *Watchdog) rel() string {
	v := w.view.Load()
	if v == nil || v.lease == 0 {
		return "no-session"
	}
	return (w.o.Clock.Now() - v.at).Round(time.Millisecond).String()
}

// stop ends Run on SIGTERM. It never leaves a guest that may run here both
// unfenced and unrecorded. Outcomes:
//   - no domain known here (no QEMU in /proc, no domain key held by the
//     session, our unfenced record lists none, and each of those could be
//     read): the session is revoked (its keys vanish at once), the session
//     file removed, the device disarmed;
//   - domains known: the session is kept for a restart, they are listed
//     with their disks in PREFIX/unfenced/HOST (which keeps them from every
//     other host, and from HA restart, until we are back or an operator
//     clears it), and only then is the session file marked stopped (no new
//     guest starts here, and the restart does not fence at the old
//     deadline); the device keeps counting;
//   - the record cannot be written before the fence point: fence now (the
//     session file says fencing, so a restart keeps killing);
//   - fencing already: one more kill round; the file stays fencing;
//   - recovering (the last stop's session expired and recover has not
//     settled the guests yet): every guest our record does not list is
//     killed (all of them when the record cannot be read); the file stays
//     as it is, so the next start recovers again.
//
// The device is disarmed only when no guest is left running; otherwise it
// keeps counting (the kernel pings it at close), so that if we are not
// back in time it resets the machine.
func (w *Watchdog) stop() error {
	w.notifier.notify("STOPPING=1")
	w.active.Store(nil)
	ctx := context.Background()
	var noneLeft bool
	switch {
	case w.fencing:
		w.killAll(ctx, "fencing")
		noneLeft = w.guestsGone
	case w.recovering:
		noneLeft = w.stopRecovering(ctx)
	case w.lease == 0:
		// No session was ever held by this process, none resumed: no key
		// of ours names a guest.
		noneLeft = true
	default:
		noneLeft = w.stopHeld(ctx)
	}
	if w.o.Device != nil {
		w.o.Device.Close(noneLeft)
	}
	return nil
}

// stopHeld is stop with a session held (or resumed, not yet confirmed). It
// reports whether no guest is left running.
func (w *Watchdog) stopHeld(ctx context.Context) (noneLeft bool) {
	// A stop resumed from a clean stop is not fenced at its deadline: its
	// record stands. Anything else must have its record written before
	// the fence point, or fence.
	resumedStopped := w.resumed == lease.SessionStopped
	bound := 2 * w.o.Config.RenewInterval
	if !resumedStopped {
		bound = min(bound, w.deadline.FenceAt(w.o.Config.Margin)-w.o.Clock.Now())
	}
	ectx, cancel := context.WithTimeout(ctx, max(bound, 0))
	defer cancel()
	h := lease.Holder{Host: w.o.Host, Lease: w.lease}
	gs, rerr := w.o.Guests.Running(ectx)
	held, herr := w.o.Sessions.Held(ectx, h)
	prev, rev, hasPrev, perr := w.o.Sessions.GetUnfenced(ectx, w.o.Host)
	u := unfencedRecord(gs, held, prev, resumedStopped)
	if rerr == nil && herr == nil && (perr == nil || !resumedStopped) && len(u.Guests) == 0 {
		if hasPrev {
			// Left over (a delete that kept failing): none of its guests
			// runs here, and nothing else would delete it.
			if err := w.o.Sessions.ClearUnfenced(ectx, w.o.Host, rev); err != nil {
				w.o.Log.Warn("could not delete our unfenced record", "err", err.Error())
			}
		}
		if err := w.o.Sessions.Revoke(ectx, w.lease); err != nil {
			w.o.Log.Warn("could not revoke the session; it expires on its own", "lease", w.lease.String(), "err", err.Error())
		} else {
			w.o.Log.Info("no guests: session revoked", "lease", w.lease.String())
		}
		os.Remove(w.sessionPath())
		return true
	}
	if !resumedStopped {
		// Until the record is durable, a restart must fence at the old
		// deadline.
		w.writeSession(lease.SessionOrphaned)
	}
	err := cmp.Or(herr, perr)
	if err == nil {
		u.Since = time.Now().UTC().Truncate(time.Second)
		err = w.o.Sessions.SetUnfenced(ectx, w.o.Host, u)
	}
	switch {
	case err == nil:
		w.writeSession(lease.SessionStopped)
		w.o.Log.Warn("stopping with guests running: keeping the session for a restart and recording them as unfenced; nothing fences this host until the watchdog is back",
			"lease", w.lease.String(), "guests", len(u.Guests), "expires_in", (w.deadline.At() - w.o.Clock.Now()).String())
		return false
	case resumedStopped:
		// The record the last stop wrote still stands, and so does the
		// session file that says stopped.
		w.o.Log.Error("stopping again before the session was confirmed, and could not update our unfenced record: it still lists what the last stop left",
			"err", err.Error())
		return false
	}
	w.fence(ctx, "stopping with guests running, and they could not be recorded as unfenced: "+err.Error())
	return w.guestsGone
}

// unfencedRecord lists every domain known to run here: its QEMU is in
// /proc (gs) or the session holds its key (held); also, while a session
// resumed from a clean stop is not confirmed alive, every guest the last
// stop recorded (prev), whose keys may be gone. Each keeps the disks held
// and recorded before: the record is what keeps them from other hosts.
func unfencedRecord(gs []Guest, held []lease.DomainStatus, prev lease.Unfenced, withPrev bool) lease.Unfenced {
	var u lease.Unfenced
	index := map[string]int{}
	add := func(uuid, name string, disks []string) {
		i, ok := index[uuid]
		if !ok {
			i = len(u.Guests)
			index[uuid] = i
			u.Guests = append(u.Guests, lease.UnfencedGuest{UUID: uuid, Name: name})
		}
		for _, d := range disks {
			if !slices.Contains(u.Guests[i].Disks, d) {
				u.Guests[i].Disks = append(u.Guests[i].Disks, d)
			}
		}
	}
	for _, g := range gs {
		add(g.UUID, g.Name, nil)
	}
	for _, d := range held {
		add(d.UUID, d.Name, d.Disks)
	}
	for _, g := range prev.Guests {
		if _, ok := index[g.UUID]; ok || withPrev {
			add(g.UUID, g.Name, g.Disks)
		}
	}
	return u
}

// stopRecovering is stop before recover settled the guests: the last
// stop's session is dead, so a guest our record does not list may run
// elsewhere too and is killed; the listed ones stay, kept by the record.
// It reports whether no guest is left running.
func (w *Watchdog) stopRecovering(ctx context.Context) (noneLeft bool) {
	ectx, cancel := context.WithTimeout(ctx, 2*w.o.Config.RenewInterval)
	defer cancel()
	u, _, _, uerr := w.o.Sessions.GetUnfenced(ectx, w.o.Host)
	gs, err := w.o.Guests.Running(ectx)
	var kill []Guest
	for _, g := range gs {
		if uerr != nil || !slices.ContainsFunc(u.Guests, func(l lease.UnfencedGuest) bool { return l.UUID == g.UUID }) {
			kill = append(kill, g)
		}
	}
	survivors := w.kill(ctx, kill, "not kept safe while the watchdog was away")
	w.o.Log.Warn("stopping before the guests left by the last stop were settled: killed those our unfenced record does not list; the next start settles the rest",
		"killed", len(kill)-len(survivors), "survivors", len(survivors))
	return err == nil && len(kill) == len(gs) && len(survivors) == 0
}

// notifier passes systemd notifications on from a goroutine of its own:
// sd_notify is a blocking write to PID 1, and the fence loop must not wait
// on it. A notification already waiting is not queued twice.
type notifier struct {
	send    func(string)
	mu      sync.Mutex
	pending []string
	wake    chan struct{}
}

// notify queues state and returns at once.
func (n *notifier) notify(state string) {
	n.mu.Lock()
	if strings.HasPrefix(state, "STATUS=") {
		// Only the newest status matters.
		n.pending = slices.DeleteFunc(n.pending, func(p string) bool { return strings.HasPrefix(p, "STATUS=") })
	}
	if !slices.Contains(n.pending, state) {
		n.pending = append(n.pending, state)
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run sends what is queued until quit closes, then once more (STOPPING=1
// is queued last).
func (n *notifier) run(quit <-chan struct{}) {
	for {
		stop := false
		select {
		case <-n.wake:
		case <-quit:
			stop = true
		}
		n.mu.Lock()
		p := n.pending
		n.pending = nil
		n.mu.Unlock()
		for _, s := range p {
			n.send(s)
		}
		if stop {
			return
		}
	}
}
