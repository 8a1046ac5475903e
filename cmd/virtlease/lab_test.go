//go:build e2e

// End-to-end harness: a lab of real libvirtd + QEMU hosts around one real etcd
// (scripts/lab.sh), with virtlease built from this package installed as each
// host's hook. Run as root:
//
//	go test -tags e2e -count=1 -v -timeout 15m ./cmd/virtlease/ -run E2E
//
// A missing prerequisite (not root, no libvirtd or QEMU, etcd does not build)
// skips the tests, or fails them under CI=true. Each test gets its own lab
// directory (under $VL_E2E_ROOT_BASE, default /var/tmp) and port range
// (locked per port under /var/tmp/virtlease-e2e-ports, so test processes side
// by side never share one; $VL_E2E_PORTS=LO-HI narrows the search); the lab
// is stopped when the test ends and its directory removed unless the test
// failed (its logs are named in the test output).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/virtlease/virtlease/scripts/procscan"
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
	Port  int      // etcd client port; peer +1, qemu-nbd +2, host i's proxy +3+i, VNC +32+16i…, migrations +40+16i…
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

// TestMain removes the binaries labBuildBinaries built (~60 MB a run; they
// piled up in /tmp before).
func TestMain(m *testing.M) {
	code := m.Run()
	if labBuild.dir != "" {
		os.RemoveAll(labBuild.dir)
	}
	os.Exit(code)
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
	// lab.sh copies these instead of building them for every lab (VL_LAB_TOOLS).
	if err := build("labproxy", "./scripts/labproxy", false); err != nil {
		b.err = err
		return
	}
	b.err = build("virtlease", "./cmd/virtlease", false)
}

// labPortBlock is how many ports a lab of n hosts uses from its base
// (scripts/lab.sh): etcd, peer, qemu-nbd, 29 for proxies and spare, and 16
// per host for its guests' VNC displays and incoming migrations.
func labPortBlock(n int) int { return 32 + 16*n }

// labFreePortBase finds a base port with size free ports above it, starting at a
// random point so that two runs side by side rarely race for one range. Each
// port of the range is also locked (flock on a file under
// $VL_E2E_PORT_LOCKS, default /var/tmp/virtlease-e2e-ports) until the test
// ends, so that two test processes never pick the same ports even before
// either lab has bound them. $VL_E2E_PORTS=LO-HI narrows the search.
func labFreePortBase(t *testing.T, size int) int {
	t.Helper()
	lo, hi := 24000, 32000 // below Linux's ephemeral range (32768–60999)
	if r := os.Getenv("VL_E2E_PORTS"); r != "" {
		a, b, ok := strings.Cut(r, "-")
		x, err1 := strconv.Atoi(a)
		y, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || x < 1024 || y > 65535 || y-x < size {
			t.Fatalf("e2e lab: VL_E2E_PORTS=%q: want LO-HI with at least %d ports", r, size)
		}
		lo, hi = x, y
	}
	lockDir := os.Getenv("VL_E2E_PORT_LOCKS")
	if lockDir == "" {
		lockDir = "/var/tmp/virtlease-e2e-ports"
	}
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		t.Fatalf("e2e lab: port locks: %v", err)
	}
	var rnd [2]byte
	rand.Read(rnd[:])
	n := (hi - lo) / size
	start := (int(rnd[0])<<8 | int(rnd[1]) ^ os.Getpid()) % n
	for i := 0; i < n; i++ {
		base := lo + (start+i)%n*size
		if locks, ok := labLockPorts(lockDir, base, size); ok {
			t.Cleanup(func() {
				for _, f := range locks {
					f.Close() // releases the flock
				}
			})
			return base
		}
	}
	t.Fatalf("e2e lab: no %d free ports in %d–%d", size, lo, hi)
	return 0
}

// labLockPorts takes the lock of each port base…base+size-1 and checks that
// nothing listens there; on any failure it releases what it took.
func labLockPorts(dir string, base, size int) ([]*os.File, bool) {
	var locks []*os.File
	release := func() {
		for _, f := range locks {
			f.Close()
		}
	}
	for p := base; p < base+size; p++ {
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(p)+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			release()
			return nil, false
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			release()
			return nil, false
		}
		locks = append(locks, f)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			release()
			return nil, false
		}
		ln.Close()
	}
	return locks, true
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
		Port: labFreePortBase(t, labPortBlock(n)),
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
		"VL_LAB_TOOLS="+labBuild.dir,
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
	for attempt := 1; ; attempt++ {
		_, stderr, err := l.labsh(5*time.Minute, "start", strconv.Itoa(n))
		if err == nil {
			break
		}
		// Something outside the port locks took one of our ports between
		// the check and lab.sh's bind: stop, move to another range, retry.
		if attempt < 3 && strings.Contains(stderr, "is in use by something else") {
			t.Logf("e2e lab: port range %d taken meanwhile, retrying elsewhere: %s", l.Port, strings.TrimSpace(stderr))
			if _, stderr, err := l.labsh(2*time.Minute, "stop"); err != nil {
				t.Fatalf("e2e lab: stop before retrying: %v\n%s", err, stderr)
			}
			l.Port = labFreePortBase(t, labPortBlock(n))
			l.env = append(l.env, "VL_LAB_PORT="+strconv.Itoa(l.Port))
			continue
		}
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

// hostOfPidNS maps each host's recorded PID namespace ("pid:[…]") to it.
func (l *Lab) hostOfPidNS() map[string]string {
	m := make(map[string]string)
	for _, h := range l.Hosts {
		b, err := os.ReadFile(filepath.Join(l.HostDir(h), "pidns"))
		if err == nil {
			m[strings.TrimSpace(string(b))] = h
		}
	}
	return m
}

// QEMUPids returns, for each lab host, the PIDs of the QEMU processes
// running the domain uuid there (found by "-uuid UUID" in /proc/PID/cmdline,
// mapped to a host by /proc/PID/ns/pid). QEMUs outside this lab are ignored.
func (l *Lab) QEMUPids(uuid string) map[string][]int {
	hosts := l.hostOfPidNS()
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
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		if err != nil {
			continue // exited meanwhile
		}
		if h, ok := hosts[ns]; ok {
			out[h] = append(out[h], pid)
		}
	}
	return out
}

// HostComm returns host's processes named comm, as this machine numbers
// them. (libvirt's own pid files under the host's /run hold the numbers of
// the host's PID namespace, which mean nothing out here.)
func (l *Lab) HostComm(host, comm string) []int {
	b, err := os.ReadFile(filepath.Join(l.HostDir(host), "pidns"))
	if err != nil {
		return nil
	}
	var out []int
	for _, p := range procscan.InPIDNS("/proc", strings.TrimSpace(string(b))) {
		if p.Comm == comm {
			out = append(out, p.PID)
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

// ---------------------------------------------------------------- more helpers
//
// Generic helpers for end-to-end tests: run things on lab hosts and read
// etcd, /proc and the hosts' files. None of them knows a scenario.

// WithT returns a copy of the lab whose helpers report to t: use it in a
// subtest (a helper must not call FailNow on the parent test from there).
func (l *Lab) WithT(t *testing.T) *Lab {
	c := *l
	c.t = t
	return &c
}

// labRunIn is labRun with stdin (nil: /dev/null); it also returns the wall
// time and the exit code (-1 when the command did not exit on its own).
func labRunIn(timeout time.Duration, env []string, stdin io.Reader, name string, args ...string) (stdout, stderr string, code int, took time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	var outb, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &errb
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	took = time.Since(start)
	code = -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s: %w", name, strings.Join(args, " "), timeout, err)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return outb.String(), errb.String(), code, took, err
}

// VirshResult is one virsh run: its output, exit code and wall time.
type VirshResult struct {
	Stdout, Stderr string
	Code           int
	Took           time.Duration
	Err            error
}

// VirshTimed runs virsh against host's libvirtd and measures it.
func (l *Lab) VirshTimed(host string, args ...string) VirshResult {
	var r VirshResult
	r.Stdout, r.Stderr, r.Code, r.Took, r.Err = labRunIn(2*time.Minute, l.env, nil, "virsh", append([]string{"-c", l.URI(host)}, args...)...)
	return r
}

// MustVirsh runs virsh against host and fails the test unless it succeeds;
// it returns stdout.
func (l *Lab) MustVirsh(host string, args ...string) string {
	l.t.Helper()
	stdout, stderr, err := l.Virsh(host, args...)
	if err != nil {
		l.t.Fatalf("%s: virsh %s: %v\n%s", host, strings.Join(args, " "), err, stderr)
	}
	return stdout
}

// DomState is `virsh domstate NAME` on host ("running", "shut off", …), or
// "error: …" when virsh fails.
func (l *Lab) DomState(host, name string) string {
	stdout, stderr, err := l.Virsh(host, "domstate", name)
	if err != nil {
		return "error: " + strings.TrimSpace(stderr)
	}
	return strings.TrimSpace(stdout)
}

// HostQEMUPid returns the single QEMU of uuid on host, failing the test when
// there is none or more than one.
func (l *Lab) HostQEMUPid(host, uuid string) int {
	l.t.Helper()
	pids := l.QEMUPids(uuid)
	if len(pids[host]) != 1 {
		l.t.Fatalf("QEMU processes of %s: %v; want exactly one on %s", uuid, pids, host)
	}
	return pids[host][0]
}

// LabRecord is the JSON value of a domains/ or disks/ key.
type LabRecord struct {
	Host  string `json:"host"`
	UUID  string `json:"uuid"`
	Name  string `json:"name"`
	Lease string `json:"lease"`
	Since string `json:"since"`
}

// EtcdGet returns every key under prefix with its value, read directly from
// the lab's etcd with etcdctl (failing the test when etcdctl fails).
func (l *Lab) EtcdGet(prefix string) map[string]string {
	l.t.Helper()
	stdout, stderr, err := l.Etcdctl("get", "--prefix", prefix, "-w", "json")
	if err != nil {
		l.t.Fatalf("etcdctl get --prefix %s: %v\n%s", prefix, err, stderr)
	}
	var resp struct {
		Kvs []struct {
			Key   []byte `json:"key"` // base64 in etcdctl's JSON: []byte decodes it
			Value []byte `json:"value"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal([]byte(stdout), &resp); err != nil {
		l.t.Fatalf("etcdctl get --prefix %s -w json: %v\n%s", prefix, err, stdout)
	}
	m := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m
}

// Claims returns the domains/ and disks/ keys (under /virtlease) whose record
// names uuid, decoded.
func (l *Lab) Claims(uuid string) map[string]LabRecord {
	l.t.Helper()
	out := make(map[string]LabRecord)
	for _, kind := range []string{"/virtlease/domains/", "/virtlease/disks/"} {
		for k, v := range l.EtcdGet(kind) {
			var r LabRecord
			if err := json.Unmarshal([]byte(v), &r); err != nil {
				l.t.Fatalf("etcd key %s: value is not a record: %v: %q", k, err, v)
			}
			if strings.EqualFold(r.UUID, uuid) {
				out[k] = r
			}
		}
	}
	return out
}

// HostLease is the lease of host's session as registered in etcd
// (/virtlease/hosts/HOST), "" when the host has no key.
func (l *Lab) HostLease(host string) string {
	l.t.Helper()
	v, ok := l.EtcdGet("/virtlease/hosts/" + host)["/virtlease/hosts/"+host]
	if !ok {
		return ""
	}
	var r struct {
		Lease string `json:"lease"`
	}
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		l.t.Fatalf("etcd key /virtlease/hosts/%s: %v: %q", host, err, v)
	}
	return r.Lease
}

// EtcdPut writes key = value directly in the lab's etcd, attached to lease
// (hex as etcdctl prints it; "" for none), failing the test on error. For
// forging states the product would not reach by itself.
func (l *Lab) EtcdPut(key, value, lease string) {
	l.t.Helper()
	args := []string{"put", key, value}
	if lease != "" {
		args = append(args, "--lease="+lease)
	}
	if _, stderr, err := l.Etcdctl(args...); err != nil {
		l.t.Fatalf("etcdctl put %s: %v\n%s", key, err, stderr)
	}
}

// LibvirtdLog is host's libvirtd log so far (errors and warnings: libvirt
// logs a failed hook call there with the hook's stderr).
func (l *Lab) LibvirtdLog(host string) string {
	b, _ := os.ReadFile(filepath.Join(l.HostDir(host), "log", "libvirtd.log"))
	return string(b)
}

// RequireHeldBy fails the test unless uuid's domain key and nDisks disk keys
// exist and all name host under host's current session lease; it returns
// the keys.
func (l *Lab) RequireHeldBy(uuid, host string, nDisks int) map[string]LabRecord {
	l.t.Helper()
	claims := l.Claims(uuid)
	lease := l.HostLease(host)
	domains, disks := 0, 0
	for k, r := range claims {
		if r.Host != host || r.Lease != lease || lease == "" {
			l.t.Errorf("etcd key %s = %+v; want host %s, lease %s", k, r, host, lease)
		}
		if strings.HasPrefix(k, "/virtlease/domains/") {
			domains++
		} else {
			disks++
		}
	}
	if domains != 1 || disks != nDisks {
		l.t.Fatalf("etcd keys naming %s: %v; want 1 domain key and %d disk key(s) held by %s", uuid, claims, nDisks, host)
	}
	return claims
}

// RequireNoClaims fails the test when a domains/ or disks/ key names uuid.
func (l *Lab) RequireNoClaims(uuid string) {
	l.t.Helper()
	if c := l.Claims(uuid); len(c) != 0 {
		l.t.Fatalf("etcd still holds keys for %s: %v", uuid, c)
	}
}

// EtcdPID is the PID of the lab's etcd server (from its pid file, checked
// against /proc: its command line names the lab's root).
func (l *Lab) EtcdPID() int {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Root, "etcd", "etcd.pid"))
	if err != nil {
		l.t.Fatalf("etcd pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		l.t.Fatalf("etcd pid file: %v", err)
	}
	argv, err := labReadCmdline(pid)
	if err != nil || !strings.Contains(strings.Join(argv, " "), l.Root+"/") {
		l.t.Fatalf("etcd pid %d is not this lab's etcd (%v %v)", pid, argv, err)
	}
	return pid
}

// PauseEtcd SIGSTOPs the lab's etcd server: every client's requests hang
// (connections are accepted by the kernel, nothing answers). The returned
// function SIGCONTs it; it also runs when the test ends.
func (l *Lab) PauseEtcd() (resume func()) {
	l.t.Helper()
	pid := l.EtcdPID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		l.t.Fatalf("SIGSTOP etcd (pid %d): %v", pid, err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				l.t.Errorf("SIGCONT etcd (pid %d): %v", pid, err)
			}
		})
	}
	l.t.Cleanup(resume)
	return resume
}

// HookEnvPath is the PATH libvirtd gives its hooks (Debian's libvirtd).
const HookEnvPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// HookResult is one direct run of a host's installed hook.
type HookResult struct {
	Stdout, Stderr string
	Code           int
	Took           time.Duration
}

// RunHook runs host's installed /etc/libvirt/hooks/qemu inside the host's
// namespaces the way libvirtd does: environment cleared to LC_ALL, PATH and
// HOME, cwd /, stdin the given XML (or anything else).
func (l *Lab) RunHook(host, stdin string, args ...string) HookResult {
	l.t.Helper()
	argv := append([]string{"exec", host, "env", "-i", "LC_ALL=C", "PATH=" + HookEnvPath, "HOME=/",
		"/etc/libvirt/hooks/qemu"}, args...)
	var r HookResult
	var err error
	r.Stdout, r.Stderr, r.Code, r.Took, err = labRunIn(time.Minute, l.env, strings.NewReader(stdin),
		filepath.Join(labBuild.repo, "scripts", "lab.sh"), argv...)
	if r.Code < 0 {
		l.t.Fatalf("%s: hook %v did not exit: %v\n%s", host, args, err, r.Stderr)
	}
	return r
}

// CLIConfig writes (once) a virtlease config that talks to the lab's etcd
// directly, for operator commands run from outside the hosts, and returns
// its path.
func (l *Lab) CLIConfig() string {
	l.t.Helper()
	p := filepath.Join(l.Root, "cli-config.yaml")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	cfg := fmt.Sprintf("# operator commands from outside the lab hosts (lab_test.go)\nhost: e2e-operator\nprefix: /virtlease\netcd:\n  endpoints: [%s]\n", l.EtcdURL())
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return p
}

// Virtlease runs the lab's virtlease binary with --config CLIConfig() and
// returns its output and exit code.
func (l *Lab) Virtlease(args ...string) (stdout, stderr string, code int, took time.Duration) {
	l.t.Helper()
	var err error
	stdout, stderr, code, took, err = labRunIn(time.Minute, l.env, nil, l.Bin, append([]string{"--config", l.CLIConfig()}, args...)...)
	if code < 0 {
		l.t.Fatalf("virtlease %v did not exit: %v\n%s", args, err, stderr)
	}
	return stdout, stderr, code, took
}

// LabSession is host's /run/virtlease/session, as the watchdog wrote it.
type LabSession struct {
	Host     string `json:"host"`
	Lease    string `json:"lease"`
	BootID   string `json:"boot_id"`
	Deadline int64  `json:"deadline"`
	State    string `json:"state"`
}

// Session reads host's session file ("" state when there is none).
func (l *Lab) Session(host string) LabSession {
	var s LabSession
	b, err := os.ReadFile(filepath.Join(l.HostDir(host), "run", "virtlease", "session"))
	if err == nil {
		json.Unmarshal(b, &s)
	}
	return s
}

// WatchdogLog is host's watchdog log so far.
func (l *Lab) WatchdogLog(host string) string {
	b, _ := os.ReadFile(filepath.Join(l.HostDir(host), "watchdog.log"))
	return string(b)
}

// DomainXML is the XML every host defined for name (vm1, vm1-copy, vm2).
func (l *Lab) DomainXML(name string) string {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Root, "domains", name+".xml"))
	if err != nil {
		l.t.Fatal(err)
	}
	return string(b)
}

// labWaitFor polls cond every 50 ms until it returns true, failing the test
// after timeout with what and cond's last note. It returns how long it took.
func labWaitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, note := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("after %v still waiting for %s: %s", timeout, what, note)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// labProcAlive reports whether pid exists and is not a zombie.
func labProcAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
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
