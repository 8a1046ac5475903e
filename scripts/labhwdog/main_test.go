package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDeviceTimeout(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	cfg := "# lab\nhost: host-a\nsession:\n  ttl: 6s\n  renew_interval: 1s\nfence:\n  margin: 2s\n  hardware_watchdog: /run/hwdog.fifo # x\n"
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if d, err := deviceTimeout(p); err != nil || d != 3*time.Second {
		t.Errorf("deviceTimeout = %s, %v; want 3s", d, err)
	}
	os.WriteFile(p, []byte("host: x\n"), 0o644)
	if d, err := deviceTimeout(p); err != nil || d != 7*time.Second {
		t.Errorf("defaults: deviceTimeout = %s, %v; want 7s (ttl 10s, renew 1s)", d, err)
	}
}

// fakeDev records resets.
func fakeDev(timeout time.Duration) (*device, func() int) {
	var mu sync.Mutex
	n := 0
	d := &device{timeout: timeout, reset: func(string) { mu.Lock(); n++; mu.Unlock() }}
	go d.countdown()
	return d, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func TestDeviceSemantics(t *testing.T) {
	// petted in time: no reset; the magic close disarms it.
	d, resets := fakeDev(150 * time.Millisecond)
	d.opened()
	r, w := io.Pipe()
	go d.read(r)
	for i := 0; i < 6; i++ {
		time.Sleep(50 * time.Millisecond)
		w.Write([]byte("p"))
	}
	w.Write([]byte("V"))
	w.Close()
	time.Sleep(300 * time.Millisecond)
	if n := resets(); n != 0 {
		t.Fatalf("petted, then closed with the magic V: %d reset(s)", n)
	}

	// closed without the magic close: it keeps counting and resets, once.
	d, resets = fakeDev(150 * time.Millisecond)
	d.opened()
	d.read(strings.NewReader("pp"))
	time.Sleep(400 * time.Millisecond)
	if n := resets(); n != 1 {
		t.Fatalf("closed without V: %d reset(s), want 1", n)
	}

	// "V" followed by more bytes is no magic close.
	d, resets = fakeDev(150 * time.Millisecond)
	d.opened()
	d.read(strings.NewReader("Vp"))
	time.Sleep(400 * time.Millisecond)
	if n := resets(); n != 1 {
		t.Fatalf("V then p, closed: %d reset(s), want 1", n)
	}

	// Opening a device that still counts does not pet it: a watchdog
	// restarted every 100 ms without petting does not stop a reset.
	d, _ = fakeDev(300 * time.Millisecond)
	d.opened()
	d.read(strings.NewReader("p"))
	d.mu.Lock()
	released := d.lastPet
	d.mu.Unlock()
	d.opened()
	d.mu.Lock()
	again := d.lastPet
	d.mu.Unlock()
	if !again.Equal(released) {
		t.Fatalf("opening a counting device moved its countdown from %v to %v", released, again)
	}
	d.read(strings.NewReader(""))
	d.mu.Lock()
	closed := d.lastPet
	d.mu.Unlock()
	if !closed.After(released) {
		t.Fatal("a close without V did not restart the countdown (Linux pets on release)")
	}

	// never opened: never fires.
	_, resets = fakeDev(50 * time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	if n := resets(); n != 0 {
		t.Fatalf("never opened: %d reset(s)", n)
	}
}
