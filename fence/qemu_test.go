package fence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseQEMUCmdline(t *testing.T) {
	const u = "6b1c7a1e-3a53-4e0f-9d2b-0f6f7a3c9e01"
	cases := []struct {
		name     string
		args     []string
		uuid     string
		guest    string
		wantQEMU bool
	}{
		{"libvirt form", []string{"/usr/bin/qemu-system-x86_64", "-name", "guest=vm-1,debug-threads=on", "-S", "-uuid", u}, u, "vm-1", true},
		{"equals form", []string{"qemu-kvm", "-uuid=" + u, "-name=guest=vm-2"}, u, "vm-2", true},
		{"double dash", []string{"qemu", "--uuid", u, "--name", "vm-3,process=qemu:vm-3"}, u, "vm-3", true},
		{"upper case", []string{"qemu", "-uuid", strings.ToUpper(u)}, u, "", true},
		{"undashed", []string{"qemu", "-uuid", strings.ReplaceAll(u, "-", "")}, u, "", true},
		{"escaped comma", []string{"qemu", "-name", "debug-threads=on,guest=a,,b", "-uuid", u}, u, "a,b", true},
		{"last uuid wins", []string{"qemu", "-uuid", "11111111-1111-1111-1111-111111111111", "-uuid", u}, u, "", true},
		{"uuid as argv0 only", []string{"-uuid", u}, "", "", false},
		{"no uuid", []string{"/usr/sbin/libvirtd", "-d"}, "", "", false},
		{"uuid without value", []string{"qemu", "-name", "guest=x", "-uuid"}, "", "x", false},
		{"malformed uuid", []string{"qemu", "-uuid", "6b1c7a1e-3a53-4e0f-9d2b-0f6f7a3c9e0z"}, "", "", false},
		{"misplaced dashes", []string{"qemu", "-uuid", "6b1c7a1e3-a53-4e0f-9d2b-0f6f7a3c9e01"}, "", "", false},
		{"other option", []string{"qemu", "-uuidx", u}, "", "", false},
		{"kernel thread", nil, "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmdline := []byte(strings.Join(c.args, "\x00"))
			if len(c.args) > 0 {
				cmdline = append(cmdline, 0)
			}
			uuid, name, ok := parseQEMUCmdline(cmdline)
			if ok != c.wantQEMU || uuid != c.uuid || name != c.guest {
				t.Errorf("parseQEMUCmdline(%q) = %q, %q, %v; want %q, %q, %v", c.args, uuid, name, ok, c.uuid, c.guest, c.wantQEMU)
			}
		})
	}
}

// fakeProc is a /proc in t.TempDir().
type fakeProc struct {
	t    *testing.T
	proc string
}

func newFakeProc(t *testing.T) *fakeProc {
	t.Helper()
	f := &fakeProc{t: t, proc: filepath.Join(t.TempDir(), "proc")}
	f.mkdir(f.proc)
	return f
}

func (f *fakeProc) mkdir(p string) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeProc) write(p, s string) {
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// process adds /proc/PID with a NUL-separated cmdline and a mount namespace
// link (which the fence must not care about).
func (f *fakeProc) process(pid int, mntNS string, args ...string) {
	d := filepath.Join(f.proc, strconv.Itoa(pid))
	f.mkdir(filepath.Join(d, "ns"))
	cmdline := ""
	for _, a := range args {
		cmdline += a + "\x00"
	}
	f.write(filepath.Join(d, "cmdline"), cmdline)
	if err := os.Symlink(mntNS, filepath.Join(d, "ns", "mnt")); err != nil {
		f.t.Fatal(err)
	}
}

// fakeProcs reads a fake /proc whose pids no process has: pidfds cannot
// pin them, so it reads as on a kernel without pidfds.
// Its reads get the safety bound, not ScanTimeout: a loaded test machine
// must not make a healthy read look stuck.
func fakeProcs(dir string) *Procs {
	p := NewProcs(dir)
	p.noPidfd = true
	p.timeout = safetyBound
	return p
}

func qemuArgs(uuid, name string) []string {
	return []string{"/usr/bin/qemu-system-x86_64", "-name", "guest=" + name + ",debug-threads=on", "-S", "-uuid", uuid, "-no-user-config"}
}

const (
	uuidA = "aaaaaaaa-0000-4000-8000-000000000001"
	uuidB = "bbbbbbbb-0000-4000-8000-000000000002"
	uuidC = "cccccccc-0000-4000-8000-000000000003"
	nsOne = "mnt:[4026531840]"
	nsTwo = "mnt:[4026532999]"
)

func TestFindQEMU(t *testing.T) {
	f := newFakeProc(t)
	// One machine is one host: every QEMU with -uuid is ours, whatever its
	// mount namespace (libvirt gives each QEMU its own).
	f.process(101, nsOne, "/usr/bin/qemu-system-x86_64", "-name", "guest=vm-a", "-uuid="+strings.ToUpper(uuidA))
	f.process(102, nsTwo, qemuArgs(uuidB, "vm-b")...)
	f.process(103, nsTwo, "qemu-kvm", "-uuid", uuidC) // no -name
	// Not QEMU, kernel thread, and a non-pid entry.
	f.process(107, nsOne, "/usr/sbin/libvirtd", "-d")
	f.process(108, nsOne)
	f.mkdir(filepath.Join(f.proc, "sys"))
	// Gone between the listing and the read.
	f.mkdir(filepath.Join(f.proc, "109"))

	got, err := fakeProcs(f.proc).Find(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []QEMU{
		{PID: 101, UUID: uuidA, Name: "vm-a"},
		{PID: 102, UUID: uuidB, Name: "vm-b"},
		{PID: 103, UUID: uuidC},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Find = %+v\nwant %+v", got, want)
	}

	if _, err := fakeProcs(filepath.Join(f.proc, "missing")).Find(context.Background()); err == nil {
		t.Error("Find on a missing proc dir: no error")
	}
}

// TestFakeQEMUProcess is not a test: it is the body of the fake QEMU
// processes that startFakeQEMU runs (this test binary, argv[0] renamed).
func TestFakeQEMUProcess(t *testing.T) {
	if os.Getenv("VIRTLEASE_FAKE_QEMU") != "1" {
		t.Skip("helper process for KillQEMU tests")
	}
	time.Sleep(time.Minute) // ends by itself should a test leak it
	os.Exit(0)
}

// startFakeQEMU starts a process whose command line looks like QEMU's for
// uuid. The test reaps it; it never signals anything it did not start.
func startFakeQEMU(t *testing.T, uuid, name string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestFakeQEMUProcess$", "--", "-name", "guest="+name+",debug-threads=on", "-uuid", uuid)
	cmd.Args[0] = "qemu-system-x86_64"
	cmd.Env = append(os.Environ(), "VIRTLEASE_FAKE_QEMU=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Not reaped before the cleanup: a killed one stays a zombie meanwhile.
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Wait until exec has replaced the command line.
	for i := 0; ; i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		if u, _, ok := parseQEMUCmdline(b); ok && u == uuid {
			break
		}
		if i > 1000 {
			t.Fatalf("fake QEMU %d never showed -uuid %s", cmd.Process.Pid, uuid)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cmd
}

// exited reports whether our child pid has exited (zombie, or reaped).
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}

func TestKillQEMU(t *testing.T) {
	t.Run("pidfd", func(t *testing.T) { testKillQEMU(t, true) })
	t.Run("no pidfd", func(t *testing.T) { testKillQEMU(t, false) })
}

func testKillQEMU(t *testing.T, usePidfd bool) {
	u1, u2 := "10000000-0000-4000-8000-00000000000a", "20000000-0000-4000-8000-00000000000b"
	running := startFakeQEMU(t, u1, "kill-running")
	stopped := startFakeQEMU(t, u2, "kill-stopped")
	// A stopped QEMU (SIGSTOP, as in the lab's fault tests) still dies of SIGKILL.
	if err := stopped.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	p := NewProcs("/proc")
	defer p.Close()
	p.noPidfd = !usePidfd
	p.timeout = safetyBound // every process of this machine: no read may look stuck under load
	all, err := p.Find(context.Background())
	if err != nil && !errors.Is(err, ErrUnread) {
		t.Fatal(err)
	}
	var procs []QEMU
	for _, q := range all {
		if q.UUID == u1 || q.UUID == u2 {
			procs = append(procs, q)
		}
	}
	want := []QEMU{
		{PID: running.Process.Pid, UUID: u1, Name: "kill-running"},
		{PID: stopped.Process.Pid, UUID: u2, Name: "kill-stopped"},
	}
	slices.SortFunc(want, func(a, b QEMU) int { return a.PID - b.PID })
	if !slices.Equal(procs, want) {
		t.Fatalf("Find on /proc found %+v, want %+v", procs, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	survivors := p.Kill(ctx, procs)
	took := time.Since(start)
	if len(survivors) != 0 {
		t.Fatalf("KillQEMU survivors: %+v", survivors)
	}
	for _, c := range []*exec.Cmd{running, stopped} {
		if !exited(c.Process.Pid) {
			t.Errorf("pid %d still runs after KillQEMU returned", c.Process.Pid)
		}
	}
	t.Logf("KillQEMU killed %d fake QEMUs (one SIGSTOPped) in %v", len(procs), took)
	if took > time.Second {
		t.Errorf("KillQEMU took %v", took)
	}
}

func TestKillQEMUSkipsReusedPID(t *testing.T) {
	u := "30000000-0000-4000-8000-00000000000c"
	other := startFakeQEMU(t, u, "reused")
	// The pid now runs a guest other than the one found: never signal it.
	stale := QEMU{PID: other.Process.Pid, UUID: "40000000-0000-4000-8000-00000000000d", Name: "gone"}
	if s := NewProcs("/proc").Kill(context.Background(), []QEMU{stale}); len(s) != 0 {
		t.Errorf("survivors %+v, want none (the guest is gone)", s)
	}
	time.Sleep(20 * time.Millisecond)
	if exited(other.Process.Pid) {
		t.Fatal("KillQEMU killed a process running another guest")
	}
}

func TestKillQEMUGoneAndZombie(t *testing.T) {
	u := "50000000-0000-4000-8000-00000000000e"
	z := startFakeQEMU(t, u, "zombie")
	q := QEMU{PID: z.Process.Pid, UUID: u, Name: "zombie"}
	// Killed and not reaped: a zombie, which runs no guest code any more.
	if err := z.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for !exited(q.PID) {
		time.Sleep(time.Millisecond)
	}
	gone := QEMU{PID: 1 << 22, UUID: u, Name: "never"} // above the default pid_max: no such process
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if s := NewProcs("/proc").Kill(ctx, []QEMU{q, gone}); len(s) != 0 {
		t.Errorf("survivors %+v, want none", s)
	}
}

func TestKillQEMULateContext(t *testing.T) {
	if s := NewProcs("/proc").Kill(context.Background(), nil); s != nil {
		t.Errorf("KillQEMU(nil) = %+v, want nil", s)
	}
	// A fence whose context already ended still sends SIGKILL; it just does
	// not wait, and reports whoever was not dead yet.
	u := "60000000-0000-4000-8000-00000000000f"
	p := startFakeQEMU(t, u, "late")
	q := QEMU{PID: p.Process.Pid, UUID: u, Name: "late"}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := NewProcs("/proc").Kill(ctx, []QEMU{q})
	if len(s) > 1 || (len(s) == 1 && s[0] != q) {
		t.Errorf("survivors %+v, want at most %+v", s, q)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !exited(q.PID) {
		if time.Now().After(deadline) {
			t.Fatal("SIGKILL was not sent with a cancelled context")
		}
		time.Sleep(time.Millisecond)
	}
}

// stuckFile makes p a FIFO nobody writes: reading it blocks, as reading
// /proc/PID/cmdline does while that process's mmap_lock is held by a task
// stuck in D state. The cleanup opens it for writing so the abandoned read
// returns and the test binary can exit.
func stuckFile(t *testing.T, p string) {
	t.Helper()
	os.Remove(p)
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 100; i++ {
			w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0)
			if err != nil {
				return // no reader waiting (ENXIO): nothing to release
			}
			w.Close()
			time.Sleep(time.Millisecond)
		}
	})
}

func TestFindQEMUClockStepOtherNamespace(t *testing.T) {
	// Production: QEMU in a mount namespace of its own (libvirt's default),
	// the watchdog in another (the unit's hardening), then the wall clock
	// is stepped forward (chrony's makestep after boot): /proc/stat's btime
	// moves, QEMU's pid file does not. None of it may hide the guest.
	f := newFakeProc(t)
	f.mkdir(filepath.Join(f.proc, "self", "ns"))
	if err := os.Symlink(nsOne, filepath.Join(f.proc, "self", "ns", "mnt")); err != nil {
		t.Fatal(err)
	}
	f.process(500, nsTwo, qemuArgs(uuidA, "vm-a")...)
	f.write(filepath.Join(f.proc, "500", "stat"), "500 (qemu-system-x86) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 3 0 60000 0 0\n")
	f.write(filepath.Join(f.proc, "stat"), fmt.Sprintf("cpu  1 2 3 4\nbtime %d\nprocesses 9\n", time.Now().Add(time.Hour).Unix()))
	got, err := fakeProcs(f.proc).Find(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []QEMU{{PID: 500, UUID: uuidA, Name: "vm-a"}}
	if !slices.Equal(got, want) {
		t.Errorf("Find after a clock step = %+v, want %+v: every QEMU on this machine is this host's", got, want)
	}
}

// safetyBound is how long a test waits for a scan or a kill that must not
// hang; far above what either takes, far below "forever".
const safetyBound = 10 * time.Second

func TestFindQEMUStuckRead(t *testing.T) {
	f := newFakeProc(t)
	f.process(600, nsOne, qemuArgs(uuidA, "vm-stuck")...)
	stuckFile(t, filepath.Join(f.proc, "600", "cmdline"))
	f.process(601, nsOne, qemuArgs(uuidB, "vm-b")...)
	p := fakeProcs(f.proc)
	p.timeout = 2 * time.Second // the stuck read is abandoned then
	defer p.Close()
	type result struct {
		qs  []QEMU
		err error
	}
	done := make(chan result, 1)
	go func() {
		qs, err := p.Find(context.Background())
		done <- result{qs, err}
	}()
	select {
	case r := <-done:
		want := []QEMU{{PID: 601, UUID: uuidB, Name: "vm-b"}}
		if !slices.Equal(r.qs, want) {
			t.Errorf("Find = %+v, want %+v", r.qs, want)
		}
		if !errors.Is(r.err, ErrUnread) || !strings.Contains(r.err.Error(), "600") {
			t.Errorf("Find error = %v, want one naming the unread pid 600", r.err)
		}
	case <-time.After(safetyBound):
		t.Fatalf("Find still scanning after %v: one stuck process stalls the fence", safetyBound)
	}
}

func TestKillQEMUStuckRead(t *testing.T) {
	ua, ub := "70000000-0000-4000-8000-000000000010", "80000000-0000-4000-8000-000000000011"
	a := startFakeQEMU(t, ua, "stuck")
	b := startFakeQEMU(t, ub, "healthy")
	f := newFakeProc(t)
	f.process(a.Process.Pid, nsOne, qemuArgs(ua, "stuck")...)
	stuckFile(t, filepath.Join(f.proc, strconv.Itoa(a.Process.Pid), "cmdline"))
	f.process(b.Process.Pid, nsOne, qemuArgs(ub, "healthy")...)
	qa := QEMU{PID: a.Process.Pid, UUID: ua, Name: "stuck"}
	qb := QEMU{PID: b.Process.Pid, UUID: ub, Name: "healthy"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan []QEMU, 1)
	go func() { done <- NewProcs(f.proc).Kill(ctx, []QEMU{qa, qb}) }()
	select {
	case s := <-done:
		if !exited(qb.PID) {
			t.Errorf("the healthy guest (pid %d) still runs; survivors %+v", qb.PID, s)
		}
		if !slices.Equal(s, []QEMU{qa}) {
			t.Errorf("survivors %+v, want the unreadable one %+v", s, qa)
		}
	case <-time.After(safetyBound):
		t.Fatalf("KillQEMU still running after %v; healthy guest dead: %v", safetyBound, exited(qb.PID))
	}
}

// A guest Find pinned is killed through its pidfd with no new look at its
// command line, and later scans list it without reading it again: a QEMU
// stuck on storage (whose cmdline read would hang) is still found and killed.
func TestPinnedGuestNeedsNoRead(t *testing.T) {
	u := "90000000-0000-4000-8000-000000000012"
	g := startFakeQEMU(t, u, "pinned")
	f := newFakeProc(t)
	f.process(g.Process.Pid, nsOne, qemuArgs(u, "pinned")...)
	p := NewProcs(f.proc)
	p.timeout = safetyBound
	defer p.Close()
	want := []QEMU{{PID: g.Process.Pid, UUID: u, Name: "pinned"}}
	if got, err := p.Find(context.Background()); err != nil || !slices.Equal(got, want) {
		t.Fatalf("Find = %+v, %v; want %+v", got, err, want)
	}
	stuckFile(t, filepath.Join(f.proc, strconv.Itoa(g.Process.Pid), "cmdline"))
	if got, err := p.Find(context.Background()); err != nil || !slices.Equal(got, want) {
		t.Fatalf("second Find = %+v, %v; want %+v without a read", got, err, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), safetyBound)
	defer cancel()
	if s := p.Kill(ctx, want); len(s) != 0 {
		t.Errorf("survivors %+v, want none", s)
	}
	if !exited(g.Process.Pid) {
		t.Error("the pinned guest still runs")
	}
}
