package fence

import (
	"os"
	"path/filepath"

	"github.com/virtlease/virtlease/lease"
)

// heldMarker is the file in the state directory that says a session was
// held on this boot. The state directory is on a tmpfs (/run), so the
// marker goes with the boot, as the session file does; unlike the session
// file, nothing removes it before the next boot.
const heldMarker = "session-held-this-boot"

// HeldThisBoot reports whether a watchdog held a session on this boot
// (the marker is there).
func HeldThisBoot(stateDir string) bool {
	_, err := os.Stat(filepath.Join(stateDir, heldMarker))
	return err == nil
}

// MarkHeldThisBoot leaves the marker HeldThisBoot looks for.
// Outcomes: nil; the error writing it.
func MarkHeldThisBoot(stateDir string) error {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stateDir, heldMarker), nil, 0o644)
}

// firstStartThisBoot reports whether this process is the first watchdog
// to hold a session on this boot: no session file of this boot, no
// marker. Call it before the first session file is written.
func (w *Watchdog) firstStartThisBoot() bool {
	s, err := lease.ReadSession(w.sessionPath())
	return (err != nil || s.Boot != w.o.BootID) && !HeldThisBoot(w.o.StateDir)
}
