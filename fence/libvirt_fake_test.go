package fence

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseLibvirtURI(t *testing.T) {
	cases := []struct {
		uri, sock string // sock: the sockets tried, in order, space-separated
		ok        bool
	}{
		{"", "/run/libvirt/virtqemud-sock /run/libvirt/libvirt-sock", true},
		{"qemu:///system", "/run/libvirt/virtqemud-sock /run/libvirt/libvirt-sock", true},
		{"qemu+unix:///system", "/run/libvirt/virtqemud-sock /run/libvirt/libvirt-sock", true},
		{"qemu+unix:///system?socket=/srv/lab/host-a/run/libvirt/libvirt-sock", "/srv/lab/host-a/run/libvirt/libvirt-sock", true},
		{"qemu:///system?socket=/x/libvirt-sock", "/x/libvirt-sock", true},
		{"qemu:///session", "", false},
		{"qemu+ssh://host-b/system", "", false},
		{"qemu+tcp://127.0.0.1/system", "", false},
		{"xen:///system", "", false},
		{"qemu+unix:///system?sock=/x", "", false},              // misspelt: never fall back to the default socket
		{"qemu+unix:///system?socket=relative/sock", "", false}, // relative to what?
		{"qemu+unix:///system?socket=", "", false},
		{"::", "", false},
	}
	for _, c := range cases {
		socks, remote, err := parseLibvirtURI(c.uri)
		sock := strings.Join(socks, " ")
		if (err == nil) != c.ok || sock != c.sock {
			t.Errorf("parseLibvirtURI(%q) = %q, %q, %v; want %q, ok %v", c.uri, sock, remote, err, c.sock, c.ok)
		}
		if err == nil && remote != "qemu:///system" {
			t.Errorf("parseLibvirtURI(%q) opens %q, want qemu:///system", c.uri, remote)
		}
		if dir, err := LibvirtRunDir(c.uri); err == nil && dir != filepath.Dir(socks[0]) {
			t.Errorf("LibvirtRunDir(%q) = %q, want %q", c.uri, dir, filepath.Dir(socks[0]))
		}
		if err != nil && !strings.Contains(err.Error(), "qemu+unix:///system?socket=PATH") {
			t.Errorf("parseLibvirtURI(%q) error does not say what is wanted: %v", c.uri, err)
		}
	}
}

// fakeLibvirtd listens on a unix socket and speaks just enough of libvirt's
// RPC protocol: with handshake it answers auth-list and connect-open, and
// nothing else ever (a libvirtd that hangs after the handshake); without, it
// answers nothing at all.
type fakeLibvirtd struct {
	sock      string
	handshake bool

	mu    sync.Mutex
	conns int // accepted
	open  int // not yet closed by the client
}

func newFakeLibvirtd(t *testing.T, handshake bool) *fakeLibvirtd {
	t.Helper()
	return newFakeLibvirtdAt(t, filepath.Join(t.TempDir(), "libvirt-sock"), handshake)
}

// newFakeLibvirtdAt is newFakeLibvirtd listening on sock.
func newFakeLibvirtdAt(t *testing.T, sock string, handshake bool) *fakeLibvirtd {
	t.Helper()
	f := &fakeLibvirtd{sock: sock, handshake: handshake}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range accepted {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
			f.mu.Lock()
			f.conns++
			f.open++
			f.mu.Unlock()
			wg.Go(func() { f.serve(c) })
		}
	})
	return f
}

func (f *fakeLibvirtd) counts() (conns, open int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns, f.open
}

func (f *fakeLibvirtd) serve(c net.Conn) {
	defer func() {
		f.mu.Lock()
		f.open--
		f.mu.Unlock()
	}()
	for {
		var n uint32
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		pkt := make([]byte, n-4)
		if _, err := io.ReadFull(c, pkt); err != nil {
			return
		}
		program, proc, serial := pkt[0:4], binary.BigEndian.Uint32(pkt[8:12]), pkt[16:20]
		var payload []byte
		switch {
		case !f.handshake:
			continue
		case proc == 66: // auth-list: [none]
			payload = []byte{0, 0, 0, 1, 0, 0, 0, 0}
		case proc == 1: // connect-open
		default:
			continue // hang
		}
		reply := binary.BigEndian.AppendUint32(nil, uint32(28+len(payload)))
		reply = append(reply, program...)
		reply = binary.BigEndian.AppendUint32(reply, 1) // version
		reply = binary.BigEndian.AppendUint32(reply, proc)
		reply = binary.BigEndian.AppendUint32(reply, 1) // reply
		reply = append(reply, serial...)
		reply = binary.BigEndian.AppendUint32(reply, 0) // ok
		reply = append(reply, payload...)
		if _, err := c.Write(reply); err != nil {
			return
		}
	}
}

// within fails the test unless fn returns within limit.
func within(t *testing.T, limit time.Duration, what string, fn func()) {
	t.Helper()
	start := time.Now()
	fn()
	if took := time.Since(start); took > limit {
		t.Errorf("%s took %v, want at most %v", what, took, limit)
	}
}

func TestDialLibvirtNoDaemon(t *testing.T) {
	uri := "qemu+unix:///system?socket=" + filepath.Join(t.TempDir(), "libvirt-sock")
	_, err := DialLibvirt(context.Background(), uri)
	if err == nil || !strings.Contains(err.Error(), "is libvirtd running?") {
		t.Errorf("DialLibvirt with no daemon: %v", err)
	}
}

// TestLibvirtDaemonSocket: qemu:///system talks to virtqemud when its socket
// exists (a modular host need not run virtproxyd, so libvirt-sock may be
// missing), else to libvirtd, picked again at every dial; with neither, one
// line names both paths.
func TestLibvirtDaemonSocket(t *testing.T) {
	cases := []struct {
		name    string
		present []string // fake daemons listening, by socket name
		want    string   // socket dialled, "" for an error
	}{
		{"monolithic", []string{"libvirt-sock"}, "libvirt-sock"},
		{"modular without virtproxyd", []string{"virtqemud-sock"}, "virtqemud-sock"},
		{"modular with virtproxyd", []string{"virtqemud-sock", "libvirt-sock"}, "virtqemud-sock"},
		{"none", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fakes := map[string]*fakeLibvirtd{}
			for _, p := range c.present {
				fakes[p] = newFakeLibvirtdAt(t, filepath.Join(dir, p), true)
			}
			l, err := NewLibvirt("")
			if err != nil {
				t.Fatal(err)
			}
			l.sockets = systemSockets(dir)
			var logs strings.Builder
			l.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
			defer l.Close()
			c0, err := l.acquire(t.Context())
			if c.want == "" {
				want := []string{filepath.Join(dir, "virtqemud-sock") + " (virtqemud)", filepath.Join(dir, "libvirt-sock") + " (libvirtd)"}
				if err == nil || !strings.Contains(err.Error(), want[0]) || !strings.Contains(err.Error(), want[1]) {
					t.Fatalf("acquire with no daemon: %v, want both sockets named", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.release(c0)
			if conns, _ := fakes[c.want].counts(); conns != 1 {
				t.Errorf("%s accepted %d connections, want 1", c.want, conns)
			}
			if d := daemonName(c.want); !strings.Contains(logs.String(), "talking to "+d) {
				t.Errorf("log does not name %s: %q", d, logs.String())
			}
		})
	}
}

// TestLibvirtDaemonSocketRepick: a host that starts virtqemud after the
// watchdog (or switches daemons) is followed at the next dial, and logged.
func TestLibvirtDaemonSocketRepick(t *testing.T) {
	dir := t.TempDir()
	legacy := newFakeLibvirtdAt(t, filepath.Join(dir, "libvirt-sock"), true)
	l, err := NewLibvirt("")
	if err != nil {
		t.Fatal(err)
	}
	l.sockets = systemSockets(dir)
	var logs strings.Builder
	l.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	defer l.Close()
	c1, err := l.acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	modular := newFakeLibvirtdAt(t, filepath.Join(dir, "virtqemud-sock"), true)
	c2, err := l.acquire(t.Context()) // c1 is busy: a new dial
	if err != nil {
		t.Fatal(err)
	}
	l.release(c1)
	l.release(c2)
	if n, _ := legacy.counts(); n != 1 {
		t.Errorf("libvirtd accepted %d connections, want 1", n)
	}
	if n, _ := modular.counts(); n != 1 {
		t.Errorf("virtqemud accepted %d connections, want 1", n)
	}
	if got := logs.String(); !strings.Contains(got, "talking to libvirtd") || !strings.Contains(got, "talking to virtqemud") {
		t.Errorf("log does not show the switch: %q", got)
	}
}

func TestDialLibvirtHungDaemon(t *testing.T) {
	f := newFakeLibvirtd(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	within(t, time.Second, "DialLibvirt to a hung libvirtd", func() {
		_, err := DialLibvirt(ctx, "qemu+unix:///system?socket="+f.sock)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("DialLibvirt to a hung libvirtd: %v, want a deadline error", err)
		}
	})
	waitFor(t, "the abandoned connection to close", func() bool { _, open := f.counts(); return open == 0 })
}

func TestLibvirtCallsHungDaemon(t *testing.T) {
	f := newFakeLibvirtd(t, true)
	l, err := DialLibvirt(context.Background(), "qemu+unix:///system?socket="+f.sock)
	if err != nil {
		t.Fatal(err)
	}
	const u = "6b1c7a1e-3a53-4e0f-9d2b-0f6f7a3c9e01"
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Running", func(ctx context.Context) error { _, err := l.Running(ctx, true); return err }},
		{"State", func(ctx context.Context) error { _, _, err := l.State(ctx, u); return err }},
		{"Destroy", func(ctx context.Context) error { return l.Destroy(ctx, u) }},
		{"Start", func(ctx context.Context) error { return l.Start(ctx, u) }},
		{"Events", func(ctx context.Context) error { _, err := l.Events(ctx); return err }},
	}
	for _, c := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		within(t, time.Second, c.name+" on a hung libvirtd", func() {
			if err := c.call(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s on a hung libvirtd: %v, want a deadline error", c.name, err)
			}
		})
		cancel()
	}
	// Each timed-out call closed the shared connection and the next one
	// dialled again; Events dialled one of its own.
	if conns, _ := f.counts(); conns != 5 {
		t.Errorf("libvirtd saw %d connections, want 5 (dial, 3 redials, events)", conns)
	}
	within(t, 3*time.Second, "Close on a hung libvirtd", func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	waitFor(t, "every connection to close", func() bool { _, open := f.counts(); return open == 0 })
	if err := l.Destroy(context.Background(), u); !errors.Is(err, ErrLibvirtClosed) {
		t.Errorf("Destroy after Close: %v, want ErrLibvirtClosed", err)
	}
}

func TestLibvirtBadUUID(t *testing.T) {
	f := newFakeLibvirtd(t, true)
	l, err := DialLibvirt(context.Background(), "qemu+unix:///system?socket="+f.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Destroy(context.Background(), "vm-1"); err == nil || !strings.Contains(err.Error(), "not a domain UUID") {
		t.Errorf("Destroy(vm-1): %v", err)
	}
}

func TestUUIDRoundTrip(t *testing.T) {
	const u = "6b1c7a1e-3a53-4e0f-9d2b-0f6f7a3c9e01"
	id, err := parseUUID(strings.ToUpper(u))
	if err != nil {
		t.Fatal(err)
	}
	if got := uuidString(id); got != u {
		t.Errorf("uuidString(parseUUID(%q)) = %q", u, got)
	}
}

func TestLifecycleEventString(t *testing.T) {
	e := LifecycleEvent{UUID: "u", Name: "vm-1", Kind: EventStopped, Detail: 1}
	if got := e.String(); got != "vm-1 (u) stopped/destroyed" {
		t.Errorf("String() = %q", got)
	}
	if got := EventKind(42).String(); got != "event-42" {
		t.Errorf("EventKind(42) = %q", got)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
