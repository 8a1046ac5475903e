package fence

import (
	"context"
	"errors"
	"hash/fnv"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// HAStore is the part of the lease store the HA restarter uses.
type HAStore interface {
	HAView(ctx context.Context) (lease.HAView, error)
	BeginRestart(ctx context.Context, h lease.Holder, r lease.Restartable, maxRestarts int, window time.Duration) (ok, failed bool, err error)
	NoteRestartFailure(ctx context.Context, uuid, reason string) error
	MarkCrashed(ctx context.Context, uuid, host string, stoppedAt time.Time) (bool, error)
}

// Starter starts a domain through libvirt (whose hook claims it), and
// defines one this host lacks (ha.define_missing).
type Starter interface {
	Start(ctx context.Context, uuid string) error
	Define(ctx context.Context, xml string) error
	// Crashed: the domain is shut off because its QEMU died unasked.
	Crashed(ctx context.Context, uuid string) (bool, error)
}

// HAOptions turns on the HA restarter: guests of lost hosts come back on a
// surviving host, automatically.
type HAOptions struct {
	Store   HAStore
	Starter Starter
	// Interval is how often the intents are read. Default 1s.
	Interval time.Duration
	// Step is how long each candidate waits behind the one before it, so
	// that the first choice has tried (and, if it failed, the next one
	// takes over). Default 3s.
	Step time.Duration
	// MaxRestarts per Window before the intent becomes failed.
	// Defaults 3 per 10 minutes.
	MaxRestarts int
	Window      time.Duration
	// DefineMissing defines the domain from the XML recorded with its
	// intent on a candidate that lacks it (ha.define_missing).
	DefineMissing bool
	// Settle is how long a watchdog that starts with a new session (after
	// a reboot, or a whole-cluster outage) waits before it restarts
	// anything, and how long it leaves each host that comes back within
	// that time to take its own share: otherwise the first host back,
	// alone in the live set, would restart every HA guest. A resumed
	// session, and hosts that come back later, wait for nothing. Default
	// 10s.
	Settle time.Duration
	// MaxStarts is how many restarts this host begins per Interval, so
	// that restarts are spread out in time and hosts that come back later
	// take their share. Default 2.
	MaxStarts int
	// StartTimeout bounds one restart (its bookkeeping in etcd and the
	// start through libvirt). Default 30s.
	StartTimeout time.Duration
}

// withDefaults fills in the defaults documented on HAOptions.
func (o HAOptions) withDefaults() HAOptions {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Step <= 0 {
		o.Step = 3 * time.Second
	}
	if o.MaxRestarts <= 0 {
		o.MaxRestarts = 3
	}
	if o.Window <= 0 {
		o.Window = 10 * time.Minute
	}
	if o.Settle <= 0 {
		o.Settle = 10 * time.Second
	}
	if o.MaxStarts <= 0 {
		o.MaxStarts = 2
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	return o
}

// RestartOrder is the order in which hosts should run uuid after losing its
// host (or when evacuating it): see restartOrder.
func RestartOrder(uuid string, candidates, live []string) []string {
	return restartOrder(uuid, candidates, live)
}

// restartOrder is the order in which hosts should try to restart uuid:
// the intent's candidates (hosts=) in their order, or else every live host
// by rendezvous hash of the UUID, so all watchdogs agree without talking
// and each domain's first choice is spread over the hosts. Hosts not live
// (or draining) are left out.
func restartOrder(uuid string, candidates, live []string) []string {
	if len(candidates) > 0 {
		var out []string
		for _, c := range candidates {
			if slices.Contains(live, c) && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
		return out
	}
	out := slices.Clone(live)
	score := func(h string) uint64 {
		f := fnv.New64a()
		f.Write([]byte(uuid + "/" + h))
		// FNV alone mixes the last bytes poorly: host names that differ
		// only at the end always ranked in the same relative order once
		// one of them was first (host-b first: host-c second, never
		// host-a), so a lost host's guests all went to one survivor.
		// murmur3's finalizer spreads every bit.
		x := f.Sum64()
		x ^= x >> 33
		x *= 0xff51afd7ed558ccd
		x ^= x >> 33
		x *= 0xc4ceb9fe1a85ec53
		x ^= x >> 33
		return x
	}
	sort.Slice(out, func(i, j int) bool { return score(out[i]) > score(out[j]) })
	return out
}

// restarter runs until ctx ends; it acts only while this host's session is
// ok. The claim in the hook stays the only arbiter: two hosts that both try
// a restart cannot both win it.
//
// Order of events that makes this safe: the lost host fenced its guests
// (deadline − margin), then etcd expired its session and its keys, and only
// then does an intent show up here as restartable.
//
// resumed is the session resumed from the session file (0: none): it is
// not new, so neither it nor the hosts live beside it wait to settle.
func (w *Watchdog) restarter(ctx context.Context, o HAOptions, resumed lease.ID) {
	o = o.withDefaults()
	st := newHAState(time.Now)
	st.resumed = resumed
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h := w.active.Load()
		if h == nil || w.shuttingDown() {
			continue
		}
		w.reviveCrashed(ctx, o, *h)
		w.restartOnce(ctx, o, *h, st)
	}
}

// haState is one restarter's memory between rounds.
type haState struct {
	now func() time.Time
	// firstSeen: when a domain was first seen restartable at the rank
	// and intent revision seenAs holds.
	firstSeen map[string]time.Time
	seenAs    map[string]seenAs
	waiting   map[string]bool // "no candidate" already logged
	// failedHere: a restart here failed: leave it to others until then.
	failedHere map[string]time.Time
	// holder is the session the restarter last acted under (zero before
	// the first); joined says since when each live host has been seen
	// live, and settleUntil ends the time in which joins are waited for:
	// Settle after this process's first session, when that one is new.
	holder      lease.Holder
	joined      map[string]time.Time
	settleUntil time.Time
	resumed     lease.ID // the session this process resumed (not new)
}

type seenAs struct {
	rank int
	rev  int64
}

func newHAState(now func() time.Time) *haState {
	return &haState{now: now, firstSeen: map[string]time.Time{}, seenAs: map[string]seenAs{}, waiting: map[string]bool{},
		failedHere: map[string]time.Time{}, joined: map[string]time.Time{}}
}

// noteLive records which hosts are live at now. This process's first
// session, when it is new (not resumed), marks a start after a reboot or a
// whole-cluster outage: every host then counts as just joined, this one
// included, and hosts that join within Settle of it too, so that the hosts
// that come back together share the restarts. Later joins (a host back
// from a partition) are not waited for: the cluster is up, its guests
// should come back at once.
func (st *haState) noteLive(h lease.Holder, live []string, now time.Time, settle time.Duration) {
	if st.holder == (lease.Holder{}) && h.Lease != st.resumed {
		st.settleUntil = now.Add(settle)
		st.joined[h.Host] = now
		for _, x := range live {
			st.joined[x] = now
		}
	}
	st.holder = h
	for _, x := range live {
		if _, ok := st.joined[x]; !ok && now.Before(st.settleUntil) {
			st.joined[x] = now
		}
	}
}

// dueAt is when this host, at rank in order, may restart r: rank × Step
// after the domain was first seen restartable at this rank and intent
// revision, and, for the hosts noteLive counts as just joined, not before
// each one up to this host in order has had Settle (plus the rank steps)
// since it joined, so that a host that came back a little later than the
// first gets its share. A guest whose QEMU crashed (lease.CrashedOn) does
// not wait to settle. A restart another host has just begun (the
// revision changed, its claim has not landed yet) is given at least one
// Step, so that the restart is not counted twice.
func (st *haState) dueAt(o HAOptions, h lease.Holder, r lease.Restartable, order []string, rank int, now time.Time) time.Time {
	if prev, ok := st.seenAs[r.UUID]; !ok || prev != (seenAs{rank, r.Rev}) {
		st.firstSeen[r.UUID], st.seenAs[r.UUID] = now, seenAs{rank, r.Rev}
	}
	wait := time.Duration(rank) * o.Step
	if strings.HasPrefix(r.Intent.Reason, restartingOn) && r.Intent.Reason != restartingOn+h.Host {
		wait = max(wait, o.Step)
	}
	due := st.firstSeen[r.UUID].Add(wait)
	if strings.HasPrefix(r.Intent.Reason, lease.CrashedOnPrefix) {
		// Its QEMU died while its host held a session: the cluster was
		// up, nothing to share out after an outage.
		return due
	}
	for _, x := range order[:rank+1] {
		if j, ok := st.joined[x]; ok {
			if settled := j.Add(o.Settle + time.Duration(rank)*o.Step); settled.After(due) {
				due = settled
			}
		}
	}
	return due
}

// restartingOn prefixes the Reason lease.Store.BeginRestart writes.
const restartingOn = "restarting on "

func (w *Watchdog) restartOnce(ctx context.Context, o HAOptions, h lease.Holder, st *haState) {
	vctx, cancel := context.WithTimeout(ctx, 2*o.Interval+5*time.Second)
	v, err := o.Store.HAView(vctx)
	cancel()
	if err != nil {
		return
	}
	w.o.Metrics.HAIntentsFailed(v.Failed)
	now := st.now()
	st.noteLive(h, v.Live, now, o.Settle)
	seen := map[string]bool{}
	begun := 0
	for _, r := range v.Restartable {
		seen[r.UUID] = true
		order := restartOrder(r.UUID, r.Intent.Candidates, v.Live)
		rank := slices.Index(order, h.Host)
		if len(order) == 0 {
			if !st.waiting[r.UUID] {
				w.o.Log.Warn("HA: no live candidate host to restart the guest on; waiting", "domain", r.Intent.Name, "uuid", r.UUID, "candidates", r.Intent.Candidates)
				st.waiting[r.UUID] = true
			}
			continue
		}
		if rank < 0 {
			continue
		}
		if now.Before(st.dueAt(o, h, r, order, rank, now)) || now.Before(st.failedHere[r.UUID]) || begun >= o.MaxStarts {
			continue
		}
		begun++
		if !w.restartOne(ctx, o, h, r, rank) {
			// Give every other candidate its turn before trying again here.
			st.failedHere[r.UUID] = now.Add(time.Duration(len(order)) * o.Step)
		}
	}
	// Forget domains no longer restartable (running again, or stopped).
	gone := func(u string) bool { return !seen[u] }
	maps.DeleteFunc(st.firstSeen, func(u string, _ time.Time) bool { return gone(u) })
	maps.DeleteFunc(st.seenAs, func(u string, _ seenAs) bool { return gone(u) })
	maps.DeleteFunc(st.waiting, func(u string, _ bool) bool { return gone(u) })
	maps.DeleteFunc(st.failedHere, func(u string, _ time.Time) bool { return gone(u) })
}

// restartOne counts a restart of r in its intent and starts it here, with
// a deadline of its own (a slow start must not leave the next restart of
// the round without time once that one has been counted). It reports
// false when the start failed here: the next candidate's turn.
func (w *Watchdog) restartOne(ctx context.Context, o HAOptions, h lease.Holder, r lease.Restartable, rank int) bool {
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	ok, failed, err := o.Store.BeginRestart(ctx, h, r, o.MaxRestarts, o.Window)
	if err != nil || !ok {
		return true // someone acted, or etcd is slow: look again next round
	}
	if failed {
		w.o.Log.Error("HA: restart limit reached; the intent is now failed (virtlease ha reset DOMAIN retries)", "domain", r.Intent.Name, "uuid", r.UUID)
		return true
	}
	w.o.Log.Warn("HA: restarting a guest whose host was lost", "domain", r.Intent.Name, "uuid", r.UUID, "rank", rank, "restarts", r.Intent.Restarts+1)
	start := time.Now()
	err = o.Starter.Start(ctx, r.UUID)
	if errors.Is(err, ErrNoDomain) && o.DefineMissing && r.Intent.XML != "" {
		w.o.Log.Info("HA: defining the domain here from the XML recorded at its last start", "domain", r.Intent.Name, "uuid", r.UUID)
		if err = o.Starter.Define(ctx, r.Intent.XML); err == nil {
			err = o.Starter.Start(ctx, r.UUID)
		}
	}
	if err != nil {
		w.o.Log.Warn("HA: restart failed here; the next candidate will try", "domain", r.Intent.Name, "err", err.Error())
		o.Store.NoteRestartFailure(ctx, r.UUID, h.Host+": "+err.Error())
		w.o.Metrics.HARestarted(false)
		return false
	}
	w.o.Metrics.HARestarted(true)
	w.o.Log.Info("HA: restarted", "domain", r.Intent.Name, "uuid", r.UUID, "took", time.Since(start).Round(time.Millisecond).String())
	return true
}

// reviveCrashed looks at the HA guests the hook saw stop cleanly here
// (markers under StateDir/stopped, holding the intent's since): when
// libvirt says the QEMU crashed instead, the intent goes back to running,
// and the restarter brings the guest up again like one of a lost host
// (counted against ha.max_restarts). A destroy or a shutdown from inside
// the guest stays a stop. The marker goes once libvirt has answered,
// however late (a crash followed by a long fence or outage still counts),
// or at the guest's next start.
func (w *Watchdog) reviveCrashed(ctx context.Context, o HAOptions, h lease.Holder) {
	dir := filepath.Join(w.o.StateDir, "stopped")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		stoppedAt, err := time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
		if err != nil {
			os.Remove(path) // not a marker the hook wrote
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		crashed, err := o.Starter.Crashed(cctx, e.Name())
		if err == nil && crashed {
			var revived bool
			revived, err = o.Store.MarkCrashed(cctx, e.Name(), h.Host, stoppedAt)
			if revived {
				w.o.Log.Warn("HA: the guest's QEMU crashed here (not a stop anyone asked for): its intent is running again", "uuid", e.Name())
			}
		}
		cancel()
		if err != nil {
			continue // libvirtd or etcd did not answer: look again next round
		}
		os.Remove(path)
	}
}

// shuttingDown reports whether virtlease-shutdown.service marked this host
// as going down: it must not take guests then (the next candidate does).
func (w *Watchdog) shuttingDown() bool {
	_, err := os.Stat(filepath.Join(w.o.StateDir, "shutdown"))
	return err == nil
}
