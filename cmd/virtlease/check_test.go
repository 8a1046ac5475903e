package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

// stateFor writes a live session file for h in a new state directory.
func stateFor(t *testing.T, h lease.Holder) string {
	t.Helper()
	state := filepath.Join(t.TempDir(), "run")
	boot, err := lease.BootID()
	if err != nil {
		t.Fatal(err)
	}
	err = lease.WriteSession(filepath.Join(state, "session"), lease.Session{Host: h.Host, Lease: h.Lease, Boot: boot,
		Deadline: int64(lease.BootNow() + time.Hour), State: lease.SessionOK})
	if err != nil {
		t.Fatal(err)
	}
	return state
}

func fixtureDomain(t *testing.T, name string) ([]byte, hook.Domain) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "domains", name))
	if err != nil {
		t.Fatal(err)
	}
	d, err := hook.ParseDomain(b)
	if err != nil {
		t.Fatal(err)
	}
	return b, d
}

// virtlease check decides as prepare would and writes nothing to etcd.
func TestCheckCommand(t *testing.T) {
	xml, dom := fixtureDomain(t, "nbd.xml") // before the lab changes the directory
	l := newOpsLab(t)
	a := l.session("host-a")
	b := l.session("host-b")
	state := stateFor(t, a)
	cfg, err := LoadConfig(l.config, l.env)
	if err != nil {
		t.Fatal(err)
	}
	check := func() (int, string) {
		var out bytes.Buffer
		err := runCheck(context.Background(), cfg, state, dom.Name, "-", bytes.NewReader(xml), &out)
		var ee *exitError
		switch {
		case err == nil:
			return 0, out.String()
		case errors.As(err, &ee):
			return ee.code, err.Error()
		}
		return -1, err.Error()
	}
	rev := func() int64 {
		resp, err := l.cli.Get(l.ctx(), "/virtlease/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	before := rev()
	if code, msg := check(); code != 0 || !strings.Contains(msg, "allowed") {
		t.Fatalf("free domain: exit %d %q", code, msg)
	}
	if after := rev(); after != before {
		t.Fatalf("check wrote to etcd (revision %d -> %d)", before, after)
	}
	if err := l.claim(b, dom.UUID, dom.Name, dom.DiskIDs()...); err != nil {
		t.Fatal(err)
	}
	before = rev()
	if code, msg := check(); code != 1 || !strings.Contains(msg, "host-b") {
		t.Fatalf("held by host-b: exit %d %q", code, msg)
	}
	if after := rev(); after != before {
		t.Fatalf("refused check wrote to etcd (revision %d -> %d)", before, after)
	}
	if marks, _ := filepath.Glob(filepath.Join(state, "*", "*")); len(marks) != 0 {
		t.Errorf("check left markers: %v", marks)
	}
}

func TestCheckCommandUsage(t *testing.T) {
	xml, err := filepath.Abs(filepath.Join("..", "..", "testdata", "domains", "nbd.xml"))
	if err != nil {
		t.Fatal(err)
	}
	l := newOpsLab(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no XML", []string{"check", "vm-nbd"}, "--xml"},
		{"no DOMAIN", []string{"check", "--xml", xml}, "one DOMAIN"},
		{"XML of another domain", []string{"check", "--xml", xml, "web1"}, "not web1"},
		{"unreadable XML", []string{"check", "--xml", "/nonexistent.xml", "vm-nbd"}, "nonexistent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := l.run(nil, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q: want 2 and %q", code, stderr, tc.want)
			}
		})
	}
}

// The hook's help points at the read-only check, and `virtlease hook
// --help` shows it (it used to be handed to the hook as its arguments).
func TestHookHelp(t *testing.T) {
	var out, errw bytes.Buffer
	code := run([]string{"virtlease", "hook", "--help"}, strings.NewReader(""), &out, &errw, mapEnv(nil))
	if code != 0 || !strings.Contains(out.String(), "virtlease hook qemu NAME OP SUBOP") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errw.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "would this host be allowed") && !strings.Contains(line, "virtlease check") {
			t.Errorf("the help's dry run is not the read-only check: %q", line)
		}
	}
}

// An empty argv (execve allows it) must not panic.
func TestEmptyArgv(t *testing.T) {
	var out, errw bytes.Buffer
	if code := run(nil, strings.NewReader(""), &out, &errw, mapEnv(nil)); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errw.String())
	}
}

// mode="off" claims nothing but still refuses to start over another's
// claim (a copied XML on a protected guest's disk, an unfenced guest), and
// fails closed when etcd does not answer.
func TestHookOptOutRefusesOverOthers(t *testing.T) {
	xml, dom := fixtureDomain(t, "mode-off.xml")
	l := newOpsLab(t)
	b := l.session("host-b")
	state := filepath.Join(t.TempDir(), "run") // no watchdog needed for mode="off"
	prepare := func(config string) (int, string) {
		var stderr bytes.Buffer
		code := runHook([]string{dom.Name, "prepare", "begin", "-"}, bytes.NewReader(xml), &stderr, mapEnv(nil), config, state)
		return code, stderr.String()
	}
	if code, msg := prepare(l.config); code != 0 {
		t.Fatalf("free: exit %d %q", code, msg)
	}
	// A protected guest on host-b uses the same disk under another UUID.
	if err := l.claim(b, "c0000000-0000-4000-8000-000000000001", "protected", dom.DiskIDs()...); err != nil {
		t.Fatal(err)
	}
	if code, msg := prepare(l.config); code != 1 || !strings.Contains(msg, "host-b") {
		t.Fatalf("disk held by host-b: exit %d %q", code, msg)
	}
	if _, err := l.store.Release(l.ctx(), b, "c0000000-0000-4000-8000-000000000001", dom.DiskIDs(), nil); err != nil {
		t.Fatal(err)
	}
	u := lease.Unfenced{Since: time.Now(), Guests: []lease.UnfencedGuest{{UUID: dom.UUID, Name: dom.Name}}}
	if err := l.store.SetUnfenced(l.ctx(), "host-c", u); err != nil {
		t.Fatal(err)
	}
	if code, msg := prepare(l.config); code != 1 || !strings.Contains(msg, "host-c") {
		t.Fatalf("unfenced on host-c: exit %d %q", code, msg)
	}
	silent, _ := hookHost(t, silentEtcd(t), "1s")
	if code, msg := prepare(silent); code != 3 || strings.Count(msg, "\n") != 1 {
		t.Fatalf("etcd silent: exit %d %q, want 3 and one line", code, msg)
	}
}

// A panic inside the hook is one line, never a stack trace: a start is
// refused (exit 1), a reconnect exits 0 (failing it kills the guest).
func TestHookPanicBackstop(t *testing.T) {
	dir := t.TempDir()
	h := &hook.Hook{
		Config:  hook.Config{Host: "host-a", Margin: time.Second, StateDir: dir},
		Connect: func(context.Context) (hook.Claims, error) { panic("connect") },
		BootNow: func() time.Duration { panic("boot clock") },
		BootID:  func() (string, error) { panic("boot id") },
	}
	lease.WriteSession(filepath.Join(dir, "session"), lease.Session{Host: "host-a", Lease: 1, Boot: "b", State: lease.SessionOK})
	xml, dom := fixtureDomain(t, "nbd.xml")
	for _, tc := range []struct {
		op, subop string
		strict    bool
		want      int
	}{
		{"prepare", "begin", true, 1},
		{"reconnect", "begin", false, 0},
	} {
		t.Run(tc.op, func(t *testing.T) {
			args := []string{dom.Name, tc.op, tc.subop, "-"}
			call, err := hook.ParseArgs(args)
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			code := runHookCall(context.Background(), h, call, tc.strict, 5*time.Second, args, bytes.NewReader(xml), &stderr)
			msg := stderr.String()
			if code != tc.want || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "internal error") || strings.Contains(msg, "goroutine") {
				t.Fatalf("exit %d, stderr %q: want %d and one line", code, msg, tc.want)
			}
		})
	}
}
