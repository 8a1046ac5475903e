package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtlease/virtlease/fence"
	"github.com/virtlease/virtlease/lease"
)

// killLog is one running guest that records when it was killed (boot clock).
type killLog struct {
	mu     sync.Mutex
	killed time.Duration // 0: running
}

func (g *killLog) Running(context.Context) ([]fence.Guest, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.killed != 0 {
		return nil, nil
	}
	return []fence.Guest{{UUID: "uuid-vm-1", Name: "vm-1", PID: 101}}, nil
}

func (g *killLog) Kill(context.Context, []fence.Guest) []fence.Guest {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.killed == 0 {
		g.killed = lease.BootNow()
	}
	return nil
}

func (g *killLog) at() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.killed
}

// syncBuffer is a log both the watchdog and the test touch.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A watchdog restarted while etcd is unreachable, with an etcd login
// configured, enforces the session file it resumes: it kills the guests at
// that session's fence point, before the session can expire, and keeps
// running (it used to log in first and exit 3, fencing nothing).
func TestWatchdogStartEnforcesSessionFileWithoutEtcd(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + ln.Addr().String()
	ln.Close() // nothing answers there now
	pw := filepath.Join(dir, "password")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	cfg := DefaultConfig()
	cfg.Host = "host-a"
	cfg.Etcd.Endpoints = []string{endpoint}
	cfg.Etcd.Username, cfg.Etcd.PasswordFile = "virtlease", pw
	cfg.Etcd.DialTimeout = Duration(time.Second)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	margin := time.Duration(cfg.Fence.Margin)
	deadline := lease.BootNow() + margin + 2*time.Second // fence point in 2 s
	stateDir := filepath.Join(dir, "run")
	if err := lease.WriteSession(filepath.Join(stateDir, "session"), lease.Session{Host: "host-a", Lease: 7, Boot: "boot-1",
		Deadline: int64(deadline), State: lease.SessionOK}); err != nil {
		t.Fatal(err)
	}
	guest := &killLog{}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- startWatchdog(ctx, cfg, watchdogEnv{
			stderr: &logs, getenv: mapEnv(nil), stateDir: stateDir,
			bootID: func() (string, error) { return "boot-1", nil },
			clock:  bootClock{}, notify: func(string) {}, guests: guest,
		})
	}()
	for guest.at() == 0 {
		select {
		case err := <-done:
			t.Fatalf("the watchdog exited before fencing: %v\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if lease.BootNow() > deadline+5*time.Second {
			t.Fatalf("not fenced 5 s after the session's deadline\n%s", logs.String())
		}
	}
	fenceAt := deadline - margin
	if at := guest.at(); at < fenceAt || at >= deadline {
		t.Errorf("guest killed at %v from the fence point, want in [0, margin %v)", at-fenceAt, margin)
	}
	// Still running: it keeps dialling etcd for a new session.
	select {
	case err := <-done:
		t.Fatalf("the watchdog exited after fencing: %v\n%s", err, logs.String())
	case <-time.After(time.Second):
	}
	if !strings.Contains(logs.String(), "cannot connect to etcd") {
		t.Errorf("no log of the failed etcd login:\n%s", logs.String())
	}
	s, err := lease.ReadSession(filepath.Join(stateDir, "session"))
	if err != nil || s.State != lease.SessionFencing {
		t.Errorf("session file %+v, %v: want state fencing", s, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("after SIGTERM: %v", err)
	}
}

func TestSystemdWatchdogEnv(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want time.Duration
	}{
		{"not under systemd", nil, 0},
		{"10s", map[string]string{"WATCHDOG_USEC": "10000000"}, 10 * time.Second},
		{"for another process", map[string]string{"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, 0},
		{"garbage", map[string]string{"WATCHDOG_USEC": "x"}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := systemdWatchdog(mapEnv(tc.env)); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// Under systemd with a WatchdogSec too short for the device, the watchdog
// refuses to start with one line naming the fix, before touching anything.
func TestWatchdogRefusesShortSystemdWatchdog(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Host = "host-a"
	cfg.Fence.HardwareWatchdog = "/dev/watchdog-that-is-never-opened"
	var errw bytes.Buffer
	err := startWatchdog(context.Background(), cfg, watchdogEnv{stderr: &errw,
		getenv: mapEnv(map[string]string{"WATCHDOG_USEC": "5000000"}), stateDir: t.TempDir()})
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "WatchdogSec=5s") {
		t.Fatalf("got %v, want exit 2 naming WatchdogSec=5s", err)
	}
}

// Under the journal (JOURNAL_STREAM set) each log line carries its syslog
// priority, so `journalctl -p warning` shows the watchdog's warnings; a
// terminal gets plain lines with their time.
func TestWatchdogLogPriority(t *testing.T) {
	cases := []struct {
		name     string
		journal  bool
		wantWarn string // how the warning line starts
		wantTime bool
	}{
		{"journal", true, "<4>level=WARN ", false},
		{"terminal", false, "time=", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Host = "host-a"
			var errw bytes.Buffer
			err := startWatchdog(context.Background(), cfg, watchdogEnv{stderr: &errw, journal: tc.journal, getenv: mapEnv(nil), stateDir: t.TempDir(),
				bootID: func() (string, error) { return "", errors.New("no boot id here") }})
			if err == nil {
				t.Fatal("started without a boot ID")
			}
			var warn string
			for line := range strings.Lines(errw.String()) {
				if strings.Contains(line, "no hardware watchdog configured") {
					warn = line
				}
			}
			if !strings.HasPrefix(warn, tc.wantWarn) || strings.Contains(warn, "time=") != tc.wantTime {
				t.Errorf("warning logged as %q, want it to start with %q (time= %v)", warn, tc.wantWarn, tc.wantTime)
			}
		})
	}
}

// Only the stream JOURNAL_STREAM names is the journal: a log redirected
// to a file by a parent that runs under systemd gets plain lines.
func TestUnderJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	this := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	for _, tc := range []struct {
		stream string
		want   bool
	}{{this, true}, {"", false}, {fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false}} {
		if got := underJournal(f, mapEnv(map[string]string{"JOURNAL_STREAM": tc.stream})); got != tc.want {
			t.Errorf("JOURNAL_STREAM=%q: %v, want %v", tc.stream, got, tc.want)
		}
	}
}

func TestPriorityWriter(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"level=ERROR msg=x\n", "<3>level=ERROR msg=x\n"},
		{"level=WARN msg=x\n", "<4>level=WARN msg=x\n"},
		{"level=INFO msg=x\n", "<6>level=INFO msg=x\n"},
		{"level=DEBUG msg=x\n", "<7>level=DEBUG msg=x\n"},
	} {
		var b bytes.Buffer
		if n, err := (priorityWriter{&b}).Write([]byte(tc.line)); err != nil || n != len(tc.line) || b.String() != tc.want {
			t.Errorf("Write(%q) = %d, %v, wrote %q; want %q", tc.line, n, err, b.String(), tc.want)
		}
	}
}
