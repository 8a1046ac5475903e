package fence

import (
	"context"
	"errors"
	"hash/fnv"
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
		return f.Sum64()
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
func (w *Watchdog) restarter(ctx context.Context, o HAOptions) {
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
	st := &haState{firstSeen: map[string]time.Time{}, waiting: map[string]bool{}, failedHere: map[string]time.Time{}}
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
	firstSeen  map[string]time.Time // when a domain was first seen restartable
	waiting    map[string]bool      // "no candidate" already logged
	failedHere map[string]time.Time // a restart here failed: leave it to others until then
}

func (w *Watchdog) restartOnce(ctx context.Context, o HAOptions, h lease.Holder, st *haState) {
	firstSeen, waiting := st.firstSeen, st.waiting
	ctx, cancel := context.WithTimeout(ctx, 2*o.Interval+5*time.Second)
	defer cancel()
	v, err := o.Store.HAView(ctx)
	if err != nil {
		return
	}
	now := time.Now()
	seen := map[string]bool{}
	for _, r := range v.Restartable {
		seen[r.UUID] = true
		if _, ok := firstSeen[r.UUID]; !ok {
			firstSeen[r.UUID] = now
		}
		order := restartOrder(r.UUID, r.Intent.Candidates, v.Live)
		rank := slices.Index(order, h.Host)
		if len(order) == 0 {
			if !waiting[r.UUID] {
				w.o.Log.Warn("HA: no live candidate host to restart the guest on; waiting", "domain", r.Intent.Name, "uuid", r.UUID, "candidates", r.Intent.Candidates)
				waiting[r.UUID] = true
			}
			continue
		}
		if rank < 0 || now.Sub(firstSeen[r.UUID]) < time.Duration(rank)*o.Step || now.Before(st.failedHere[r.UUID]) {
			continue
		}
		ok, failed, err := o.Store.BeginRestart(ctx, h, r, o.MaxRestarts, o.Window)
		if err != nil || !ok {
			continue // someone acted, or etcd is slow: look again next round
		}
		if failed {
			w.o.Log.Error("HA: restart limit reached; the intent is now failed (virtlease ha reset DOMAIN retries)", "domain", r.Intent.Name, "uuid", r.UUID)
			continue
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
			// Give every other candidate its turn before trying again here.
			st.failedHere[r.UUID] = now.Add(time.Duration(len(order)) * o.Step)
			w.o.Metrics.HARestarted(false)
			continue
		}
		w.o.Metrics.HARestarted(true)
		w.o.Log.Info("HA: restarted", "domain", r.Intent.Name, "uuid", r.UUID, "took", time.Since(start).Round(time.Millisecond).String())
		delete(firstSeen, r.UUID)
	}
	for u := range firstSeen {
		if !seen[u] {
			delete(firstSeen, u)
			delete(waiting, u)
			delete(st.failedHere, u)
		}
	}
}

// crashedMarkerLife is how long a clean stop's marker is looked at: libvirt
// has settled the shutoff reason long before.
const crashedMarkerLife = 10 * time.Minute

// reviveCrashed looks at the HA guests the hook saw stop cleanly here
// (markers under StateDir/stopped, holding the intent's since): when
// libvirt says the QEMU crashed instead, the intent goes back to running,
// and the restarter brings the guest up again like one of a lost host
// (counted against ha.max_restarts). A destroy or a shutdown from inside
// the guest stays a stop. The marker goes once libvirt has answered.
func (w *Watchdog) reviveCrashed(ctx context.Context, o HAOptions, h lease.Holder) {
	dir := filepath.Join(w.o.StateDir, "stopped")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		info, err := e.Info()
		if err != nil {
			continue
		}
		b, err := os.ReadFile(path)
		stoppedAt, perr := time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
		if err != nil || perr != nil || time.Since(info.ModTime()) > crashedMarkerLife {
			os.Remove(path)
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
