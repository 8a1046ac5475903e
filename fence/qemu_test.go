package fence

import (
	"context"
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

// fakeProc is a /proc and a libvirt run directory in t.TempDir().
type fakeProc struct {
	t      *testing.T
	proc   string
	run    string
	boot   time.Time
	selfNS string
}

func newFakeProc(t *testing.T) *fakeProc {
	t.Helper()
	dir := t.TempDir()
	f := &fakeProc{t: t, proc: filepath.Join(dir, "proc"), run: filepath.Join(dir, "run", "libvirt"), boot: time.Unix(1_700_000_000, 0), selfNS: "mnt:[4026531840]"}
	f.mkdir(filepath.Join(f.proc, "self", "ns"))
	f.mkdir(filepath.Join(f.run, "qemu"))
	f.symlink(f.selfNS, filepath.Join(f.proc, "self", "ns", "mnt"))
	f.write(filepath.Join(f.proc, "stat"), fmt.Sprintf("cpu  1 2 3 4\nbtime %d\nprocesses 9\n", f.boot.Unix()))
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

func (f *fakeProc) symlink(target, p string) {
	if err := os.Symlink(target, p); err != nil {
		f.t.Fatal(err)
	}
}

// process adds /proc/PID with a NUL-separated cmdline, a mount namespace
// link and a stat whose start time is started (after boot).
func (f *fakeProc) process(pid int, ns string, started time.Duration, args ...string) {
	d := filepath.Join(f.proc, strconv.Itoa(pid))
	f.mkdir(filepath.Join(d, "ns"))
	cmdline := ""
	for _, a := range args {
		cmdline += a + "\x00"
	}
	f.write(filepath.Join(d, "cmdline"), cmdline)
	f.symlink(ns, filepath.Join(d, "ns", "mnt"))
	ticks := int64(started / (time.Second / userHZ))
	// Fields 3..21 then starttime (22): comm with a space and a ')' on purpose.
	f.write(filepath.Join(d, "stat"), fmt.Sprintf("%d (qemu (x) y) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 3 0 %d 0 0\n", pid, ticks))
}

// pidFile writes RUNDIR/qemu/NAME.pid naming pid, modified at boot+at.
func (f *fakeProc) pidFile(name string, pid int, at time.Duration) {
	p := filepath.Join(f.run, "qemu", name+".pid")
	f.write(p, strconv.Itoa(pid)+"\n")
	if err := os.Chtimes(p, f.boot.Add(at), f.boot.Add(at)); err != nil {
		f.t.Fatal(err)
	}
}

func qemuArgs(uuid, name string) []string {
	return []string{"/usr/bin/qemu-system-x86_64", "-name", "guest=" + name + ",debug-threads=on", "-S", "-uuid", uuid, "-no-user-config"}
}

const (
	uuidA = "aaaaaaaa-0000-4000-8000-000000000001"
	uuidB = "bbbbbbbb-0000-4000-8000-000000000002"
	uuidC = "cccccccc-0000-4000-8000-000000000003"
	uuidD = "dddddddd-0000-4000-8000-000000000004"
	uuidE = "eeeeeeee-0000-4000-8000-000000000005"
	uuidF = "ffffffff-0000-4000-8000-000000000006"
)

func TestFindQEMU(t *testing.T) {
	f := newFakeProc(t)
	const otherNS = "mnt:[4026532999]" // another lab host, or QEMU's private namespace
	min := time.Minute

	// Lab: QEMU in this host's mount namespace, no pid file needed.
	f.process(101, f.selfNS, 10*min, "/usr/bin/qemu-system-x86_64", "-name", "guest=vm-a", "-uuid="+strings.ToUpper(uuidA))
	// Another lab host's QEMU, same PID namespace: not ours.
	f.process(102, otherNS, 10*min, qemuArgs(uuidB, "vm-b")...)
	// Production: QEMU in a private mount namespace, named by our pid file.
	f.process(103, otherNS, 10*min, qemuArgs(uuidC, "vm-c")...)
	f.pidFile("vm-c", 103, 10*min+50*time.Millisecond)
	// A pid file of ours naming a process of another name: not ours.
	f.process(104, otherNS, 10*min, qemuArgs(uuidD, "vm-other")...)
	f.pidFile("vm-d", 104, 10*min)
	// A stale pid file (left by a crash) whose pid was reused later by
	// another host's QEMU of the same name.
	f.process(105, otherNS, 20*min, qemuArgs(uuidE, "vm-e")...)
	f.pidFile("vm-e", 105, 10*min)
	// driver.pid is libvirtd's own pid, even if its command line looked like QEMU.
	f.process(106, otherNS, 1*min, "/usr/sbin/libvirtd", "-uuid", uuidF, "-name", "guest=driver")
	f.pidFile("driver", 106, 2*min)
	// Not QEMU, kernel thread, and a non-pid entry.
	f.process(107, f.selfNS, 1*min, "/usr/sbin/libvirtd", "-d")
	f.process(108, f.selfNS, 0)
	f.mkdir(filepath.Join(f.proc, "sys"))

	self, err := ThisHost(f.proc, f.run)
	if err != nil {
		t.Fatal(err)
	}
	got, err := FindQEMU(f.proc, self)
	if err != nil {
		t.Fatal(err)
	}
	want := []QEMU{
		{PID: 101, UUID: uuidA, Name: "vm-a"},
		{PID: 103, UUID: uuidC, Name: "vm-c"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("FindQEMU = %+v\nwant %+v", got, want)
	}

	if _, err := FindQEMU(filepath.Join(f.proc, "missing"), self); err == nil {
		t.Error("FindQEMU on a missing proc dir: no error")
	}
}

func TestHostFilter(t *testing.T) {
	const otherNS = "mnt:[4026532999]"
	min := time.Minute
	cases := []struct {
		name  string
		setup func(f *fakeProc) // adds pid 200
		mine  bool
	}{
		{"ok: same mount namespace", func(f *fakeProc) {
			f.process(200, f.selfNS, min, qemuArgs(uuidA, "vm")...)
		}, true},
		{"ok: named by a pid file", func(f *fakeProc) {
			f.process(200, otherNS, min, qemuArgs(uuidA, "vm")...)
			f.pidFile("vm", 200, min+time.Second)
		}, true},
		{"other host", func(f *fakeProc) {
			f.process(200, otherNS, min, qemuArgs(uuidA, "vm")...)
		}, false},
		{"other host, unreadable namespace", func(f *fakeProc) {
			f.process(200, otherNS, min, qemuArgs(uuidA, "vm")...)
			os.Remove(filepath.Join(f.proc, "200", "ns", "mnt"))
		}, false},
		{"driver.pid excluded", func(f *fakeProc) {
			f.process(200, otherNS, min, qemuArgs(uuidA, "driver")...)
			f.pidFile("driver", 200, min+time.Second)
		}, false},
		{"pid file of another domain", func(f *fakeProc) {
			f.process(200, otherNS, min, qemuArgs(uuidA, "vm")...)
			f.pidFile("vm-2", 200, min+time.Second)
		}, false},
		{"stale pid file, pid reused", func(f *fakeProc) {
			f.process(200, otherNS, 9*min, qemuArgs(uuidA, "vm")...)
			f.pidFile("vm", 200, min)
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeProc(t)
			c.setup(f)
			self, err := ThisHost(f.proc, f.run)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := self.PIDFiles[200]; ok && strings.HasPrefix(c.name, "driver") {
				t.Errorf("ThisHost read driver.pid: %+v", self.PIDFiles)
			}
			got, err := FindQEMU(f.proc, self)
			if err != nil {
				t.Fatal(err)
			}
			if mine := len(got) == 1; mine != c.mine {
				t.Errorf("FindQEMU = %+v; want this host's: %v", got, c.mine)
			}
		})
	}
}

func TestThisHost(t *testing.T) {
	f := newFakeProc(t)
	f.pidFile("vm-1", 300, time.Minute)
	f.pidFile("driver", 1, time.Minute)
	f.write(filepath.Join(f.run, "qemu", "garbage.pid"), "not a pid\n")
	f.write(filepath.Join(f.run, "qemu", "vm-1.xml"), "<domstatus/>")
	f.mkdir(filepath.Join(f.run, "qemu", "dbus.pid")) // a directory, not a pid file
	self, err := ThisHost(f.proc, f.run)
	if err != nil {
		t.Fatal(err)
	}
	if self.MountNS != f.selfNS {
		t.Errorf("MountNS = %q, want %q", self.MountNS, f.selfNS)
	}
	if len(self.PIDFiles) != 1 || self.PIDFiles[300].Name != "vm-1" {
		t.Errorf("PIDFiles = %+v, want only 300 → vm-1", self.PIDFiles)
	}

	// No libvirt state yet: nothing to match by pid file, not an error.
	self, err = ThisHost(f.proc, filepath.Join(t.TempDir(), "nothing"))
	if err != nil || len(self.PIDFiles) != 0 {
		t.Errorf("ThisHost without a run dir = %+v, %v; want no pid files, no error", self, err)
	}
	// No mount namespace to compare with: an error, not a silent empty filter.
	if _, err := ThisHost(t.TempDir(), f.run); err == nil {
		t.Error("ThisHost without /proc/self/ns/mnt: no error")
	}
}

func TestZeroHostFilterMatchesNothing(t *testing.T) {
	f := newFakeProc(t)
	f.process(400, f.selfNS, time.Minute, qemuArgs(uuidA, "vm")...)
	got, err := FindQEMU(f.proc, HostFilter{})
	if err != nil || len(got) != 0 {
		t.Errorf("FindQEMU with a zero HostFilter = %+v, %v; want nothing", got, err)
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

	self, err := ThisHost("/proc", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	all, err := FindQEMU("/proc", self)
	if err != nil {
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
		t.Fatalf("FindQEMU on /proc found %+v, want %+v", procs, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	survivors := killQEMU(ctx, "/proc", procs, usePidfd)
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
	if s := KillQEMU(context.Background(), []QEMU{stale}); len(s) != 0 {
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
	if s := KillQEMU(ctx, []QEMU{q, gone}); len(s) != 0 {
		t.Errorf("survivors %+v, want none", s)
	}
}

func TestKillQEMULateContext(t *testing.T) {
	if s := KillQEMU(context.Background(), nil); s != nil {
		t.Errorf("KillQEMU(nil) = %+v, want nil", s)
	}
	// A fence whose context already ended still sends SIGKILL; it just does
	// not wait, and reports whoever was not dead yet.
	u := "60000000-0000-4000-8000-00000000000f"
	p := startFakeQEMU(t, u, "late")
	q := QEMU{PID: p.Process.Pid, UUID: u, Name: "late"}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := KillQEMU(ctx, []QEMU{q})
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
