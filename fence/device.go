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
//
// Linux (drivers/watchdog/watchdog_dev.c) pets a device on more than a
// write, and the watchdog accounts for each:
//   - open starts a stopped device (its count begins then); opening one
//     that is already counting does not pet it;
//   - WDIOC_SETTIMEOUT pets a counting device;
//   - every write pets it, the magic "V" included;
//   - the last close without the magic "V" pets it ("watchdog did not
//     stop!") and leaves it counting: also when the kernel closes it for a
//     process that died (crash, SIGKILL, systemd's watchdog abort);
//   - the last close right after "V" stops it (unless the driver was
//     loaded with nowayout, which nothing in user space can undo).
//
// So the device is opened only when a pet is allowed anyway, or when a
// deadline from the session file is being enforced (then the device
// usually still counts from the previous process, and opening it changes
// nothing); its timeout is set only when it differs.
type Device interface {
	// Open starts using the device: see the rules above. Opening arms a
	// stopped device.
	Open() error
	// Pet restarts the device's countdown. Not open: an error.
	Pet() error
	// Close stops using the device (not open: nothing). disarm writes
	// the magic close character first, so the device stops counting (a
	// clean exit with no guest left); without it the device keeps counting
	// and resets the machine unless a restarted watchdog pets it in time.
	Close(disarm bool) error
}

// DeviceTimeout is the timeout the watchdog sets on its device:
// ttl − 2 × renew_interval − 1 s (7 s by default). Petting stops once the
// last acknowledged renewal is 2 × renew_interval old, so a dead or stuck
// watchdog resets the machine at least 1 s before etcd can expire the
// session.
func (c Config) DeviceTimeout() time.Duration { return c.TTL - 2*c.RenewInterval - time.Second }

// FileDevice is a Linux watchdog device (/dev/watchdog, e.g. softdog), or,
// for the lab, a FIFO read by a supervisor that stands in for one (it knows
// the timeout from the host's config, so no ioctl goes to it).
type FileDevice struct {
	path    string
	timeout time.Duration
	fifo    bool
	f       *os.File
}

// NewDevice checks that path names a character device or a FIFO; it does
// not open it (opening arms it). Never point tests at a real device: a
// test that opens one and stops petting resets the machine.
//
// Outcomes: a device to Open later; an error naming
// fence.hardware_watchdog when path is missing or not a device.
func NewDevice(path string, timeout time.Duration) (*FileDevice, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("fence.hardware_watchdog: %w", err)
	}
	fifo := st.Mode()&os.ModeNamedPipe != 0
	if !fifo && st.Mode()&os.ModeCharDevice == 0 {
		return nil, fmt.Errorf("fence.hardware_watchdog: %s is not a watchdog device", path)
	}
	return &FileDevice{path: path, timeout: timeout, fifo: fifo}, nil
}

// Open opens the device and sets its timeout (whole seconds) unless
// WDIOC_GETTIMEOUT already reports it, since WDIOC_SETTIMEOUT pets it.
//
// Outcomes:
//   - nil: the device is open and counts with the timeout;
//   - an error: the device is closed again. When it was opened but would
//     not take the timeout, the magic close is written first, so the
//     device stops (unless its driver has nowayout): a device left
//     counting with the driver's timeout would reset the machine after
//     every boot, and a process that exits on this error and is restarted
//     re-arms it on every attempt. The caller goes on without the device
//     (loudly), which is what it would do with none configured.
func (d *FileDevice) Open() error {
	if d.f != nil {
		return nil
	}
	if d.fifo {
		return d.openFIFO()
	}
	f, err := os.OpenFile(d.path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("fence.hardware_watchdog: %w", err)
	}
	return d.use(f)
}

// OpenFile is Open on f, a file already open on the device (one an earlier
// watchdog process left in systemd's file descriptor store): nothing is
// opened, so a device that counts is not started again, and it was never
// released, so the kernel never petted it for that process's death.
//
// Outcomes: as Open; an error, with f closed after the magic close, when f
// is not this device (the config changed: the old device is disarmed).
func (d *FileDevice) OpenFile(f *os.File) error {
	if d.f != nil {
		f.Close()
		return nil
	}
	var got, want unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &got); err != nil || unix.Stat(d.path, &want) != nil ||
		got.Mode&unix.S_IFMT != want.Mode&unix.S_IFMT ||
		(d.fifo && (got.Ino != want.Ino || got.Dev != want.Dev)) || (!d.fifo && got.Rdev != want.Rdev) {
		f.Write([]byte("V"))
		f.Close()
		return fmt.Errorf("fence.hardware_watchdog: the device kept from the previous process is not %s: disarmed it", d.path)
	}
	if d.fifo {
		d.f = f
		return nil
	}
	return d.use(f)
}

// use takes f, open on the device, as d's file once its timeout is right.
func (d *FileDevice) use(f *os.File) error {
	secs := int(d.timeout / time.Second)
	fd := int(f.Fd())
	got, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err == nil && got != secs {
		if err = unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, secs); err == nil {
			got, err = unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
		}
	}
	if err != nil || got != secs {
		f.Write([]byte("V"))
		f.Close()
		switch {
		case errors.Is(err, unix.ENOTTY):
			return fmt.Errorf("fence.hardware_watchdog: %s is not a watchdog device", d.path)
		case err != nil:
			return fmt.Errorf("fence.hardware_watchdog: %s: setting the timeout to %ds: %w", d.path, secs, err)
		}
		return fmt.Errorf("fence.hardware_watchdog: %s took timeout %ds, not %ds: refusing a device that could fire after the session expires", d.path, got, secs)
	}
	d.f = f
	return nil
}

// openFIFO opens the lab's stand-in without blocking the fence loop: a
// FIFO's open for writing waits for a reader, so it is opened non-blocking
// and retried for a moment while the supervisor re-opens its end after the
// previous writer's close. (A write would still wait on a full FIFO: 64 KiB
// of pets, hours after the supervisor died.)
func (d *FileDevice) openFIFO() error {
	for try := 0; ; try++ {
		f, err := os.OpenFile(d.path, os.O_WRONLY|unix.O_NONBLOCK, 0)
		if err == nil {
			d.f = f
			return nil
		}
		if !errors.Is(err, unix.ENXIO) || try == 10 {
			return fmt.Errorf("fence.hardware_watchdog: %s: no supervisor reads it: %w", d.path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// File is the open device (nil when not open), to keep in systemd's file
// descriptor store.
func (d *FileDevice) File() *os.File { return d.f }

// Pet restarts the device's countdown.
func (d *FileDevice) Pet() error {
	if d.f == nil {
		return errors.New("petting the hardware watchdog: not open")
	}
	if _, err := d.f.Write([]byte("p")); err != nil {
		return fmt.Errorf("petting the hardware watchdog: %w", err)
	}
	return nil
}

// Close closes the device, disarming it first when asked; a device that
// is not open is left alone.
func (d *FileDevice) Close(disarm bool) error {
	if d.f == nil {
		return nil
	}
	if disarm {
		d.f.Write([]byte("V"))
	}
	err := d.f.Close()
	d.f = nil
	return err
}
