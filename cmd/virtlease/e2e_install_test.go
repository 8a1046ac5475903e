//go:build e2e

// scripts/install.sh for real, without --root, inside one lab host: the
// hook it installs is the one libvirtd runs.

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// installPrivateDirs are the directories install.sh writes into (besides
// /etc/libvirt and /etc/virtlease, which are the lab host's own already):
// the test mounts a tmpfs over each inside the host (an overlay over
// /usr/sbin, which holds libvirtd), so that nothing reaches the machine's
// real ones. /usr/local/sbin is where older installs put the binary, which
// install.sh removes.
var installPrivateDirs = []string{"/usr/sbin", "/usr/local/sbin", "/etc/systemd/system", "/usr/share/bash-completion/completions"}

// installOverlayDir is the private directory that keeps what the machine
// has: an overlay, not an empty tmpfs.
const installOverlayDir = "/usr/sbin"

// installTmpfsSource names the test's tmpfs mounts in mountinfo.
const installTmpfsSource = "vl-install-e2e"

// installWrites are the machine's paths install.sh would write outside
// /etc/libvirt and /etc/virtlease.
func installWrites(t *testing.T) []string {
	t.Helper()
	paths := []string{"/usr/sbin/virtlease", "/usr/local/sbin/virtlease", "/usr/share/bash-completion/completions/virtlease"}
	units, err := filepath.Glob(filepath.Join("..", "..", "scripts", "systemd", "*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("scripts/systemd/*.service: %v %v", units, err)
	}
	for _, u := range units {
		paths = append(paths, "/etc/systemd/system/"+filepath.Base(u))
	}
	return paths
}

// installPathState describes path on the machine (absent, or its inode, size
// and mtime), to tell whether anything changed it.
func installPathState(path string) string {
	st, err := os.Lstat(path)
	if err != nil {
		return "absent"
	}
	return fmt.Sprintf("%v ino %v size %d mtime %v", st.Mode(), inode(st), st.Size(), st.ModTime().UnixNano())
}

func inode(st os.FileInfo) any {
	if s, ok := st.Sys().(interface{ Ino() uint64 }); ok {
		return s.Ino()
	}
	return fmt.Sprintf("%+v", st.Sys())
}

// mountinfoLine is one line of /proc/PID/mountinfo.
type mountinfoLine struct {
	MountPoint string
	Optional   []string // "shared:N", "master:N", …: none means private
	FSType     string
	Source     string
}

func readMountinfo(t *testing.T, pid string) []mountinfoLine {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/mountinfo")
	if err != nil {
		t.Fatalf("mountinfo: %v", err)
	}
	var out []mountinfoLine
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 6 || sep+2 >= len(f) {
			t.Fatalf("mountinfo line %q: unexpected format", line)
		}
		out = append(out, mountinfoLine{MountPoint: f[4], Optional: f[6:sep], FSType: f[sep+1], Source: f[sep+2]})
	}
	return out
}

// holderPID is the PID that holds host's namespaces (checked against its
// recorded mount namespace), as a string for /proc paths.
func (l *Lab) holderPID(host string) string {
	l.t.Helper()
	d := l.HostDir(host)
	b, err := os.ReadFile(filepath.Join(d, "holder.pid"))
	if err != nil {
		l.t.Fatalf("%s: holder pid: %v", host, err)
	}
	pid := strings.TrimSpace(string(b))
	if _, err := strconv.Atoi(pid); err != nil {
		l.t.Fatalf("%s: holder pid %q", host, pid)
	}
	want, _ := os.ReadFile(filepath.Join(d, "mntns"))
	if ns, err := os.Readlink("/proc/" + pid + "/ns/mnt"); err != nil || ns != strings.TrimSpace(string(want)) {
		l.t.Fatalf("%s: pid %s is not in the host's mount namespace (%s, %v; want %s)", host, pid, ns, err, want)
	}
	return pid
}

// TestInstallE2ELabHost: scripts/install.sh, run without --root inside one
// lab host (its /usr/sbin on a private overlay; /usr/local/sbin,
// /etc/systemd/system and the completions dir on private tmpfs mounts),
// installs a hook libvirtd runs: vm2 starts there and is claimed in etcd, the second host is refused, and --uninstall
// removes the link and the binary but keeps the config. Nothing reaches the
// machine's own directories.
func TestInstallE2ELabHost(t *testing.T) {
	t0 := time.Now()
	// The machine's own paths, before: registered first, so this check runs
	// last, after the lab (and with it the host's namespace) is gone.
	writes := installWrites(t)
	before := make(map[string]string)
	for _, p := range writes {
		before[p] = installPathState(p)
	}
	var created []string // directories the test had to create on the machine
	t.Cleanup(func() {
		for _, p := range writes {
			if now := installPathState(p); now != before[p] {
				t.Errorf("the machine's %s changed: was %s, now %s", p, before[p], now)
			}
		}
		for i := len(created) - 1; i >= 0; i-- {
			if err := os.Remove(created[i]); err != nil {
				t.Errorf("removing %s (created as a mount point): %v", created[i], err)
			}
		}
		for _, m := range readMountinfo(t, "self") {
			if m.Source == installTmpfsSource {
				t.Errorf("a test tmpfs is mounted on the machine: %+v", m)
			}
		}
	})

	l := startLab(t, 2)
	a, b := l.Hosts[0], l.Hosts[1]
	holder := l.holderPID(a)
	nsRoot := "/proc/" + holder + "/root" // host-a's file system, as host-a sees it

	// The host's mounts do not propagate to the machine: its / is private.
	for _, m := range readMountinfo(t, holder) {
		if m.MountPoint == "/" && len(m.Optional) != 0 {
			t.Fatalf("%s: / has propagation %v; want private (lab.sh: mount --make-rprivate /)", a, m.Optional)
		}
	}
	// Mount points: a directory missing on this machine is created (and
	// removed again at the end; it must then be empty).
	for _, dir := range installPrivateDirs {
		var missing []string
		for d := dir; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Lstat(d); err == nil {
				break
			}
			missing = append([]string{d}, missing...)
		}
		for _, d := range missing {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			created = append(created, d)
			t.Logf("created %s on the machine as a mount point", d)
		}
		if dir == installOverlayDir {
			// The upper layer on a tmpfs of the host's own, so that writes
			// stay in the host's mount namespace.
			up := t.TempDir()
			for _, c := range [][]string{
				{"mkdir", "-p", up},
				{"mount", "-t", "tmpfs", "-o", "mode=0755", installTmpfsSource, up},
				{"mkdir", up + "/upper", up + "/work"},
				{"mount", "-t", "overlay", "-o", "lowerdir=" + dir + ",upperdir=" + up + "/upper,workdir=" + up + "/work", installTmpfsSource, dir},
			} {
				if _, stderr, err := l.Exec(a, c...); err != nil {
					t.Fatalf("%s: %s: %v\n%s", a, strings.Join(c, " "), err, stderr)
				}
			}
			continue
		}
		if _, stderr, err := l.Exec(a, "mount", "-t", "tmpfs", "-o", "mode=0755", installTmpfsSource, dir); err != nil {
			t.Fatalf("%s: mount tmpfs on %s: %v\n%s", a, dir, err, stderr)
		}
	}
	mounted := make(map[string]bool)
	for _, m := range readMountinfo(t, holder) {
		if m.Source == installTmpfsSource {
			mounted[m.MountPoint] = true
			if len(m.Optional) != 0 {
				t.Fatalf("%s: tmpfs on %s has propagation %v; want private", a, m.MountPoint, m.Optional)
			}
		}
	}
	for _, dir := range installPrivateDirs {
		if !mounted[dir] {
			t.Fatalf("%s: no private tmpfs on %s", a, dir)
		}
	}
	for _, m := range readMountinfo(t, "self") {
		if m.Source == installTmpfsSource {
			t.Fatalf("%s's tmpfs reached the machine's mount table: %+v", a, m)
		}
	}

	// The lab installed its hook as a copy of the binary; install.sh would
	// (rightly) refuse that foreign file. Remove it, as a fresh host has none.
	if _, stderr, err := l.Exec(a, "rm", "-f", "/etc/libvirt/hooks/qemu"); err != nil {
		t.Fatalf("%s: removing the lab's hook: %v\n%s", a, err, stderr)
	}
	config, err := os.ReadFile(l.ConfigPath(a))
	if err != nil {
		t.Fatal(err)
	}

	script := filepath.Join(labBuild.repo, "scripts", "install.sh")
	install := func(args ...string) string {
		t.Helper()
		start := time.Now()
		stdout, stderr, err := l.Exec(a, append([]string{"bash", script}, args...)...)
		out := stdout + stderr
		if err != nil {
			t.Fatalf("%s: install.sh %s: %v\n%s", a, strings.Join(args, " "), err, out)
		}
		t.Logf("%s: install.sh %s (%v):\n%s", a, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out)
		return out
	}
	out := install("--binary", l.Bin)
	requireContains(t, "install.sh's output", out,
		"installed /usr/sbin/virtlease", "linked /etc/libvirt/hooks/qemu -> /usr/sbin/virtlease",
		"kept /etc/virtlease/config.yaml", "installed /etc/systemd/system/virtlease-watchdog.service",
		"installed /usr/share/bash-completion/completions/virtlease",
		"systemd is not running here (no /run/systemd/system), so the unit was not enabled")

	// What the host sees: the hook is a link to the installed binary, which
	// is the lab's; the config is the lab's, untouched.
	if target, err := os.Readlink(filepath.Join(nsRoot, "etc/libvirt/hooks/qemu")); err != nil || target != "/usr/sbin/virtlease" {
		t.Fatalf("%s: /etc/libvirt/hooks/qemu -> %q (%v); want a link to /usr/sbin/virtlease", a, target, err)
	}
	got, err := os.ReadFile(filepath.Join(nsRoot, "usr/sbin/virtlease"))
	if err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	want, err := os.ReadFile(l.Bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: /usr/sbin/virtlease (%d bytes) is not %s (%d bytes)", a, len(got), l.Bin, len(want))
	}
	if now, _ := os.ReadFile(l.ConfigPath(a)); !bytes.Equal(now, config) {
		t.Fatalf("%s: install.sh changed /etc/virtlease/config.yaml:\n%s", a, now)
	}
	// …and the machine saw none of it.
	for _, p := range writes {
		if now := installPathState(p); now != before[p] {
			t.Fatalf("install.sh in %s changed the machine's %s: was %s, now %s", a, p, before[p], now)
		}
	}

	// libvirtd reads its hooks only at start: restart it, as install.sh says.
	l.RestartLibvirtd(a)

	r := l.VirshTimed(a, "start", "vm2")
	if r.Err != nil {
		t.Fatalf("%s: virsh start vm2 with the installed hook: %v\n%s", a, r.Err, r.Stderr)
	}
	t.Logf("%s: virsh start vm2 (%v)", a, r.Took.Round(time.Millisecond))
	l.RequireHeldBy(labVM2UUID, a, 1)
	if status, stderr, code, _ := l.Virtlease("status", "vm2"); code != 0 || !strings.Contains(status, a) {
		t.Errorf("virtlease status vm2: exit %d; want 0 naming %s:\n%s%s", code, a, status, stderr)
	}
	r, msg := requireStartRefused(t, l, b, "vm2")
	t.Logf("%s: virsh start vm2 refused (%v): %s", b, r.Took.Round(time.Millisecond), msg)
	requireContains(t, "virsh's error", msg, "vm2", "running on host "+a)
	if pids := l.QEMUPids(labVM2UUID); len(pids) != 1 || len(pids[a]) != 1 {
		t.Fatalf("QEMUs of vm2: %v; want one, on %s", pids, a)
	}

	// --uninstall: link, binary, units and completion go; the config stays.
	out = install("--uninstall")
	requireContains(t, "install.sh --uninstall's output", out,
		"removed /etc/libvirt/hooks/qemu", "removed /usr/sbin/virtlease", "kept /etc/virtlease/config.yaml")
	for _, p := range append([]string{"/etc/libvirt/hooks/qemu"}, writes...) {
		if _, err := os.Lstat(filepath.Join(nsRoot, p)); err == nil {
			t.Errorf("%s: --uninstall left %s", a, p)
		}
	}
	if now, err := os.ReadFile(l.ConfigPath(a)); err != nil || !bytes.Equal(now, config) {
		t.Errorf("%s: --uninstall changed or removed /etc/virtlease/config.yaml (%v)", a, err)
	}
	t.Logf("lab start, install, start, refusal and uninstall in %v", time.Since(t0).Round(time.Millisecond))
}
