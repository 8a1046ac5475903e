package lease

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSessionFile is where the watchdog publishes this host's session for
// the hook.
const DefaultSessionFile = "/run/virtlease/session"

// SessionState is what the watchdog is doing with the session.
type SessionState string

// The states of a session file.
const (
	SessionOK      SessionState = "ok"
	SessionFencing SessionState = "fencing"
	// SessionStopped: the watchdog exited and kept the lease for a
	// restart; no new guest may start until it is back.
	SessionStopped SessionState = "stopped"
	// SessionOrphaned: the watchdog exited with guests running and could
	// not record them as unfenced; its return fences at the old deadline.
	SessionOrphaned SessionState = "orphaned"
)

// Session is the content of /run/virtlease/session, rewritten atomically
// by the watchdog after every acknowledged renewal. The hook never grants a
// lease: it trusts this file, and only while it proves the watchdog could
// still fence this host before the lease can expire.
type Session struct {
	Host  string `json:"host"`
	Lease ID     `json:"lease"`
	Boot  string `json:"boot_id"`
	// Deadline is the earliest moment etcd may expire the lease, in
	// CLOCK_BOOTTIME nanoseconds: the send time of the last acknowledged
	// renewal plus the TTL etcd returned.
	Deadline int64 `json:"deadline"`
	// FenceAt is when the watchdog begins to kill (deadline − its own
	// margin), in the same clock. The hook refuses from the earlier of
	// this and deadline − its own margin, so a margin edited in the
	// config without a watchdog restart cannot let a start through after
	// the watchdog began fencing. 0 in files written before it existed.
	FenceAt int64        `json:"fence_at,omitempty"`
	State   SessionState `json:"state"`
}

// ErrNoLiveSession is the hook's refusal when the watchdog cannot vouch for
// this host. The message is written for the operator reading virsh's error.
var ErrNoLiveSession = errors.New("no live virtlease session on this host: is virtlease-watchdog running?")

// Holder returns the session's host and lease.
func (s Session) Holder() Holder { return Holder{Host: s.Host, Lease: s.Lease} }

// Live reports whether guests may start under s at boot-clock time now:
// state ok, same boot, and now before the fence point: deadline − margin,
// or the watchdog's own FenceAt when that is earlier (so that the
// watchdog, which fences there, has not begun to).
func (s Session) Live(now time.Duration, bootID string, margin time.Duration) error {
	fenceAt := s.Deadline - int64(margin)
	if s.FenceAt != 0 {
		fenceAt = min(fenceAt, s.FenceAt)
	}
	switch {
	case s.State == SessionFencing:
		return fmt.Errorf("%w (the watchdog is fencing this host: it lost contact with etcd)", ErrNoLiveSession)
	case s.State != SessionOK:
		return fmt.Errorf("%w (session state %q)", ErrNoLiveSession, s.State)
	case s.Boot != bootID:
		return fmt.Errorf("%w (the session file is from an earlier boot)", ErrNoLiveSession)
	case int64(now) >= fenceAt:
		return fmt.Errorf("%w (its last renewal is too old: %s past the fence point)", ErrNoLiveSession,
			(now - time.Duration(fenceAt)).Round(time.Millisecond))
	}
	return nil
}

// WriteSession replaces path with s atomically (write a temporary file,
// rename), so a reader never sees half a file.
func WriteSession(path string, s Session) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("session file: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("session file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".session-*")
	if err != nil {
		return fmt.Errorf("session file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("session file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("session file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("session file %s: %w", path, err)
	}
	return nil
}

// ReadSession reads the session file at path. A missing file is
// ErrNoLiveSession: no watchdog has run on this boot (/run is a tmpfs).
func ReadSession(path string) (Session, error) {
	var s Session
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("%w (no %s)", ErrNoLiveSession, path)
	}
	if err != nil {
		return s, fmt.Errorf("session file: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%w (%s is unreadable: %v)", ErrNoLiveSession, path, err)
	}
	return s, nil
}

// BootNow reads CLOCK_BOOTTIME: monotonic, and unlike Go's monotonic clock
// it keeps counting while the machine is suspended, as etcd's clock does.
func BootNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		// CLOCK_BOOTTIME exists on every Linux since 2.6.39.
		panic("lease: CLOCK_BOOTTIME: " + err.Error())
	}
	return time.Duration(ts.Nano())
}

// BootID returns this boot's ID, so that a session file left from an earlier
// boot is never trusted.
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("reading this boot's ID: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
