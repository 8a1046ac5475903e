package lease

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// StopKind is what a stop of an HA guest on this host means for its intent.
type StopKind int

const (
	// StopLost: the watchdog killed the guest (fence, reconcile, recover),
	// the host is going down for failover, or the stop cannot be told
	// apart from those. The intent stays running: HA restarts the guest.
	StopLost StopKind = iota
	// StopClean: the operator or the guest itself stopped it (virsh
	// shutdown or destroy, a power-off inside). The intent becomes stopped.
	StopClean
	// StopFailedStart: this host's prepare claimed the guest (writing
	// want: running) but its QEMU never reached `started begin`. The
	// intent goes back to what it was before that claim, so that a start
	// that failed here is not HA-restarted elsewhere; when the failed
	// start was itself an HA restart, that was running, and the next
	// candidate tries.
	StopFailedStart
)

// StopState is the local state a stop is judged from: the session file
// and the per-domain markers under the state directory (/run/virtlease, a
// tmpfs: nothing survives a reboot).
type StopState struct {
	Dir    string // the state directory
	Host   string // this host's name
	BootID string // this boot's ID
}

// Marker returns the path of a per-domain marker: kind is "started"
// (`started begin` was seen), "killed" (the watchdog killed it), "stopped"
// (a clean stop wrote this intent since), "prior" (the intent a prepare's
// claim replaced), and so on.
func (st StopState) Marker(kind, uuid string) string {
	return filepath.Join(st.Dir, kind, uuid)
}

// JudgeStop decides what the stop of guest uuid here means for its HA
// intent. The hook's release and the watchdog's reconcile (which releases
// the keys of a stop whose hook could not reach etcd) both decide with it,
// from local state only, so they always agree.
//
// Outcomes:
//   - StopLost: the session file is missing, from another boot or host, or
//     fencing; or a kill marker of the watchdog exists; or the host is
//     shutting down with ha.on_shutdown: failover;
//   - StopFailedStart: none of the above, no started marker, and a prior
//     marker left by this run's prepare;
//   - StopClean: none of the above and the started marker exists;
//   - StopLost otherwise (no marker at all: nothing is known about the run).
//
// A session that is stopped (watchdog away), orphaned or past its
// deadline does not make a stop less clean: the stopped intent is written
// only in the Txn that deletes this host's domain key on this host's lease
// (Store.Release), so it cannot land once the session has expired and
// another host may run the guest.
func (st StopState) JudgeStop(uuid string) StopKind {
	s, err := ReadSession(filepath.Join(st.Dir, "session"))
	if err != nil || s.Host != st.Host || s.Boot != st.BootID || s.Lease == 0 || s.State == SessionFencing {
		return StopLost
	}
	if exists(st.Marker("killed", uuid)) {
		return StopLost
	}
	// The host is shutting down with ha.on_shutdown: failover: the stops
	// libvirt-guests makes now are not the operator's will for the guest.
	if b, err := os.ReadFile(filepath.Join(st.Dir, "shutdown")); err == nil && strings.TrimSpace(string(b)) == "failover" {
		return StopLost
	}
	switch {
	case exists(st.Marker("started", uuid)):
		return StopClean
	case exists(st.Marker("prior", uuid)):
		return StopFailedStart
	}
	return StopLost
}

// StoppedIntent is in with want stopped, as a clean stop on host at now
// records it.
func StoppedIntent(in Intent, host string, now time.Time) Intent {
	in.Want, in.Reason, in.Since = WantStopped, StoppedBy(host), now.UTC().Truncate(time.Second)
	return in
}

// WritePrior records, for uuid, the intent a prepare's claim is replacing
// (nil: there was none), so that a start that fails before the guest runs
// can put it back (StopFailedStart).
func (st StopState) WritePrior(uuid string, prior *Intent) error {
	b, err := json.Marshal(prior)
	if err != nil {
		return err
	}
	p := st.Marker("prior", uuid)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o644)
}

// PriorIntent is the intent to write back after a start of uuid that
// failed before the guest ran: the one WritePrior recorded, or, when the
// domain had none, want stopped (the start was its first as an HA domain,
// and it did not run). ok is false when no prior marker exists.
func (st StopState) PriorIntent(uuid, name, host string, now time.Time) (in *Intent, ok bool) {
	b, err := os.ReadFile(st.Marker("prior", uuid))
	if err != nil {
		return nil, false
	}
	var prior *Intent
	if json.Unmarshal(b, &prior) != nil || prior == nil {
		stopped := Intent{Want: WantStopped, Name: name, Reason: "start on " + host + " failed before the guest ran", Since: now.UTC().Truncate(time.Second)}
		return &stopped, true
	}
	return prior, true
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
