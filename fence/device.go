package fence

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Device is a hardware watchdog: unless petted within its timeout it resets
// the machine. It covers what the watchdog process cannot: its own death or
// hang, and a guest that survives SIGKILL.
type Device interface {
	Pet() error
	// Close stops using the device. disarm writes the magic close
	// character first, so the device stops counting (a clean exit with no
	// guest left); without it the device keeps counting and resets the
	// machine unless a restarted watchdog pets it in time.
	Close(disarm bool) error
}

// DeviceTimeout is the timeout the watchdog sets on its device:
// ttl − 2 × renew_interval − 1 s (7 s by default). Petting stops once the
// last acknowledged renewal is 2 × renew_interval old, so a dead or stuck
// watchdog resets the machine at least 1 s before etcd can expire the
// session.
func (c Config) DeviceTimeout() time.Duration { return c.TTL - 2*c.RenewInterval - time.Second }

// FileDevice is a Linux watchdog device (/dev/watchdog, e.g. softdog), or,
// for the lab, a FIFO read by a supervisor that stands in for one.
type FileDevice struct {
	f    *os.File
	fifo bool
}

// OpenDevice opens path and sets its timeout, refusing a device that does
// not take it exactly (whole seconds). Never point tests at a real device:
// opening one arms it, and a test that stops petting resets the machine.
func OpenDevice(path string, timeout time.Duration) (*FileDevice, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("fence.hardware_watchdog: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("fence.hardware_watchdog: %w", err)
	}
	if st.Mode()&os.ModeNamedPipe != 0 {
		return &FileDevice{f: f, fifo: true}, nil
	}
	secs := int(timeout / time.Second)
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.WDIOC_SETTIMEOUT, secs); err != nil {
		f.Close()
		if errors.Is(err, unix.ENOTTY) {
			return nil, fmt.Errorf("fence.hardware_watchdog: %s is not a watchdog device", path)
		}
		return nil, fmt.Errorf("fence.hardware_watchdog: %s: setting the timeout to %ds: %w", path, secs, err)
	}
	got, err := unix.IoctlGetInt(int(f.Fd()), unix.WDIOC_GETTIMEOUT)
	if err != nil || got != secs {
		f.Write([]byte("V"))
		f.Close()
		return nil, fmt.Errorf("fence.hardware_watchdog: %s took timeout %ds, not %ds: refusing a device that could fire after the session expires", path, got, secs)
	}
	return &FileDevice{f: f}, nil
}

// Pet restarts the device's countdown.
func (d *FileDevice) Pet() error {
	if _, err := d.f.Write([]byte("p")); err != nil {
		return fmt.Errorf("petting the hardware watchdog: %w", err)
	}
	return nil
}

// Close closes the device, disarming it first when asked.
func (d *FileDevice) Close(disarm bool) error {
	if disarm {
		d.f.Write([]byte("V"))
	}
	return d.f.Close()
}
