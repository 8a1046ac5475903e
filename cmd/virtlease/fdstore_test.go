package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtlease/virtlease/fence"
)

// notifySocket is a stand-in for systemd's notification socket; next
// returns one message and the file sent with it, if any.
func notifySocket(t *testing.T) (path string, next func() (string, *os.File)) {
	path = filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return path, func() (string, *os.File) {
		t.Helper()
		buf, oob := make([]byte, 256), make([]byte, 64)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		var f *os.File
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			fds, _ := unix.ParseUnixRights(&msgs[0])
			f = os.NewFile(uintptr(fds[0]), "received")
		}
		return string(buf[:n]), f
	}
}

func fifoWithReader(t *testing.T, name string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return p
}

// The device's open file goes to systemd's store, so a death releases
// nothing; the next process takes that file back instead of opening the
// device; a deliberate close takes it out of the store.
func TestKeptDevice(t *testing.T) {
	sock, next := notifySocket(t)
	env := mapEnv(map[string]string{"NOTIFY_SOCKET": sock})
	warn := func(msg string, err error) { t.Errorf("%s: %v", msg, err) }
	fifo := fifoWithReader(t, "hwdog")

	d, _ := fence.NewDevice(fifo, 7*time.Second)
	first := &keptDevice{dev: d, notify: sdNotifyFD(env), warn: warn}
	if err := first.Open(); err != nil {
		t.Fatal(err)
	}
	msg, kept := next()
	if msg != "FDSTORE=1\nFDNAME=hwdog\nFDPOLL=0" || kept == nil {
		t.Fatalf("stored %q with file %v", msg, kept)
	}
	// The process dies: systemd still holds kept. The next one adopts it.
	d2, _ := fence.NewDevice(fifo, 7*time.Second)
	second := &keptDevice{dev: d2, passed: kept, notify: sdNotifyFD(env), warn: warn}
	if err := second.Open(); err != nil {
		t.Fatal(err)
	}
	if d2.File() != kept {
		t.Fatal("the restarted process opened the device again instead of taking the kept file")
	}
	if err := second.Close(true); err != nil {
		t.Fatal(err)
	}
	if msg, _ := next(); msg != "FDSTOREREMOVE=1\nFDNAME=hwdog" {
		t.Fatalf("on a deliberate close: %q, want the file out of the store", msg)
	}

	// A kept file of another device (the config changed) is disarmed and
	// dropped from the store; Open says why.
	other := fifoWithReader(t, "other")
	of, err := os.OpenFile(other, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	d3, _ := fence.NewDevice(fifo, 7*time.Second)
	third := &keptDevice{dev: d3, passed: of, notify: sdNotifyFD(env), warn: warn}
	if err := third.Open(); err == nil || !strings.Contains(err.Error(), "not "+fifo) {
		t.Fatalf("a kept file of another device: %v", err)
	}
	if msg, _ := next(); msg != "FDSTOREREMOVE=1\nFDNAME=hwdog" {
		t.Fatalf("after refusing another device's file: %q", msg)
	}
	if _, err := of.Write([]byte("p")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("the other device's file is still open: %v", err)
	}
}

func TestPassedFile(t *testing.T) {
	fifo := fifoWithReader(t, "hwdog")
	w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const at = 60 // systemd passes files from fd 3 on; put ours at 3+60
	if err := unix.Dup2(int(w.Fd()), 3+at); err != nil {
		t.Fatal(err)
	}
	names := strings.Repeat("x:", at) + "hwdog"
	pid := strconv.Itoa(os.Getpid())
	cases := []struct {
		name string
		env  map[string]string
		ok   bool
	}{
		{"ours", map[string]string{"LISTEN_PID": pid, "LISTEN_FDS": strconv.Itoa(at + 1), "LISTEN_FDNAMES": names}, true},
		{"another process's", map[string]string{"LISTEN_PID": "1", "LISTEN_FDS": strconv.Itoa(at + 1), "LISTEN_FDNAMES": names}, false},
		{"no such name", map[string]string{"LISTEN_PID": pid, "LISTEN_FDS": strconv.Itoa(at), "LISTEN_FDNAMES": names}, false},
		{"none", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := passedFile(mapEnv(tc.env), "hwdog")
			if (f != nil) != tc.ok {
				t.Fatalf("got %v, want a file: %v", f, tc.ok)
			}
			if f != nil && f.Fd() != 3+at {
				t.Fatalf("fd %d, want %d", f.Fd(), 3+at)
			}
		})
	}
}
