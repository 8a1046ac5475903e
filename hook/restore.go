package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// A saved state (virsh managedsave, libvirt-guests' ON_SHUTDOWN=suspend,
// virsh save) holds the guest's memory at the end of one run. libvirt runs
// `restore begin` before the `prepare begin` of a restore (observed with
// libvirt 9.0: restore begin, prepare begin, start begin, started begin),
// and never for a fresh boot. Restoring is safe only when nobody started
// the guest anywhere since that run (lease.CheckRestore). The hook keeps,
// per domain, the run its last start on this host recorded in etcd
// (Config.RunsDir, on disk: a saved state survives a reboot); restore begin
// compares it with etcd's record, and the prepare that follows compares it
// again in its claim's own Txn, so a start elsewhere between the two calls
// cannot slip through.

// restoringTTL bounds how long after restore begin its marker counts:
// libvirt runs the restore's prepare right after, so an older marker is the
// leftover of a restore that failed in between.
const restoringTTL = 60 * time.Second

// restoring is what restore begin leaves for the prepare that follows.
type restoring struct {
	Mine *lease.Run `json:"mine"`
}

// restore runs before libvirt restores a saved state of the domain. It
// fails closed, like prepare: a stale state restored is silent corruption,
// while a refused restore costs the guest's memory at worst (the operator
// discards the saved state and the guest boots from its disks).
//
// Outcomes:
//   - nil (exit 0) when the domain opted out (mode off), or etcd records no
//     start of it, or its last start is this host's run the hook recorded;
//     the restore's prepare then claims as usual, checking once more;
//   - *lease.RestoreError (exit 1) when another host started it since, or
//     this host cannot tell which of its runs the state comes from;
//   - exit 3 when etcd did not answer, exit 2 for bad XML or config.
//
// It never writes to stdout: libvirt takes the hook's stdout on restore as
// a replacement domain XML.
func (h *Hook) restore(ctx context.Context, stdin io.Reader) error {
	dom, err := readDomain(stdin)
	if err != nil {
		return &Error{Code: ExitUsage, Err: err}
	}
	if dom.Mode == ModeOff {
		return nil
	}
	mine := h.lastRun(dom.UUID)
	claims, err := h.Connect(ctx)
	if err != nil {
		return &Error{Code: ExitUsage, Err: err}
	}
	last, err := claims.LastRun(ctx, dom.UUID)
	if err != nil {
		if errors.Is(err, lease.ErrUnavailable) {
			return fmt.Errorf("cannot restore %s: etcd did not answer, so this host cannot tell whether another started it since it was saved: %w", dom.Name, err)
		}
		return fmt.Errorf("cannot restore %s: %w", dom.Name, err)
	}
	if err := lease.CheckRestore(dom.Name, h.Config.Host, last, mine); err != nil {
		return err
	}
	b, _ := json.Marshal(restoring{Mine: mine})
	writeMarker(h.marker("restoring", dom.UUID), string(b))
	return nil
}

// takeRestoring returns the restore check for the prepare of domain uuid
// when restore begin just allowed one, and removes the marker: only this
// prepare may use it.
func (h *Hook) takeRestoring(uuid string) *lease.Restore {
	p := h.marker("restoring", uuid)
	st, err := os.Stat(p)
	if err != nil {
		return nil
	}
	defer os.Remove(p)
	if time.Since(st.ModTime()) > restoringTTL {
		return nil
	}
	b, err := os.ReadFile(p)
	var r restoring
	if err != nil || json.Unmarshal(b, &r) != nil {
		// Unreadable: check as if this host knew no run of it (refused
		// unless etcd records no start either).
		return &lease.Restore{}
	}
	return &lease.Restore{Mine: r.Mine}
}

// checkNoSavedState refuses a start that is not a restore while this host
// keeps a managed save of the domain. libvirt consumes that state on a
// plain start (restores it) and deletes it on --force-boot, but an incoming
// live migration, or virsh create, starts the guest and keeps it (seen in
// the lab with libvirt 9.0): the next virsh start here would restore
// memory older than the disk this run is about to write, and this run's
// own start would vouch for it.
//
// Outcomes: nil when no such state exists (or Config.SaveDir is ""); an
// *Error with ExitRefused naming the file and what to do otherwise.
func (h *Hook) checkNoSavedState(dom Domain) error {
	p, ok := h.savedState(dom)
	if !ok {
		return nil
	}
	return &Error{Code: ExitRefused, Err: fmt.Errorf("refusing to start %s here: this host keeps a saved state of it from an earlier run (%s), which a later virsh start would restore over the disks this run writes; `virsh managedsave-remove %s` discards it (its memory only; the disks stay), then try again",
		dom.Name, p, dom.Name)}
}

// savedState returns the path of libvirt's managed save of dom on this
// host, and whether there is one.
func (h *Hook) savedState(dom Domain) (string, bool) {
	if h.Config.SaveDir == "" {
		return "", false
	}
	p := filepath.Join(h.Config.SaveDir, dom.Name+".save")
	_, err := os.Stat(p)
	return p, err == nil
}

// runPath is where this host keeps the run its last start of uuid got.
func (h *Hook) runPath(uuid string) string {
	return filepath.Join(h.Config.RunsDir, uuid)
}

// lastRun reads the run this host's last start of uuid recorded; nil when
// there is none or it cannot be read (then only a domain etcd has no record
// of may be restored).
func (h *Hook) lastRun(uuid string) *lease.Run {
	if h.Config.RunsDir == "" {
		return nil
	}
	b, err := os.ReadFile(h.runPath(uuid))
	if err != nil {
		return nil
	}
	var r lease.Run
	if json.Unmarshal(b, &r) != nil || r.Host != h.Config.Host {
		return nil
	}
	return &r
}

// rememberRun keeps the run this host's start of uuid recorded, durably:
// the state saved at the end of this run may be restored after a reboot.
// On failure it removes the old record (a restore is then refused rather
// than checked against an older run); the start goes on either way.
func (h *Hook) rememberRun(uuid string, r *lease.Run) {
	if h.Config.RunsDir == "" || r == nil {
		return
	}
	p := h.runPath(uuid)
	if err := writeDurable(p, encodeRun(*r)); err != nil {
		os.Remove(p)
	}
}

func encodeRun(r lease.Run) []byte {
	b, _ := json.Marshal(r)
	return append(b, '\n')
}

// writeDurable replaces path with b so that a crash leaves the old or the
// new content, and the new one once it returns nil.
func writeDurable(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".run-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
