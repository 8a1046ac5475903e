//go:build e2e

// Fencing end to end: a lab host cut off from etcd (its proxy frozen) kills
// its guests before its session can expire; another host's start is refused
// until etcd expired the session, then succeeds; a watchdog restarted within
// the TTL (after SIGKILL or SIGTERM) resumes its session without fencing.
// The no-overlap checker runs throughout. Also the helpers the migration
// tests and the fence benchmark share (fmLab).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/virtlease/virtlease/lease"

	"github.com/virtlease/virtlease/scripts/procscan"
)

// fmLab is a lab with a running no-overlap checker and the timing its
// hosts were configured with. Its methods take the test they act for (a
// subtest must never fail its parent), unlike Lab's.
type fmLab struct {
	*Lab
	ck     *OverlapChecker
	TTL    time.Duration
	Margin time.Duration
	Hook   time.Duration // hook.timeout
}

// newFM starts a lab of n hosts with the checker running until the test ends.
func newFM(t *testing.T, n int, env ...string) *fmLab {
	t.Helper()
	l := startLab(t, n, env...)
	f := &fmLab{Lab: l, TTL: 10 * time.Second, Margin: 3 * time.Second, Hook: 5 * time.Second}
	cfg, err := os.ReadFile(l.ConfigPath(l.Hosts[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct {
		field string
		to    *time.Duration
	}{{"ttl", &f.TTL}, {"margin", &f.Margin}, {"timeout", &f.Hook}} {
		m := regexp.MustCompile(`(?m)^\s+` + v.field + `:\s*(\S+)`).FindSubmatch(cfg)
		if m == nil {
			t.Fatalf("%s: no %s in the lab config:\n%s", l.ConfigPath(l.Hosts[0]), v.field, cfg)
		}
		if *v.to, err = time.ParseDuration(string(m[1])); err != nil {
			t.Fatal(err)
		}
	}
	f.ck = StartOverlapChecker(t, l)
	return f
}

// sh runs scripts/lab.sh for this lab.
func (f *fmLab) sh(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := f.labsh(2*time.Minute, args...)
	if err != nil {
		t.Fatalf("lab.sh %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// tryStart runs virsh start; the error carries virsh's message.
func (f *fmLab) tryStart(host, name string) error {
	_, stderr, err := f.Virsh(host, "start", name)
	if err != nil {
		return fmt.Errorf("virsh start %s on %s: %s", name, host, virshMsg(err, stderr))
	}
	return nil
}

// virshMsg is virsh's error, without the hook's environment libvirt
// quotes in it ("Child process (LC_ALL=C PATH=… HOME=/root /etc/libvirt/hooks/qemu …)").
func virshMsg(err error, stderr string) string {
	msg := strings.Join(strings.Fields(stderr), " ")
	if i, j := strings.Index(msg, "Child process (LC_ALL"), strings.Index(msg, "/etc/libvirt/hooks/qemu "); i >= 0 && j > i {
		msg = msg[:i] + "Child process (… " + msg[j:]
	}
	if msg == "" {
		return err.Error()
	}
	return msg
}

func (f *fmLab) mustStart(t *testing.T, host, name string) {
	t.Helper()
	if err := f.tryStart(host, name); err != nil {
		t.Fatalf("virsh start %s on %s: %v", name, host, err)
	}
}

// mustRefuse asserts that a start of name on host is refused, naming holder
// in virsh's error (holder "" checks only the refusal).
func (f *fmLab) mustRefuse(t *testing.T, host, name, holder string) {
	t.Helper()
	err := f.tryStart(host, name)
	if err == nil {
		t.Fatalf("virsh start %s on %s succeeded; want it refused (held by %s)", name, host, holder)
	}
	if !strings.Contains(err.Error(), "virtlease") || (holder != "" && !strings.Contains(err.Error(), holder)) {
		t.Errorf("start of %s on %s refused, but not by virtlease naming %q: %v", name, host, holder, err)
	}
}

// destroyAll stops name on every host (errors ignored: not running).
func (f *fmLab) destroyAll(t *testing.T, name, uuid string) {
	t.Helper()
	for _, h := range f.Hosts {
		f.Virsh(h, "destroy", name)
	}
	fmWaitFor(t, "no QEMU of "+name+" left", 20*time.Second, func() bool { return len(f.QEMUPids(uuid)) == 0 })
}

// onlyOn asserts that exactly one QEMU runs uuid, on host, and returns it.
func (f *fmLab) onlyOn(t *testing.T, uuid, host string) fmProc {
	t.Helper()
	pids := f.QEMUPids(uuid)
	if len(pids) != 1 || len(pids[host]) != 1 {
		t.Fatalf("QEMUs of %s: %v; want exactly one, on %s", uuid, pids, host)
	}
	p, ok := fmProcOf(pids[host][0])
	if !ok {
		t.Fatalf("QEMU pid %d of %s on %s vanished", pids[host][0], uuid, host)
	}
	return p
}

// fmProc is a process, told apart from a later one with the same pid.
type fmProc struct {
	PID   int
	Start uint64
}

func fmProcOf(pid int) (fmProc, bool) {
	st, start, ok := procscan.Stat(fmt.Sprintf("/proc/%d/stat", pid))
	return fmProc{pid, start}, ok && st != 'Z' && st != 'X'
}

// Alive: the same process still exists and is not a zombie (a SIGKILLed
// QEMU is dead even before libvirtd reaps it; a SIGSTOPped one is alive).
func (p fmProc) Alive() bool {
	q, ok := fmProcOf(p.PID)
	return ok && q.Start == p.Start
}

// session reads host's /run/virtlease/session.
func (f *fmLab) session(t *testing.T, host string) lease.Session {
	t.Helper()
	s, err := lease.ReadSession(filepath.Join(f.HostDir(host), "run", "virtlease", "session"))
	if err != nil {
		t.Fatalf("%s: %v", host, err)
	}
	return s
}

// fmKV is one key as etcdctl get -w json shows it.
type fmKV struct {
	Key   string
	Value map[string]any
	Raw   string
	Lease int64 // the etcd lease the key is attached to (0: none)
}

// LeaseHex is the key's lease as virtlease writes it in values.
func (kv fmKV) LeaseHex() string { return fmt.Sprintf("%016x", kv.Lease) }

// get reads key (with prefix: every key under it) with etcdctl -w json.
func (f *fmLab) get(t *testing.T, key string, prefix bool) []fmKV {
	t.Helper()
	args := []string{"get", "-w", "json", key}
	if prefix {
		args = append(args, "--prefix")
	}
	out, stderr, err := f.Etcdctl(args...)
	if err != nil {
		t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	var resp struct {
		Kvs []struct {
			Key   []byte `json:"key"`
			Value []byte `json:"value"`
			Lease int64  `json:"lease"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var kvs []fmKV
	for _, kv := range resp.Kvs {
		v := map[string]any{}
		json.Unmarshal(kv.Value, &v)
		kvs = append(kvs, fmKV{Key: string(kv.Key), Value: v, Raw: string(kv.Value), Lease: kv.Lease})
	}
	return kvs
}

func (f *fmLab) get1(t *testing.T, key string) (fmKV, bool) {
	t.Helper()
	kvs := f.get(t, key, false)
	if len(kvs) == 0 {
		return fmKV{}, false
	}
	return kvs[0], true
}

// hostLease is the lease of host's hosts/ key (0 when absent).
func (f *fmLab) hostLease(t *testing.T, host string) int64 {
	t.Helper()
	kv, ok := f.get1(t, "/virtlease/hosts/"+host)
	if !ok {
		return 0
	}
	return kv.Lease
}

// vm2Disk is vm2's disk key (its nbd export on this lab's port).
func (f *fmLab) vm2Disk() string {
	return "/virtlease/disks/" + strings.ReplaceAll("nbd/127.0.0.1:"+strconv.Itoa(f.Port+2)+"/vm2", "/", "%2F")
}

// heldBy asserts that the domain key of uuid and the given disk keys name
// host and sit on host's live session lease, in both the value and etcd's
// own lease attachment.
func (f *fmLab) heldBy(t *testing.T, host, uuid string, disks ...string) {
	t.Helper()
	hl := f.hostLease(t, host)
	if hl == 0 {
		t.Fatalf("%s has no hosts/ key: no live session", host)
	}
	for _, k := range append([]string{"/virtlease/domains/" + uuid}, disks...) {
		kv, ok := f.get1(t, k)
		if !ok {
			t.Errorf("%s absent; want it held by %s", k, host)
			continue
		}
		if kv.Value["host"] != host || kv.Lease != hl || kv.Value["lease"] != kv.LeaseHex() {
			t.Errorf("%s = %s on etcd lease %x; want host %s on its session lease %x", k, kv.Raw, kv.Lease, host, hl)
		}
	}
}

// fmWaitFor polls cond every 20 ms until it holds or timeout passes (then
// the test fails). It returns how long it took.
func fmWaitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// watchdogLog is host's watchdog log from byte offset on.
func (f *fmLab) watchdogLog(host string, offset int64) string {
	b, _ := os.ReadFile(filepath.Join(f.HostDir(host), "watchdog.log"))
	if offset > int64(len(b)) {
		return ""
	}
	return string(b[offset:])
}

func (f *fmLab) watchdogLogSize(host string) int64 {
	st, err := os.Stat(filepath.Join(f.HostDir(host), "watchdog.log"))
	if err != nil {
		return 0
	}
	return st.Size()
}

func (f *fmLab) watchdogPID(t *testing.T, host string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.HostDir(host), "watchdog.pid"))
	if err != nil {
		t.Fatalf("%s: no watchdog.pid: %v", host, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// diagnose logs the lab's state (which daemons are alive) for a failure.
func (f *fmLab) diagnose(t *testing.T) {
	t.Helper()
	out, stderr, err := f.labsh(time.Minute, "status")
	t.Logf("lab.sh status (%v):\n%s%s", err, out, stderr)
	for _, h := range f.Hosts {
		b, _ := os.ReadFile(filepath.Join(f.HostDir(h), "log", "libvirtd.log"))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("%s: libvirtd.log ends:\n%s", h, strings.Join(lines[max(0, len(lines)-5):], "\n"))
	}
}

// ---------------------------------------------------------------- partition

// fenceRun is one partition of a host running a guest, in boot-clock times
// (CLOCK_BOOTTIME, as the session file's deadline).
type fenceRun struct {
	Victim, Taker string
	Frozen        time.Duration // just before the proxy was frozen
	Deadline      time.Duration // the victim's session deadline: last acknowledged renewal's send time + TTL
	Gone          time.Duration // the victim's QEMU seen dead
	Taken         time.Duration // the taker's start succeeded
	Refusals      int           // the taker's refused starts before that
	Reasons       map[string]int
	Slowest       time.Duration // the taker's slowest start attempt
}

func (r fenceRun) FenceTime() time.Duration    { return r.Gone - r.Frozen }
func (r fenceRun) TakeoverTime() time.Duration { return r.Taken - r.Frozen }

// LastRenewal is when the last renewal the victim got acknowledged was sent
// (its session file's deadline − TTL).
func (r fenceRun) LastRenewal(ttl time.Duration) time.Duration { return r.Deadline - ttl }

func (r fenceRun) describe(ttl time.Duration) string {
	return fmt.Sprintf("%s frozen: fenced after %s (%s after its last acknowledged renewal), %s took over after %s (%s after the session deadline) following %d refused starts %v (slowest attempt %s)",
		r.Victim, r.FenceTime().Round(time.Millisecond), (r.Gone - r.LastRenewal(ttl)).Round(time.Millisecond), r.Taker,
		r.TakeoverTime().Round(time.Millisecond), (r.Taken - r.Deadline).Round(time.Millisecond), r.Refusals, r.Reasons, r.Slowest.Round(time.Millisecond))
}

// classify names a refused start's reason for the report.
func classify(msg string) string {
	for _, k := range []struct{ sub, name string }{
		{"is being migrated", "migrating"},
		{"may still run on host", "unfenced"},
		{"is running on host host-a", "held-by-host-a"},
		{"is running on host host-b", "held-by-host-b"},
		{"is running on host host-c", "held-by-host-c"},
		{"is in use by", "disk-held"},
		{"no live virtlease session", "no-session"},
		{"etcd did not answer", "etcd-unavailable"},
		{"already active", "already-active"},
		{"failed to connect to the hypervisor", "libvirtd-down"},
	} {
		if strings.Contains(msg, k.sub) {
			return k.name
		}
	}
	return "other"
}

// partition freezes victim's proxy to etcd while it runs name (uuid) and
// measures: the victim's QEMU must be gone within ttl − margin + 1 s of the
// last renewal it got acknowledged (and of the freeze); taker's start,
// looped as fast as virsh goes, must be refused until the victim's session
// deadline and then succeed. stopQEMU first SIGSTOPs the victim's QEMU (a
// guest that would ignore SIGTERM). The victim stays frozen: see rejoin.
func (f *fmLab) partition(t *testing.T, victim, taker, name, uuid string, stopQEMU bool) fenceRun {
	t.Helper()
	q := f.onlyOn(t, uuid, victim)
	if stopQEMU {
		if err := syscall.Kill(q.PID, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		fmWaitFor(t, "QEMU stopped", 5*time.Second, func() bool {
			st, _, _ := procscan.Stat(fmt.Sprintf("/proc/%d/stat", q.PID))
			return st == 'T'
		})
	}
	if s := f.session(t, victim); s.State != lease.SessionOK {
		t.Fatalf("%s: session state %q before the partition", victim, s.State)
	}
	r := fenceRun{Victim: victim, Taker: taker, Reasons: map[string]int{}}
	var mu sync.Mutex
	var last string
	taken := make(chan error, 1)

	quit := make(chan struct{})
	defer close(quit) // also when the test fails half-way
	r.Frozen = lease.BootNow()
	f.sh(t, "freeze", victim)
	go func() {
		deadline := time.Now().Add(f.TTL + 30*time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-quit:
				taken <- fmt.Errorf("stopped")
				return
			default:
			}
			t0 := lease.BootNow()
			err := f.tryStart(taker, name)
			now := lease.BootNow()
			mu.Lock()
			r.Slowest = max(r.Slowest, now-t0)
			if err == nil {
				r.Taken = now
				mu.Unlock()
				taken <- nil
				return
			}
			r.Refusals++
			r.Reasons[classify(err.Error())]++
			last = err.Error()
			mu.Unlock()
		}
		taken <- fmt.Errorf("%s never started %s (last refusal: %s)", taker, name, last)
	}()

	fmWaitFor(t, victim+"'s QEMU gone", f.TTL+10*time.Second, func() bool {
		if q.Alive() {
			return false
		}
		r.Gone = lease.BootNow()
		return true
	})
	s := f.session(t, victim)
	if s.State != lease.SessionFencing {
		t.Errorf("%s: session state %q after its guest died; want fencing", victim, s.State)
	}
	r.Deadline = time.Duration(s.Deadline)
	if err := <-taken; err != nil {
		f.diagnose(t)
		t.Fatal(err)
	}

	// Safety bounds.
	fencePoint := r.Deadline - f.Margin
	if r.Gone > fencePoint+time.Second {
		t.Errorf("%s's QEMU gone %s after its fence point (deadline − margin): bound is 1 s", victim, (r.Gone - fencePoint).Round(time.Millisecond))
	}
	if bound := f.TTL - f.Margin + time.Second; r.FenceTime() > bound {
		t.Errorf("%s's QEMU gone %s after the freeze: bound is ttl − margin + 1 s = %s", victim, r.FenceTime().Round(time.Millisecond), bound)
	}
	if r.Deadline > r.Frozen+f.TTL+time.Second {
		t.Errorf("%s's session deadline %s after the freeze: more than the TTL (a renewal acknowledged after the freeze?)", victim, r.Deadline-r.Frozen)
	}
	if r.Taken < r.Deadline {
		t.Errorf("%s started %s %s BEFORE %s's session deadline", taker, name, (r.Deadline - r.Taken).Round(time.Millisecond), victim)
	}
	if r.Taken < r.Gone {
		t.Errorf("%s started %s before %s's QEMU was gone", taker, name, victim)
	}
	if r.Refusals == 0 {
		t.Errorf("%s's first start succeeded: the partition was not noticed?", taker)
	}
	for reason := range r.Reasons {
		if reason != "held-by-"+victim && reason != "disk-held" {
			t.Logf("note: %s's start refused for another reason (%s) %d time(s), last: %s", taker, reason, r.Reasons[reason], last)
		}
	}
	if hl := f.hostLease(t, victim); hl != 0 && fmt.Sprintf("%016x", hl) == s.Lease.String() {
		t.Errorf("%s's session %s still in etcd after %s took over", victim, s.Lease, taker)
	}
	f.onlyOn(t, uuid, taker)
	f.heldBy(t, taker, uuid)
	t.Logf("%s (SIGSTOPped QEMU: %v; ttl %s, margin %s)", r.describe(f.TTL), stopQEMU, f.TTL, f.Margin)
	return r
}

// rejoin thaws victim after partition: its watchdog takes a new session,
// the guest stays on taker (same process), and the victim's start is
// refused, naming taker.
func (f *fmLab) rejoin(t *testing.T, victim, taker, name, uuid string) {
	t.Helper()
	old := f.session(t, victim).Lease
	q := f.onlyOn(t, uuid, taker)
	f.sh(t, "thaw", victim)
	d := fmWaitFor(t, victim+" holding a new session", 30*time.Second, func() bool {
		s, err := lease.ReadSession(filepath.Join(f.HostDir(victim), "run", "virtlease", "session"))
		return err == nil && s.State == lease.SessionOK && s.Lease != old &&
			f.hostLease(t, victim) == int64(s.Lease)
	})
	t.Logf("%s thawed: new session after %s", victim, d.Round(time.Millisecond))
	// One reconcile round (5 s) on each side: nothing moves.
	until := time.Now().Add(6 * time.Second)
	for time.Now().Before(until) {
		if !q.Alive() {
			t.Fatalf("%s's QEMU of %s died after %s rejoined", taker, name, victim)
		}
		if p := f.QEMUPids(uuid); len(p[victim]) > 0 {
			t.Fatalf("%s runs %s again after rejoining: %v", victim, name, p)
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.heldBy(t, taker, uuid)
	f.mustRefuse(t, victim, name, taker)
}

// TestE2EFencePartition: vm2 (nbd disk) runs on host-a; host-a's path to
// etcd freezes. Asserted: host-a's QEMU is gone within ttl − margin + 1 s of
// the last renewal it got acknowledged and of the freeze; host-b's start,
// looped, is refused until host-a's session deadline and then succeeds;
// thawed, host-a takes a new session, does not get the guest back, and its
// start is refused (held by host-b). Then the same the other way round with
// host-b's QEMU SIGSTOPped first (it would ignore SIGTERM): SIGKILL still
// fences it in time. The checker sees no overlap. Default timing (10s/1s/3s).
func TestE2EFencePartition(t *testing.T) {
	f := newFM(t, 2)
	f.mustStart(t, "host-a", "vm2")
	f.partition(t, "host-a", "host-b", "vm2", labVM2UUID, false)
	f.rejoin(t, "host-a", "host-b", "vm2", labVM2UUID)

	f.partition(t, "host-b", "host-a", "vm2", labVM2UUID, true)
	f.rejoin(t, "host-b", "host-a", "vm2", labVM2UUID)
	f.ck.Check(t)
}

// TestE2EFenceQEMUInItsOwnMountNamespace: as on a real host, libvirt's stock
// namespaces put vm2's QEMU on host-a in a mount namespace of its own, and
// the watchdog runs in another (its unit's hardening), both in host-a's
// PID namespace. Asserted first that the lab really is so; then host-a's
// path to etcd freezes, and its fence still finds and kills that QEMU
// before its session can expire (the partition's safety bounds), while
// host-b's guests are none of host-a's business.
func TestE2EFenceQEMUInItsOwnMountNamespace(t *testing.T) {
	f := newFM(t, 2)
	const a, b = "host-a", "host-b"
	f.mustStart(t, a, "vm2")
	q := f.onlyOn(t, labVM2UUID, a)
	wd := f.watchdogPID(t, a)
	ns := func(pid int, kind string) string {
		t.Helper()
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	pidns, err := os.ReadFile(filepath.Join(f.HostDir(a), "pidns"))
	if err != nil {
		t.Fatal(err)
	}
	libvirtd := f.HostComm(a, "libvirtd")
	if len(libvirtd) != 1 {
		t.Fatalf("%s: libvirtd processes %v, want one", a, libvirtd)
	}
	for _, c := range []struct {
		what string
		pid  int
	}{{"QEMU", q.PID}, {"watchdog", wd}, {"libvirtd", libvirtd[0]}} {
		if got := ns(c.pid, "pid"); got != strings.TrimSpace(string(pidns)) {
			t.Fatalf("%s's %s (pid %d) is in PID namespace %s, not the host's %s", a, c.what, c.pid, got, pidns)
		}
	}
	if ns(q.PID, "mnt") == ns(wd, "mnt") || ns(q.PID, "mnt") == ns(libvirtd[0], "mnt") || ns(wd, "mnt") == ns(libvirtd[0], "mnt") {
		t.Fatalf("%s: QEMU %s, watchdog %s, libvirtd %s: want three mount namespaces, as libvirt's stock namespaces and the unit's hardening make them",
			a, ns(q.PID, "mnt"), ns(wd, "mnt"), ns(libvirtd[0], "mnt"))
	}
	t.Logf("%s: QEMU pid %d in %s, watchdog pid %d in %s, libvirtd in %s", a, q.PID, ns(q.PID, "mnt"), wd, ns(wd, "mnt"), ns(libvirtd[0], "mnt"))
	// A guest of host-b's, which host-a's /proc does not show.
	f.mustStart(t, b, "vm1")
	other := f.onlyOn(t, labVM1UUID, b)
	f.partition(t, a, b, "vm2", labVM2UUID, false)
	if !other.Alive() {
		t.Errorf("%s's fence killed %s's vm1 (pid %d)", a, b, other.PID)
	}
	f.ck.Check(t)
}

// TestE2EWatchdogRestart: with vm2 running on host-a,
//   - kill -9 its watchdog, check host-b is still refused, start it again
//     within the TTL: it resumes the same session (same lease in
//     hosts/host-a), and past the old session's deadline the same QEMU
//     still runs: no fence;
//   - SIGTERM the watchdog: the session stays (same lease), the session file
//     says stopped, unfenced/host-a lists vm2 and its disk, starts are
//     refused (on host-b: held; on host-a: no live session); start it again
//     within the TTL: it resumes, the unfenced record is deleted, the same
//     QEMU still runs past the old deadline.
func TestE2EWatchdogRestart(t *testing.T) {
	f := newFM(t, 2)
	const a, b = "host-a", "host-b"
	f.mustStart(t, a, "vm2")
	q := f.onlyOn(t, labVM2UUID, a)
	L := f.hostLease(t, a)
	if L == 0 {
		t.Fatal("host-a has no session")
	}
	disk := f.vm2Disk()
	f.heldBy(t, a, labVM2UUID, disk)

	// resumed checks that host-a resumed lease L and did not fence: waits
	// past the old session's deadline, then checks the guest and the keys.
	resumed := func(what string, oldDeadline time.Duration, logFrom int64) {
		t.Helper()
		fmWaitFor(t, "host-a's session past the old deadline", f.TTL+10*time.Second, func() bool {
			return lease.BootNow() > oldDeadline+500*time.Millisecond
		})
		s := f.session(t, a)
		if s.State != lease.SessionOK || int64(s.Lease) != L || time.Duration(s.Deadline) <= oldDeadline {
			t.Errorf("%s: session file %+v; want state ok, lease %016x, deadline past the old one", what, s, L)
		}
		if got := f.hostLease(t, a); got != L {
			t.Errorf("%s: hosts/host-a on lease %x, want the same lease %x", what, got, L)
		}
		if !q.Alive() {
			t.Fatalf("%s: vm2's QEMU (pid %d) is gone: a false fence", what, q.PID)
		}
		f.heldBy(t, a, labVM2UUID, disk)
		log := f.watchdogLog(a, logFrom)
		if !strings.Contains(log, "resuming session") || !strings.Contains(log, fmt.Sprintf("lease=%016x", L)) {
			t.Errorf("%s: the new watchdog's log does not say it resumed lease %016x:\n%s", what, L, log)
		}
		if strings.Contains(log, "fencing") || strings.Contains(log, "msg=killed") {
			t.Errorf("%s: the watchdog fenced:\n%s", what, log)
		}
	}

	// kill -9, back within the TTL.
	s0 := f.session(t, a)
	old := f.watchdogPID(t, a)
	logFrom := f.watchdogLogSize(a)
	killed := lease.BootNow()
	f.sh(t, "stop-watchdog", a, "KILL")
	if _, ok := fmProcOf(old); ok {
		t.Fatalf("watchdog pid %d alive after stop-watchdog KILL", old)
	}
	f.mustRefuse(t, b, "vm2", a)
	f.sh(t, "start-watchdog", a)
	gap := lease.BootNow() - killed
	if nw := f.watchdogPID(t, a); nw == old {
		t.Fatalf("start-watchdog did not start a new watchdog (pid %d)", nw)
	}
	if gap >= f.TTL-f.Margin {
		t.Fatalf("the watchdog was away %s: not within ttl − margin, the test proves nothing", gap)
	}
	t.Logf("kill -9: watchdog away %s (session deadline was %s ahead when killed)", gap.Round(time.Millisecond),
		(time.Duration(s0.Deadline) - killed).Round(time.Millisecond))
	resumed("after kill -9", time.Duration(s0.Deadline), logFrom)

	// SIGTERM, back within the TTL.
	s1 := f.session(t, a)
	logFrom = f.watchdogLogSize(a)
	stopped := lease.BootNow()
	f.sh(t, "stop-watchdog", a)
	if s := f.session(t, a); s.State != lease.SessionStopped || int64(s.Lease) != L {
		t.Errorf("after SIGTERM: session file %+v; want state stopped on lease %016x", s, L)
	}
	if got := f.hostLease(t, a); got != L {
		t.Errorf("after SIGTERM: hosts/host-a on lease %x, want %x kept (guests running)", got, L)
	}
	u, ok := f.get1(t, "/virtlease/unfenced/host-a")
	if !ok {
		t.Fatal("after SIGTERM: no unfenced/host-a record")
	}
	if !strings.Contains(u.Raw, labVM2UUID) || !strings.Contains(u.Raw, "nbd/127.0.0.1:"+strconv.Itoa(f.Port+2)+"/vm2") || u.Lease != 0 {
		t.Errorf("unfenced/host-a = %s (lease %x); want vm2 and its disk listed, on no lease", u.Raw, u.Lease)
	}
	f.mustRefuse(t, b, "vm2", a)
	if err := f.tryStart(a, "vm1"); err == nil || !strings.Contains(err.Error(), "no live virtlease session") {
		t.Errorf("start of vm1 on host-a with its watchdog stopped: %v; want refused: no live session", err)
		f.Virsh(a, "destroy", "vm1")
	}
	f.sh(t, "start-watchdog", a)
	gap = lease.BootNow() - stopped
	if gap >= f.TTL-f.Margin {
		t.Fatalf("the watchdog was away %s: not within ttl − margin", gap)
	}
	fmWaitFor(t, "unfenced/host-a deleted", 10*time.Second, func() bool {
		_, ok := f.get1(t, "/virtlease/unfenced/host-a")
		return !ok
	})
	t.Logf("SIGTERM: watchdog away %s", gap.Round(time.Millisecond))
	resumed("after SIGTERM", time.Duration(s1.Deadline), logFrom)
	f.onlyOn(t, labVM2UUID, a)
}

// ---------------------------------------------------------------- benchmark

// TestLabFenceBench partitions a host running vm2 VL_FENCEBENCH times
// (default: skipped), alternating host-a and host-b, and prints per run the
// fence time (freeze → QEMU gone) and the takeover time (freeze → the other
// host's start succeeds), then min/median/max against ttl and margin. The
// safety bounds are asserted on every run. scripts/fencebench.sh runs it.
func TestLabFenceBench(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("VL_FENCEBENCH"))
	if n <= 0 {
		t.Skip("set VL_FENCEBENCH=N (scripts/fencebench.sh) to run N partitions")
	}
	var env []string
	for _, k := range []string{"VL_LAB_TTL", "VL_LAB_RENEW", "VL_LAB_MARGIN", "VL_LAB_HOOK_TIMEOUT"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	f := newFM(t, 2, env...)
	victim, taker := "host-a", "host-b"
	f.mustStart(t, victim, "vm2")
	var runs []fenceRun
	for i := range n {
		r := f.partition(t, victim, taker, "vm2", labVM2UUID, i%2 == 1)
		runs = append(runs, r)
		f.rejoin(t, victim, taker, "vm2", labVM2UUID)
		victim, taker = taker, victim
	}
	var b strings.Builder
	fmt.Fprintf(&b, "fence benchmark: %d partitions, ttl %s, margin %s (fence bound ttl − margin + 1 s = %s; takeover ≥ ttl after the last renewal)\n",
		n, f.TTL, f.Margin, f.TTL-f.Margin+time.Second)
	fmt.Fprintf(&b, "%4s %-7s %-8s %12s %16s %12s %16s %9s %16s\n", "run", "victim", "qemu", "fence", "fence-lastrenew", "takeover", "takeover-deadln", "refusals", "slowest-attempt")
	var fence, fenceRenew, take []time.Duration
	for i, r := range runs {
		qemu := "running"
		if i%2 == 1 {
			qemu = "SIGSTOP"
		}
		fr := r.Gone - r.LastRenewal(f.TTL)
		fmt.Fprintf(&b, "%4d %-7s %-8s %12s %16s %12s %16s %9d %16s\n", i+1, r.Victim, qemu, r.FenceTime().Round(time.Millisecond),
			fr.Round(time.Millisecond), r.TakeoverTime().Round(time.Millisecond), (r.Taken - r.Deadline).Round(time.Millisecond), r.Refusals,
			r.Slowest.Round(time.Millisecond))
		fence, fenceRenew, take = append(fence, r.FenceTime()), append(fenceRenew, fr), append(take, r.TakeoverTime())
	}
	stats := func(name string, ds []time.Duration) {
		s := slices.Clone(ds)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		fmt.Fprintf(&b, "%-36s min %8s  median %8s  max %8s\n", name, s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
	}
	stats("fence (freeze → QEMU gone)", fence)
	stats("fence (last ack'd renewal → gone)", fenceRenew)
	stats("takeover (freeze → other host runs)", take)
	fmt.Print(b.String())
}
