//go:build e2e

// End-to-end harness: a lab of real libvirtd + QEMU hosts around one real etcd
// (scripts/lab.sh), with virtlease built from this package installed as each
// host's hook. Run as root:
//
//	go test -tags e2e -count=1 -v -timeout 15m ./cmd/virtlease/ -run E2E
//
// A missing prerequisite (not root, no libvirtd or QEMU, etcd does not build)
// skips the tests, or fails them under CI=true. Each test gets its own lab
// directory (under $VL_E2E_ROOT_BASE, default /var/tmp) and port range; the
// lab is stopped when the test ends and its directory removed unless the test
// failed (its logs are named in the test output).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// UUIDs of the domains every lab host defines (testdata/lab, scripts/lab.sh).
const (
	labVM1UUID     = "5d0e1a5e-0000-4000-8000-000000000001" // vm1: qcow2 file in the lab's shared dir
	labVM1CopyUUID = "5d0e1a5e-0000-4000-8000-0000000000c1" // vm1-copy: another UUID, vm1's disk
	labVM2UUID     = "5d0e1a5e-0000-4000-8000-000000000002" // vm2: nbd disk every host can open
)

// Lab is a running lab: one etcd, hosts "host-a", "host-b", … each with its
// own libvirtd, virtlease hook and watchdog, and its own proxy to etcd.
type Lab struct {
	t     *testing.T
	Root  string   // VL_LAB_ROOT: everything of this lab lives here
	Port  int      // etcd client port; peer +1, qemu-nbd +2, host i's proxy +3+i
	Hosts []string // host-a, host-b, …
	Bin   string   // the virtlease binary installed as every host's hook
	env   []string // environment for scripts/lab.sh
}

// labPrereq ends the test when the lab cannot run here: t.Fatal under
// CI=true (CI must run the e2e tests), t.Skip otherwise.
func labPrereq(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := "e2e lab: " + fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

var labBuild struct {
	once      sync.Once
	dir       string // holds the built virtlease and etcd
	repo      string
	errPrereq error // etcd does not build: a prerequisite
	err       error // virtlease does not build: a failure
}

func labGoBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// labBuildBinaries builds virtlease (this package, static) and etcd once per
// test binary.
func labBuildBinaries() {
	b := &labBuild
	wd, err := os.Getwd()
	if err != nil {
		b.err = err
		return
	}
	b.repo = filepath.Clean(filepath.Join(wd, "..", ".."))
	b.dir, err = os.MkdirTemp("", "virtlease-e2e-bin-")
	if err != nil {
		b.err = err
		return
	}
	build := func(out, pkg string, cgo bool) error {
		cmd := exec.Command(labGoBinary(), "build", "-o", filepath.Join(b.dir, out), pkg)
		cmd.Dir = b.repo
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
		if !cgo {
			cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
		return nil
	}
	if err := build("etcd", "./scripts/etcd", true); err != nil {
		b.errPrereq = err
		return
	}
	b.err = build("virtlease", "./cmd/virtlease", false)
}

// labFreePortBase finds a base port with size free ports above it, starting at a
// random point so that two runs side by side rarely race for one range.
func labFreePortBase(t *testing.T, size int) int {
	t.Helper()
	var rnd [2]byte
	rand.Read(rnd[:])
	const lo, hi = 24000, 32000
	start := lo + (int(rnd[0])<<8|int(rnd[1]))%((hi-lo)/size)*size
	for i := 0; i < (hi-lo)/size; i++ {
		base := lo + (start-lo+i*size)%(hi-lo)
		free := true
		for p := base; p < base+size && free; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return base
		}
	}
	t.Fatalf("e2e lab: no %d free ports in %d–%d", size, lo, hi)
	return 0
}

var labUnsafeName = regexp.MustCompile(`[^A-Za-z0-9]+`)

// startLab starts a lab of n hosts for this test and stops it when the test
// ends. env adds lab.sh settings, e.g. "VL_LAB_TTL=6s", "VL_LAB_NO_WATCHDOG=1".
func startLab(t *testing.T, n int, env ...string) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		labPrereq(t, "needs root (namespaces, mounts, libvirtd): run sudo ./scripts/test.sh")
	}
	for _, tool := range []string{"libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "qemu-img", "qemu-nbd",
		"etcdctl", "unshare", "nsenter", "setsid", "flock", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat(filepath.Join("/usr/sbin", tool)); err != nil {
				labPrereq(t, "%s not found (sudo ./scripts/test.sh installs the packages)", tool)
			}
		}
	}
	labBuild.once.Do(labBuildBinaries)
	if labBuild.errPrereq != nil {
		labPrereq(t, "%v", labBuild.errPrereq)
	}
	if labBuild.err != nil {
		t.Fatalf("e2e lab: %v", labBuild.err)
	}

	base := os.Getenv("VL_E2E_ROOT_BASE")
	if base == "" {
		base = "/var/tmp"
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	name := labUnsafeName.ReplaceAllString(strings.TrimPrefix(t.Name(), "Test"), "-")
	if len(name) > 20 {
		name = name[:20]
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	root := filepath.Join(base, "vl-"+name+"-"+hex.EncodeToString(rnd[:]))

	l := &Lab{
		t:    t,
		Root: root,
		Port: labFreePortBase(t, 4+n),
		Bin:  filepath.Join(labBuild.dir, "virtlease"),
	}
	for i := range n {
		l.Hosts = append(l.Hosts, "host-"+string(rune('a'+i)))
	}
	caps := filepath.Join(filepath.Dir(root), "virtlease-e2e-capscache") // shared: saves libvirtd's QEMU probe
	l.env = append(os.Environ(),
		"VL_LAB_ROOT="+root,
		"VL_LAB_PORT="+strconv.Itoa(l.Port),
		"VL_BIN="+l.Bin,
		"VL_LAB_CAPS_CACHE="+caps,
		"GOFLAGS=-mod=mod",
	)
	l.env = append(l.env, env...)

	t.Cleanup(func() {
		start := time.Now()
		if _, stderr, err := l.labsh(2*time.Minute, "stop"); err != nil {
			t.Errorf("e2e lab: stop: %v\n%s", err, stderr)
			return
		}
		t.Logf("e2e lab: stopped in %s", time.Since(start).Round(time.Millisecond))
		if t.Failed() {
			t.Logf("e2e lab: logs kept in %s (hosts/*/watchdog.log, hosts/*/log/, etcd/etcd.log)", root)
			return
		}
		os.RemoveAll(root)
		os.Remove(root + ".lock")
	})
	start := time.Now()
	if _, stderr, err := l.labsh(5*time.Minute, "start", strconv.Itoa(n)); err != nil {
		t.Fatalf("e2e lab: start %d: %v\n%s", n, err, stderr)
	}
	t.Logf("e2e lab: %d hosts up in %s: VL_LAB_ROOT=%s %s/scripts/lab.sh status",
		n, time.Since(start).Round(time.Millisecond), root, labBuild.repo)
	return l
}

// labRun runs name with args under a timeout and returns its stdout and stderr.
func labRun(timeout time.Duration, env []string, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// lab.sh's daemons never hold our pipes, but be sure Wait returns.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s: %w", name, strings.Join(args, " "), timeout, err)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return stdout.String(), stderr.String(), err
}

func (l *Lab) labsh(timeout time.Duration, args ...string) (string, string, error) {
	return labRun(timeout, l.env, filepath.Join(labBuild.repo, "scripts", "lab.sh"), args...)
}

// LabSh runs scripts/lab.sh with this lab's settings and fails the test on error.
func (l *Lab) LabSh(args ...string) string {
	l.t.Helper()
	stdout, stderr, err := l.labsh(2*time.Minute, args...)
	if err != nil {
		l.t.Fatalf("%v\n%s", err, stderr)
	}
	return stdout
}

// URI is the libvirt URI of host's libvirtd, from outside the host.
func (l *Lab) URI(host string) string {
	return "qemu+unix:///system?socket=" + filepath.Join(l.HostDir(host), "run", "libvirt", "libvirt-sock")
}

// HostDir is host's directory: its /etc/libvirt (etc-libvirt), /run (run),
// /var/lib/libvirt (lib), /var/log/libvirt (log), watchdog.log.
func (l *Lab) HostDir(host string) string { return filepath.Join(l.Root, "hosts", host) }

// HookPath is host's /etc/libvirt/hooks/qemu, as seen from outside the host.
func (l *Lab) HookPath(host string) string {
	return filepath.Join(l.HostDir(host), "etc-libvirt", "hooks", "qemu")
}

// ConfigPath is host's /etc/virtlease/config.yaml, as seen from outside.
func (l *Lab) ConfigPath(host string) string {
	return filepath.Join(l.HostDir(host), "etc-virtlease", "config.yaml")
}

// Virsh runs virsh against host's libvirtd (a 2-minute limit).
func (l *Lab) Virsh(host string, args ...string) (stdout, stderr string, err error) {
	return labRun(2*time.Minute, l.env, "virsh", append([]string{"-c", l.URI(host)}, args...)...)
}

// EtcdURL is the lab's etcd client URL (direct, not through a host's proxy).
func (l *Lab) EtcdURL() string { return "http://127.0.0.1:" + strconv.Itoa(l.Port) }

// Etcdctl runs etcdctl (API v3) against the lab's etcd directly.
func (l *Lab) Etcdctl(args ...string) (stdout, stderr string, err error) {
	env := append(slices.Clone(l.env), "ETCDCTL_API=3")
	return labRun(30*time.Second, env, "etcdctl", append([]string{"--endpoints", l.EtcdURL()}, args...)...)
}

// Exec runs a command inside host's mount and UTS namespaces.
func (l *Lab) Exec(host string, cmd ...string) (stdout, stderr string, err error) {
	return l.labsh(2*time.Minute, append([]string{"exec", host}, cmd...)...)
}

// Freeze stops host's proxy to etcd (SIGSTOP): its connections hang.
func (l *Lab) Freeze(host string) { l.t.Helper(); l.LabSh("freeze", host) }

// Thaw resumes host's proxy (SIGCONT).
func (l *Lab) Thaw(host string) { l.t.Helper(); l.LabSh("thaw", host) }

// Cut kills host's proxy: its connections to etcd reset, new ones are refused.
func (l *Lab) Cut(host string) { l.t.Helper(); l.LabSh("cut", host) }

// Heal starts host's proxy again after Cut.
func (l *Lab) Heal(host string) { l.t.Helper(); l.LabSh("heal", host) }

// RestartLibvirtd stops host's libvirtd (SIGTERM; guests keep running) and
// starts it again; it returns once the new libvirtd answers.
func (l *Lab) RestartLibvirtd(host string) { l.t.Helper(); l.LabSh("restart-libvirtd", host) }

// RestartWatchdog stops host's virtlease watchdog (SIGTERM) and starts it again.
func (l *Lab) RestartWatchdog(host string) { l.t.Helper(); l.LabSh("restart-watchdog", host) }

// hostOfMntNS maps each host's recorded mount namespace ("mnt:[…]") to it.
func (l *Lab) hostOfMntNS() map[string]string {
	m := make(map[string]string)
	for _, h := range l.Hosts {
		b, err := os.ReadFile(filepath.Join(l.HostDir(h), "mntns"))
		if err == nil {
			m[strings.TrimSpace(string(b))] = h
		}
	}
	return m
}

// QEMUPids returns, for each lab host, the PIDs of the QEMU processes
// running the domain uuid there (found by "-uuid UUID" in /proc/PID/cmdline,
// mapped to a host by /proc/PID/ns/mnt). QEMUs outside this lab are ignored.
func (l *Lab) QEMUPids(uuid string) map[string][]int {
	hosts := l.hostOfMntNS()
	out := make(map[string][]int)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		l.t.Fatalf("e2e lab: %v", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		argv, err := labReadCmdline(pid)
		if err != nil || len(argv) == 0 || !strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") {
			continue
		}
		i := slices.Index(argv, "-uuid")
		if i < 0 || i+1 >= len(argv) || !strings.EqualFold(argv[i+1], uuid) {
			continue
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if err != nil {
			continue // exited meanwhile
		}
		if h, ok := hosts[ns]; ok {
			out[h] = append(out[h], pid)
		}
	}
	return out
}

func labReadCmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("no cmdline (zombie or kernel thread)")
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), nil
}

// TestE2ELabSmoke: the lab comes up, every host's libvirtd answers, and each
// host defines vm1 with the same UUID; etcd is healthy; no guest runs.
func TestE2ELabSmoke(t *testing.T) {
	l := startLab(t, 2)
	for _, h := range l.Hosts {
		if _, stderr, err := l.Virsh(h, "version"); err != nil {
			t.Fatalf("%s: virsh version: %v\n%s", h, err, stderr)
		}
		out, stderr, err := l.Virsh(h, "domuuid", "vm1")
		if err != nil {
			t.Fatalf("%s: virsh domuuid vm1: %v\n%s", h, err, stderr)
		}
		if got := strings.TrimSpace(out); got != labVM1UUID {
			t.Errorf("%s: vm1 has UUID %q, want %q", h, got, labVM1UUID)
		}
		out, _, err = l.Exec(h, "hostname")
		if err != nil || strings.TrimSpace(out) != h {
			t.Errorf("%s: hostname inside the host = %q, %v; want %q", h, strings.TrimSpace(out), err, h)
		}
		if _, err := os.Stat(l.HookPath(h)); err != nil {
			t.Errorf("%s: hook not installed: %v", h, err)
		}
	}
	if _, stderr, err := l.Etcdctl("endpoint", "health"); err != nil {
		t.Fatalf("etcdctl endpoint health: %v\n%s", err, stderr)
	}
	for _, uuid := range []string{labVM1UUID, labVM1CopyUUID, labVM2UUID} {
		if pids := l.QEMUPids(uuid); len(pids) != 0 {
			t.Errorf("QEMU for %s running before any start: %v", uuid, pids)
		}
	}
}
