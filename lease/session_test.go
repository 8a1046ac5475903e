package lease

import (
	"errors"
	"testing"
	"time"
)

// TestSessionLive pins which session files let a guest start. The fence
// point the watchdog wrote binds the hook even when the hook's own config
// has a smaller margin (edited without restarting the watchdog): the hook
// must never start a guest after the moment the watchdog begins to kill.
func TestSessionLive(t *testing.T) {
	const s = time.Second
	base := Session{Host: "host-a", Lease: 7, Boot: "boot-1", Deadline: int64(10 * s), State: SessionOK}
	with := func(f func(*Session)) Session { c := base; f(&c); return c }
	tests := []struct {
		name   string
		s      Session
		now    time.Duration
		margin time.Duration
		ok     bool
	}{
		{"ok, before the fence point", base, 6 * s, 3 * s, true},
		{"at the hook's fence point", base, 7 * s, 3 * s, false},
		{"fencing", with(func(c *Session) { c.State = SessionFencing }), 1 * s, 3 * s, false},
		{"stopped", with(func(c *Session) { c.State = SessionStopped }), 1 * s, 3 * s, false},
		{"earlier boot", with(func(c *Session) { c.Boot = "boot-0" }), 1 * s, 3 * s, false},
		{"watchdog's fence point earlier than the hook's margin says",
			with(func(c *Session) { c.FenceAt = int64(5 * s) }), 6 * s, 3 * s, false},
		{"watchdog's fence point later than the hook's margin says: the hook's binds",
			with(func(c *Session) { c.FenceAt = int64(8 * s) }), 7500 * time.Millisecond, 3 * s, false},
		{"before both fence points", with(func(c *Session) { c.FenceAt = int64(5 * s) }), 4 * s, 3 * s, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Live(tt.now, "boot-1", tt.margin)
			if (err == nil) != tt.ok {
				t.Fatalf("Live at %v = %v, want ok=%v", tt.now, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrNoLiveSession) {
				t.Fatalf("Live error %v does not wrap ErrNoLiveSession", err)
			}
		})
	}
}
