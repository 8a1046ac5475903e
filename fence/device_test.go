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
func TestOpenDevice(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "not-a-watchdog")
	os.WriteFile(plain, nil, 0o644)
	if _, err := OpenDevice(plain, 7*time.Second); err == nil || !strings.Contains(err.Error(), "not a watchdog device") {
		t.Fatalf("regular file: want 'not a watchdog device', got %v", err)
	}
	if _, err := OpenDevice(filepath.Join(dir, "missing"), 7*time.Second); err == nil || !strings.Contains(err.Error(), "fence.hardware_watchdog") {
		t.Fatalf("missing file: %v", err)
	}
	// The lab's stand-in: a FIFO read by a supervisor.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d, err := OpenDevice(fifo, 7*time.Second)
	if err != nil {
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
