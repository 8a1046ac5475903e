// Package fence is virtlease's watchdog: it holds this host's etcd session
// and kills this host's guests before that session can expire.
//
// The safety relation: etcd deletes a host's keys (and so lets another host
// start its guests) no earlier than the lease's deadline, and the watchdog
// dates that deadline conservatively, from the moment it SENT the last
// renewal that etcd acknowledged, plus the TTL etcd returned. It fences at
// deadline − Margin. So a host cut off from etcd has killed its guests
// Margin before anyone else may start them.
//
// What it assumes (and does not promise):
//   - clocks here and on the etcd leader run at the same rate (skew is
//     fine, drift within the TTL is not);
//   - a kill finishes within Margin (SIGKILL of a QEMU takes milliseconds;
//     a hardware watchdog device covers a hung kill or a dead daemon);
//   - Margin exceeds etcd's election timeout: a deposed leader may still
//     acknowledge one renewal until it steps down (etcd issue 13915).
//
// Without a hardware watchdog device, a watchdog process that dies leaves
// its guests unprotected once the TTL runs out.
package fence

import (
	"fmt"
	"strings"
	"time"
)

// Config is the watchdog's timing. Validate applies the timing rules (README
// "Configuration", docs/safety.md §4).
type Config struct {
	// TTL is the session lease's time to live, whole seconds, ≥ 3s.
	// Another host may start this host's guests no earlier than TTL after
	// the last renewal this host sent. Default 10s.
	TTL time.Duration
	// RenewInterval is the time between renewals, ≤ TTL/3. Default 1s.
	RenewInterval time.Duration
	// Margin is how long before the deadline the watchdog fences:
	// ≥ 2×RenewInterval, ≥ 2s, ≤ TTL − 2×RenewInterval. Default 3s.
	Margin time.Duration
}

// DefaultConfig is TTL 10s, renew 1s, margin 3s: a partitioned host has
// killed its guests ≤ 7s after its last successful renewal; another host
// may start them ≥ 10s after it.
func DefaultConfig() Config {
	return Config{TTL: 10 * time.Second, RenewInterval: time.Second, Margin: 3 * time.Second}
}

// Validate names every timing rule c breaks.
func (c Config) Validate() error {
	var p []string
	if c.TTL < 3*time.Second || c.TTL%time.Second != 0 {
		p = append(p, fmt.Sprintf("session.ttl %v must be whole seconds and at least 3s", c.TTL))
	}
	if c.RenewInterval <= 0 || c.RenewInterval > c.TTL/3 {
		p = append(p, fmt.Sprintf("session.renew_interval %v must be more than 0 and at most ttl/3 (%v)", c.RenewInterval, c.TTL/3))
	}
	if c.Margin < 2*c.RenewInterval || c.Margin < 2*time.Second {
		p = append(p, fmt.Sprintf("fence.margin %v must be at least 2×renew_interval (%v) and at least 2s", c.Margin, 2*c.RenewInterval))
	}
	if c.Margin > c.TTL-2*c.RenewInterval {
		p = append(p, fmt.Sprintf("fence.margin %v must be at most ttl − 2×renew_interval (%v)", c.Margin, c.TTL-2*c.RenewInterval))
	}
	if len(p) > 0 {
		return fmt.Errorf("timing: %s", strings.Join(p, "; "))
	}
	return nil
}

// Deadline is the earliest time etcd may expire the session, on the boot
// clock: the send time of the last acknowledged renewal plus the TTL etcd
// returned with it.
type Deadline struct {
	Sent time.Duration // boot-clock time the renewal (or grant) was sent
	TTL  time.Duration // TTL etcd returned
}

// At is when etcd may expire the lease.
func (d Deadline) At() time.Duration { return d.Sent + d.TTL }

// FenceAt is when the watchdog must have begun killing.
func (d Deadline) FenceAt(margin time.Duration) time.Duration { return d.At() - margin }

// Later returns whichever of d and e expires later: a reply that arrives out
// of order never shortens, nor wrongly lengthens, the deadline.
func (d Deadline) Later(e Deadline) Deadline {
	if e.At() > d.At() {
		return e
	}
	return d
}

// SystemdWatchdog is the shortest WatchdogSec= (systemd's watchdog on the
// loop's WATCHDOG=1) that fits c: longer than a kill round (up to Margin)
// plus 2 × RenewInterval, which may pass between two turns of a loop that
// is working; and, with a hardware watchdog device, longer than the device
// timeout plus RenewInterval. A hung loop must be left to the device:
// systemd's abort closes the device without the magic close, which Linux
// counts as a pet, so a loop that hangs in every restarted process would
// keep the device from ever firing.
func (c Config) SystemdWatchdog(device bool) time.Duration {
	d := c.Margin + 2*c.RenewInterval
	if device {
		d = max(d, c.DeviceTimeout()+c.RenewInterval)
	}
	return d
}

// CheckSystemdWatchdog reports whether systemd's watchdog interval (from
// WATCHDOG_USEC; 0: none) fits c, see SystemdWatchdog.
func (c Config) CheckSystemdWatchdog(interval time.Duration, device bool) error {
	if need := c.SystemdWatchdog(device); interval != 0 && interval < need {
		why := "a kill round (fence.margin) plus 2×session.renew_interval"
		if device {
			why = "the hardware watchdog's timeout (session.ttl − 2×session.renew_interval − 1s) plus session.renew_interval, so that a hung loop is left to the device"
		}
		return fmt.Errorf("systemd WatchdogSec=%v of virtlease-watchdog.service is shorter than %v: it must exceed %s; set WatchdogSec=%v or more in a drop-in (systemctl edit virtlease-watchdog)",
			interval, need, why, need)
	}
	return nil
}
