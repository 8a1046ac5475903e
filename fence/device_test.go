package fence

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Never a real device here: opening one arms it.
func TestNewDevice(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "not-a-watchdog")
	os.WriteFile(plain, nil, 0o644)
	if _, err := NewDevice(plain, 7*time.Second); err == nil || !strings.Contains(err.Error(), "not a watchdog device") {
		t.Fatalf("regular file: want 'not a watchdog device', got %v", err)
	}
	if _, err := NewDevice(filepath.Join(dir, "missing"), 7*time.Second); err == nil || !strings.Contains(err.Error(), "fence.hardware_watchdog") {
		t.Fatalf("missing file: %v", err)
	}
	// A character device that is no watchdog: the ioctl fails, the
	// device is closed again and Open says why.
	d, err := NewDevice("/dev/null", 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Open(); err == nil || !strings.Contains(err.Error(), "not a watchdog device") {
		t.Fatalf("/dev/null: want 'not a watchdog device', got %v", err)
	}
	if d.f != nil {
		t.Fatal("/dev/null left open after a failed Open")
	}
}

// The lab's stand-in: a FIFO read by a supervisor. NewDevice does not open
// it (opening arms a device); Open does.
func TestFIFODevice(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d, err := NewDevice(fifo, 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// No reader: Open fails at once rather than block the fence loop.
	lone := filepath.Join(t.TempDir(), "lone")
	syscall.Mkfifo(lone, 0o600)
	if ld, err := NewDevice(lone, 7*time.Second); err != nil || ld.Open() == nil {
		t.Fatalf("a FIFO nobody reads: NewDevice %v, Open succeeded", err)
	}
	if err := d.Pet(); err == nil {
		t.Fatal("Pet before Open succeeded")
	}
	if err := d.Close(true); err != nil {
		t.Fatalf("Close before Open: %v", err)
	}
	if err := d.Open(); err != nil {
		t.Fatal(err)
	}
	d.Pet()
	d.Close(true)
	buf := make([]byte, 8)
	n, _ := r.Read(buf)
	if got := string(buf[:n]); got != "pV" {
		t.Fatalf("supervisor read %q, want a pet then the magic close", got)
	}
}

func TestDeviceTimeout(t *testing.T) {
	if got := DefaultConfig().DeviceTimeout(); got != 7*time.Second {
		t.Fatalf("default device timeout %v, want 7s (ttl − 2×renew − 1s)", got)
	}
}

func TestCheckSystemdWatchdog(t *testing.T) {
	def := DefaultConfig()
	long := Config{TTL: 30 * time.Second, RenewInterval: time.Second, Margin: 3 * time.Second}
	cases := []struct {
		name     string
		c        Config
		interval time.Duration
		device   bool
		ok       bool
	}{
		{"not under systemd", def, 0, true, true},
		{"unit default, device", def, 10 * time.Second, true, true},
		{"old unit's 5s, device", def, 5 * time.Second, true, false},
		{"old unit's 5s, no device", def, 5 * time.Second, false, true},
		{"just the device timeout, device", def, 7 * time.Second, true, false},
		{"below a kill round, no device", def, 4 * time.Second, false, false},
		{"ttl 30s, unit default, device", long, 10 * time.Second, true, false},
		{"ttl 30s, 28s, device", long, 28 * time.Second, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.CheckSystemdWatchdog(tc.interval, tc.device)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckSystemdWatchdog(%v, device %v) = %v, want ok %v", tc.interval, tc.device, err, tc.ok)
			}
		})
	}
}

// The unit's WatchdogSec fits the default timings with a device.
func TestUnitWatchdogSec(t *testing.T) {
	if err := DefaultConfig().CheckSystemdWatchdog(unitSetting(t, "WatchdogSec"), true); err != nil {
		t.Fatal(err)
	}
}
