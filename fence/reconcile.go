package fence

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// Domains is what the reconciler asks of libvirt.
type Domains interface {
	Running(ctx context.Context, withXML bool) ([]Guest, error)
	State(ctx context.Context, uuid string) (active, hasJob bool, err error)
	// Crashed: the domain is shut off because its QEMU died unasked.
	Crashed(ctx context.Context, uuid string) (bool, error)
	Events(ctx context.Context) (<-chan LifecycleEvent, error)
}

// ReconcileOptions turns on the reconcile loop: every Interval, and at
// every libvirt lifecycle event, the guests libvirt runs are compared with
// the keys in etcd.
type ReconcileOptions struct {
	Interval time.Duration // default 5s
	// Grace is how long a key of ours may name a domain libvirt reports
	// inactive with no job before it is deleted. Default 30s.
	Grace   time.Duration
	Domains Domains
	// Parse turns a live domain XML into its claim; managed is false for
	// domains that opted out (mode off).
	Parse func(xml string) (c lease.Claim, managed bool, err error)
}

// reconcile runs until ctx ends. It does nothing while the session is not
// ok (fencing, recovering, none): only the fence loop acts then.
//
//   - a running guest whose keys another host holds is killed, unless it
//     is an incoming live migration (it waits for the hand-off);
//   - a running guest with no key is claimed (adopted: a rollout onto a
//     running cluster, a start the hook did not see); hot-plugged disks are
//     claimed the same way, and a refused disk claim means two writers:
//     the guest is killed;
//   - a key of ours whose domain libvirt reports inactive with no job for
//     longer than Grace is deleted (a stop whose hook could not reach etcd),
//     at once when libvirt says its QEMU crashed; never while a QEMU with
//     its -uuid runs in /proc (or /proc cannot tell). The stop is judged
//     as the hook judges it (lease.StopState.JudgeStop), so a deliberate
//     stop still sets an HA intent to stopped.
func (w *Watchdog) reconcile(ctx context.Context, o ReconcileOptions) {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Grace <= 0 {
		o.Grace = 30 * time.Second
	}
	inactiveSince := map[string]time.Time{}
	events := w.lifecycleEvents(ctx, o.Domains)
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	// pending: a pass was due while the session was not ok (the watchdog
	// starting or resuming, a fence): run it as soon as the session is,
	// not a whole Interval later; a crash-all's keys are settled then.
	pending := true
	for {
		var retry <-chan time.Time
		if pending {
			retry = time.After(pendingPoll)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-events:
		case <-retry:
		}
		h := w.active.Load()
		if h == nil {
			pending = true
			continue
		}
		pending = false
		w.reconcileOnce(ctx, o, *h, inactiveSince)
	}
}

// pendingPoll is how often a due reconcile pass looks whether the session
// is ok yet.
const pendingPoll = 250 * time.Millisecond

// lifecycleEvents merges libvirt's events into one channel, reconnecting
// when libvirtd restarts; a dropped event only delays a reconcile to the
// next tick.
func (w *Watchdog) lifecycleEvents(ctx context.Context, d Domains) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() {
		for ctx.Err() == nil {
			// The subscription lives as long as ctx: its channel closes
			// when ctx ends or libvirtd goes away.
			subscribed := time.Now()
			ch, err := d.Events(ctx)
			if err == nil {
				// Subscribed (again): events may have been lost while
				// libvirtd was away, so reconcile now.
				select {
				case out <- struct{}{}:
				default:
				}
				for range ch {
					select {
					case out <- struct{}{}:
					default:
					}
				}
			}
			// Never re-subscribe in a tight loop: libvirtd 9.0 crashed
			// under rapid event register/deregister churn in the lab.
			wait := 5*time.Second - time.Since(subscribed)
			if wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
	}()
	return out
}

func (w *Watchdog) reconcileOnce(ctx context.Context, o ReconcileOptions, h lease.Holder, inactiveSince map[string]time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	guests, err := o.Domains.Running(ctx, true)
	if err != nil {
		w.o.Log.Warn("reconcile: cannot list guests", "err", err.Error())
		return
	}
	running := map[string]bool{}
	managedN := 0
	for _, g := range guests {
		running[g.UUID] = true
		if g.PID == 0 {
			// Active in libvirt but no QEMU yet: a start whose prepare
			// hook is still running. The hook decides that one.
			continue
		}
		c, managed, err := o.Parse(g.XML)
		if err != nil || !managed {
			continue
		}
		managedN++
		// Written by the prepare of an incoming live migration.
		marker := filepath.Join(w.o.StateDir, "migrated", g.UUID)
		if m, err := lease.ReadMigrationMarker(marker); err == nil && m.From != "" {
			c.IncomingFrom, c.IncomingRev = m.From, m.Rev
		}
		r, err := w.o.Sessions.Claim(ctx, h, c)
		var held *lease.HeldError
		if c.IncomingFrom != "" && errors.Is(err, lease.ErrNotIncoming) {
			// The guest came in by a migration that is no longer
			// recorded (handed over, or failed): an ordinary guest now.
			os.Remove(marker)
			c.IncomingFrom, c.IncomingRev = "", 0
			r, err = w.o.Sessions.Claim(ctx, h, c)
		}
		if c.IncomingFrom == "" && errors.As(err, &held) && held.Held.Host != "" && held.Held.Host != h.Host && held.Held.UUID == g.UUID {
			// No marker (lost), but a migration from the holder to this
			// host may be recorded: an incoming guest as well.
			in := c
			in.IncomingFrom = held.Held.Host
			if ri, erri := w.o.Sessions.Claim(ctx, h, in); erri == nil {
				c, r, err = in, ri, nil
			}
		}
		if err == nil && c.IncomingFrom != "" && r.Pending == 0 {
			// Every key is ours (the hand-off happened, or the source's
			// session expired and we took them): the record has done its
			// job. Left alone it would refuse every later migration.
			if err := w.o.Sessions.DropMigration(ctx, h, g.UUID); err == nil {
				os.Remove(marker)
				w.o.Log.Info("reconcile: incoming migration complete; record dropped", "domain", g.Name, "uuid", g.UUID)
			}
		}
		switch {
		case err == nil && r.Written > 0:
			w.o.Log.Info("reconcile: claimed keys for a running guest", "domain", g.Name, "uuid", g.UUID, "keys", r.Written)
			w.o.Metrics.Reconciled("adopt")
		case errors.As(err, &held) && c.IncomingFrom != "":
			// An incoming migration not yet handed over (or one that
			// failed: libvirt is killing it). Not ours to judge.
		case errors.As(err, &held) && w.stillActive(h):
			w.o.Log.Warn("reconcile: a guest runs here that another host holds: killing it", "domain", g.Name, "uuid", g.UUID, "conflict", held.Error())
			w.o.Metrics.Reconciled("kill")
			w.kill(ctx, []Guest{g}, "reconcile: "+held.Error())
		case err != nil:
			w.o.Log.Warn("reconcile: cannot check a guest", "domain", g.Name, "err", err.Error())
		}
	}
	// Opted-out domains (mode off) are libvirt's guests, not ours.
	w.o.Metrics.GuestsManaged(managedN)
	w.managed.Store(int64(managedN))
	hs, err := w.o.Sessions.Holdings(ctx, h)
	if err != nil {
		return
	}
	now := time.Now()
	// /proc over libvirt's word: libvirt can lose a live QEMU (it crashed
	// between exec and saving the domain's status), and releasing that
	// guest's keys would let another host start a second copy. Asked once
	// per pass, and only when a release is due.
	var inProc map[string]Guest
	var procErr error
	qemuRuns := func(uuid string) (Guest, bool, error) {
		if inProc == nil && procErr == nil {
			var gs []Guest
			gs, procErr = w.o.Guests.Running(ctx)
			inProc = map[string]Guest{}
			for _, g := range gs {
				inProc[g.UUID] = g
			}
		}
		g, ok := inProc[uuid]
		return g, ok, procErr
	}
	for _, d := range hs.Domains {
		if running[d.UUID] {
			delete(inactiveSince, d.UUID)
			continue
		}
		active, job, err := o.Domains.State(ctx, d.UUID)
		if err != nil || active || job {
			delete(inactiveSince, d.UUID)
			continue
		}
		// A QEMU that libvirt saw die unasked: no need to wait out the
		// grace period (meant for slow starts and restores), so that HA
		// restarts the guest at once. A libvirtd killed together with its
		// QEMUs runs no release hook for them when it comes back.
		crashed, err := o.Domains.Crashed(ctx, d.UUID)
		if err != nil {
			continue // libvirt will answer next round
		}
		if !crashed {
			first, ok := inactiveSince[d.UUID]
			if !ok {
				inactiveSince[d.UUID] = now
				continue
			}
			if now.Sub(first) < o.Grace {
				continue
			}
		}
		if g, ok, err := qemuRuns(d.UUID); ok {
			w.o.Log.Error("reconcile: libvirt reports the domain inactive but its QEMU runs: keeping its keys", "domain", d.Name, "uuid", d.UUID, "pid", g.PID)
			continue
		} else if err != nil {
			// A guest among the processes /proc could not show: when unsure, keep.
			w.o.Log.Warn("reconcile: cannot tell from /proc whether the domain's QEMU runs: keeping its keys", "domain", d.Name, "uuid", d.UUID, "err", err.Error())
			continue
		}
		// Only keys as Holdings saw them, before State said inactive: a
		// start since then wrote them again and keeps them.
		if w.releaseStopped(ctx, h, d, crashed) {
			delete(inactiveSince, d.UUID)
		}
	}
	// A migration to this host whose guest never came (this libvirtd died
	// mid-migration, so no hook dropped the record): the record would keep
	// the guest from every later migration and its disks from every other
	// domain for as long as this session lives. Dropped once libvirt has
	// shown no trace of the guest here for the grace period; a migration in
	// progress has an active (paused) domain or a job here.
	for _, uuid := range hs.Incoming {
		key := "incoming/" + uuid
		active, job, err := o.Domains.State(ctx, uuid)
		if running[uuid] || err != nil || active || job {
			delete(inactiveSince, key)
			continue
		}
		first, ok := inactiveSince[key]
		if !ok {
			inactiveSince[key] = now
			continue
		}
		if now.Sub(first) < o.Grace || !w.stillActive(h) {
			continue
		}
		if err := w.o.Sessions.DropMigration(ctx, h, uuid); err == nil {
			w.o.Log.Info("reconcile: dropped the record of a migration to this host whose guest never arrived", "uuid", uuid)
			w.o.Metrics.Reconciled("release")
			delete(inactiveSince, key)
		}
	}
}

// releaseStopped deletes the keys h holds for d, a domain libvirt shows
// shut off here, and records the stop in its HA intent as the hook would
// have (lease.StopState.JudgeStop): a deliberate stop sets it to stopped,
// a start that failed before the guest ran puts back the intent its claim
// replaced, anything else (crashed, killed by the watchdog) leaves it
// running for HA. It reports whether the keys are settled.
//
// The caller has made sure that no QEMU with d's UUID runs here.
//
// Outcomes:
//   - true: released (or nothing of ours was left); the run's markers go;
//   - false: etcd did not answer: next round.
func (w *Watchdog) releaseStopped(ctx context.Context, h lease.Holder, d lease.DomainStatus, crashed bool) bool {
	st := w.stops()
	kind := lease.StopLost
	if !crashed {
		kind = st.JudgeStop(d.UUID)
	}
	var intent *lease.Intent
	if kind != lease.StopLost {
		cur, err := w.o.Sessions.Intent(ctx, d.UUID)
		if err != nil {
			return false
		}
		switch {
		case cur == nil:
			// Not an HA domain: no intent to record.
		case kind == lease.StopClean:
			in := lease.StoppedIntent(*cur, w.o.Host, time.Now())
			intent = &in
		case kind == lease.StopFailedStart:
			intent, _ = st.PriorIntent(d.UUID, cur.Name, w.o.Host, time.Now())
		}
	}
	n, err := w.o.Sessions.ReleaseStale(ctx, h, d, intent)
	if err != nil {
		return false
	}
	os.Remove(st.Marker("started", d.UUID))
	os.Remove(st.Marker("prior", d.UUID))
	if n > 0 {
		args := []any{"domain", d.Name, "uuid", d.UUID, "keys", n, "crashed", crashed}
		if intent != nil {
			args = append(args, "intent", string(intent.Want))
		}
		w.o.Log.Info("reconcile: released the keys of a domain that is not running here", args...)
		w.o.Metrics.Reconciled("release")
	}
	return true
}

// stops judges this host's stops from the session file and the markers the
// hook and the watchdog leave, as the hook does.
func (w *Watchdog) stops() lease.StopState {
	return lease.StopState{Dir: w.o.StateDir, Host: w.o.Host, BootID: w.o.BootID}
}

// stillActive reports whether h is still the ok session: a reconcile pass
// that began under an older session (or before a fence) must not act.
func (w *Watchdog) stillActive(h lease.Holder) bool {
	cur := w.active.Load()
	return cur != nil && *cur == h
}
