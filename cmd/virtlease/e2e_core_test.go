//go:build e2e

// Core end-to-end tests: the lab's real libvirtd + QEMU hosts with the real
// hook and watchdogs (lab_test.go, scripts/lab.sh); every assertion is on
// what an operator sees — virsh's output, etcdctl, /proc.

package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// labVM2DiskID is vm2's disk as virtlease names it (the lab's qemu-nbd export).
func (l *Lab) labVM2DiskID() string { return "nbd/127.0.0.1:" + strconv.Itoa(l.Port+2) + "/vm2" }

// labVM1DiskID is vm1's (and vm1-copy's) qcow2 file.
func (l *Lab) labVM1DiskID() string {
	return "file" + filepath.Join(l.Root, "shared", "vm1.qcow2")
}

// labDiskKey is the etcd key of a disk ID.
func labDiskKey(id string) string { return "/virtlease/disks/" + url.PathEscape(id) }

// virtleaseLine returns the line virtlease wrote, as virsh relays it ("" when
// virsh's error holds none).
func virtleaseLine(stderr string) string {
	i := strings.Index(stderr, "virtlease: ")
	if i < 0 {
		return ""
	}
	line, _, _ := strings.Cut(stderr[i:], "\n")
	return strings.TrimSpace(line)
}

// requireNoGoNoise fails when text looks like a Go panic or a raw library log.
func requireNoGoNoise(t *testing.T, what, text string) {
	t.Helper()
	for _, bad := range []string{"goroutine ", "panic:", "runtime error", `"level":`, "[recovered]"} {
		if strings.Contains(text, bad) {
			t.Errorf("%s contains %q (a Go stack trace or raw log):\n%s", what, bad, text)
		}
	}
}

// requireStartRefused runs `virsh start name` on host, which must fail in
// the hook (not in QEMU), and returns the result with virtlease's line.
func requireStartRefused(t *testing.T, l *Lab, host, name string) (VirshResult, string) {
	t.Helper()
	r := l.VirshTimed(host, "start", name)
	if r.Err == nil {
		t.Fatalf("%s: virsh start %s succeeded (%s); want it refused", host, name, strings.TrimSpace(r.Stdout))
	}
	msg := virtleaseLine(r.Stderr)
	if !strings.Contains(r.Stderr, "Hook script execution failed") || msg == "" {
		t.Fatalf("%s: virsh start %s failed, but not in virtlease's hook:\n%s", host, name, r.Stderr)
	}
	requireNoGoNoise(t, "virsh start's error", r.Stderr)
	return r, msg
}

func requireContains(t *testing.T, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s does not mention %q:\n%s", what, w, text)
		}
	}
}

// TestE2EOneHostOnly is the seed's story: vm2 (same UUID and shared nbd
// disk on both hosts) runs on host-a; starting it on host-b is refused with
// virsh naming host-a; exactly one QEMU runs it across the hosts; etcd holds
// its domain and disk keys on host-a's session; `virtlease status` shows
// host-a as the owner, as a table and as JSON.
func TestE2EOneHostOnly(t *testing.T) {
	l := startLab(t, 2)
	a, b := l.Hosts[0], l.Hosts[1]

	r := l.VirshTimed(a, "start", "vm2")
	if r.Err != nil {
		t.Fatalf("%s: virsh start vm2: %v\n%s", a, r.Err, r.Stderr)
	}
	t.Logf("%s: virsh start vm2: %s (%v)", a, strings.TrimSpace(r.Stdout), r.Took.Round(time.Millisecond))
	if st := l.DomState(a, "vm2"); st != "running" {
		t.Fatalf("%s: vm2 is %q after its start; want running", a, st)
	}
	keys := l.RequireHeldBy(labVM2UUID, a, 1)
	if _, ok := keys[labDiskKey(l.labVM2DiskID())]; !ok {
		t.Errorf("no disk key %s among %v", labDiskKey(l.labVM2DiskID()), keys)
	}
	aPid := l.HostQEMUPid(a, labVM2UUID)

	for i := range 3 { // the first, and later ones: nothing sticks after a refusal
		r, msg := requireStartRefused(t, l, b, "vm2")
		t.Logf("%s: start #%d refused in %v: %s", b, i+1, r.Took.Round(time.Millisecond), msg)
		requireContains(t, "virsh's error", msg, "vm2", labVM2UUID, "running on host "+a, "refusing")
		if r.Took > 3*time.Second {
			t.Errorf("refusing took %v; want well under the hook deadline", r.Took)
		}
	}
	if st := l.DomState(b, "vm2"); st != "shut off" {
		t.Errorf("%s: vm2 is %q after the refused start; want shut off", b, st)
	}
	pids := l.QEMUPids(labVM2UUID)
	if len(pids) != 1 || len(pids[a]) != 1 || pids[a][0] != aPid {
		t.Fatalf("QEMUs of vm2 across the hosts: %v; want only pid %d on %s", pids, aPid, a)
	}
	// The refused start's stopped/release calls freed nothing of host-a's.
	l.RequireHeldBy(labVM2UUID, a, 1)

	// virtlease status, as an operator runs it anywhere with etcd access.
	out, stderr, code, _ := l.Virtlease("status")
	if code != 0 {
		t.Fatalf("virtlease status: exit %d\n%s", code, stderr)
	}
	t.Logf("virtlease status:\n%s", out)
	var row string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "vm2" {
			row = line
		}
	}
	requireContains(t, "virtlease status's vm2 row", row, labVM2UUID, a, l.labVM2DiskID())
	for _, h := range l.Hosts {
		requireContains(t, "virtlease status", out, h, l.HostLease(h))
	}
	out, _, code, _ = l.Virtlease("status", "vm2")
	if code != 0 || !strings.Contains(out, a) {
		t.Errorf("virtlease status vm2: exit %d; want 0 and %s:\n%s", code, a, out)
	}
	_, stderr, code, _ = l.Virtlease("status", "vm1")
	if code != 1 || !strings.Contains(stderr, "not held") {
		t.Errorf("virtlease status vm1 (nobody holds it): exit %d, %q; want exit 1 saying so", code, stderr)
	}

	out, stderr, code, _ = l.Virtlease("status", "--json")
	if code != 0 {
		t.Fatalf("virtlease status --json: exit %d\n%s", code, stderr)
	}
	var st struct {
		Hosts []struct {
			Host       string `json:"host"`
			Lease      string `json:"lease"`
			TTLSeconds int64  `json:"ttl_seconds"`
		} `json:"hosts"`
		Domains []struct {
			Host  string   `json:"host"`
			UUID  string   `json:"uuid"`
			Name  string   `json:"name"`
			Lease string   `json:"lease"`
			Disks []string `json:"disks"`
		} `json:"domains"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("virtlease status --json: %v\n%s", err, out)
	}
	if len(st.Hosts) != 2 {
		t.Errorf("status --json hosts: %+v; want %v", st.Hosts, l.Hosts)
	}
	for _, h := range st.Hosts {
		if h.Lease != l.HostLease(h.Host) || h.TTLSeconds <= 0 {
			t.Errorf("status --json host %+v: want lease %s and a TTL left", h, l.HostLease(h.Host))
		}
	}
	if len(st.Domains) != 1 || st.Domains[0].UUID != labVM2UUID || st.Domains[0].Host != a ||
		st.Domains[0].Name != "vm2" || st.Domains[0].Lease != l.HostLease(a) ||
		len(st.Domains[0].Disks) != 1 || st.Domains[0].Disks[0] != l.labVM2DiskID() {
		t.Errorf("status --json domains: %+v; want vm2 %s on %s with disk %s", st.Domains, labVM2UUID, a, l.labVM2DiskID())
	}
}

// TestE2EDestroyThenStartElsewhere: once host-a destroys vm2, its keys are
// gone and host-b can start it; then the keys name host-b and host-a is the
// one refused.
func TestE2EDestroyThenStartElsewhere(t *testing.T) {
	l := startLab(t, 2)
	a, b := l.Hosts[0], l.Hosts[1]

	l.MustVirsh(a, "start", "vm2")
	l.RequireHeldBy(labVM2UUID, a, 1)
	aPid := l.HostQEMUPid(a, labVM2UUID)
	requireStartRefused(t, l, b, "vm2")

	r := l.VirshTimed(a, "destroy", "vm2")
	if r.Err != nil {
		t.Fatalf("%s: virsh destroy vm2: %v\n%s", a, r.Err, r.Stderr)
	}
	t.Logf("%s: virsh destroy vm2 took %v", a, r.Took.Round(time.Millisecond))
	if labProcAlive(aPid) {
		t.Fatalf("%s: vm2's QEMU (pid %d) still runs after virsh destroy", a, aPid)
	}
	// The hook's stopped/release calls run before virsh destroy returns.
	l.RequireNoClaims(labVM2UUID)

	r = l.VirshTimed(b, "start", "vm2")
	if r.Err != nil {
		t.Fatalf("%s: virsh start vm2 after %s destroyed it: %v\n%s", b, a, r.Err, r.Stderr)
	}
	t.Logf("%s: virsh start vm2 took %v", b, r.Took.Round(time.Millisecond))
	l.RequireHeldBy(labVM2UUID, b, 1)
	bPid := l.HostQEMUPid(b, labVM2UUID)
	if pids := l.QEMUPids(labVM2UUID); len(pids) != 1 || pids[b][0] != bPid {
		t.Fatalf("QEMUs of vm2: %v; want one, on %s", pids, b)
	}
	_, msg := requireStartRefused(t, l, a, "vm2")
	requireContains(t, "virsh's error on "+a, msg, "running on host "+b)
}

// TestE2ECopiedDiskRefused: vm1-copy is a copied XML (another UUID and name,
// vm1's disk). While vm1 runs on host-a, vm1-copy is refused on host-b and
// on host-a itself, naming the disk and host-a — virtlease refuses it in
// prepare, before QEMU's own image lock could (which would not exist on
// rbd/iSCSI). The refusals free none of vm1's keys; once vm1 stops,
// vm1-copy may run and its disk key names vm1-copy.
func TestE2ECopiedDiskRefused(t *testing.T) {
	l := startLab(t, 2)
	a, b := l.Hosts[0], l.Hosts[1]
	disk := l.labVM1DiskID()

	l.MustVirsh(a, "start", "vm1")
	held := l.RequireHeldBy(labVM1UUID, a, 1)
	if _, ok := held[labDiskKey(disk)]; !ok {
		t.Fatalf("no disk key %s among %v", labDiskKey(disk), held)
	}
	vm1Pid := l.HostQEMUPid(a, labVM1UUID)

	for _, h := range []string{b, a} {
		r, msg := requireStartRefused(t, l, h, "vm1-copy")
		t.Logf("%s: virsh start vm1-copy refused in %v: %s", h, r.Took.Round(time.Millisecond), msg)
		requireContains(t, h+": virsh's error", msg, "disk "+disk, "domain vm1 ", labVM1UUID, "on host "+a, "vm1-copy")
		if strings.Contains(r.Stderr, "write lock") {
			t.Errorf("%s: the refusal came from QEMU's image lock, not virtlease:\n%s", h, r.Stderr)
		}
	}
	if pids := l.QEMUPids(labVM1CopyUUID); len(pids) != 0 {
		t.Fatalf("QEMU processes for vm1-copy: %v; want none", pids)
	}
	if !labProcAlive(vm1Pid) {
		t.Fatalf("vm1's QEMU (pid %d) died", vm1Pid)
	}
	// The refused starts' stopped/release calls (one of them on host-a,
	// the holder's own host) left vm1's keys alone.
	after := l.RequireHeldBy(labVM1UUID, a, 1)
	for k, v := range held {
		if after[k] != v {
			t.Errorf("key %s changed: %+v → %+v", k, v, after[k])
		}
	}
	l.RequireNoClaims(labVM1CopyUUID)

	l.MustVirsh(a, "destroy", "vm1")
	l.RequireNoClaims(labVM1UUID)
	l.MustVirsh(b, "start", "vm1-copy")
	c := l.RequireHeldBy(labVM1CopyUUID, b, 1)
	if r := c[labDiskKey(disk)]; r.Name != "vm1-copy" {
		t.Errorf("disk key after vm1-copy's start: %+v; want vm1-copy's", r)
	}
	_, msg := requireStartRefused(t, l, a, "vm1")
	requireContains(t, "vm1 on "+a+" while vm1-copy runs on "+b, msg, "disk "+disk, "vm1-copy", "on host "+b)
}

// TestE2ELibvirtdRestartKeepsGuest: libvirtd on host-a restarts (SIGTERM,
// then SIGKILL) while vm2 and vm1 run there. libvirt calls the hook's
// reconnect for each; the guests keep running in the same QEMU processes,
// their keys stay on host-a's session, no reconnect call failed, the
// watchdog killed nothing, and host-b is still refused. Then a guest whose
// key another host holds does not survive a restart.
func TestE2ELibvirtdRestartKeepsGuest(t *testing.T) {
	l := startLab(t, 2)
	a, b := l.Hosts[0], l.Hosts[1]

	l.MustVirsh(a, "start", "vm2")
	l.MustVirsh(a, "start", "vm1")
	keys2 := l.RequireHeldBy(labVM2UUID, a, 1)
	keys1 := l.RequireHeldBy(labVM1UUID, a, 1)
	pid2 := l.HostQEMUPid(a, labVM2UUID)
	pid1 := l.HostQEMUPid(a, labVM1UUID)

	for _, how := range []string{"SIGTERM", "SIGKILL"} {
		start := time.Now()
		if how == "SIGKILL" {
			l.LabSh("restart-libvirtd", a, "--kill")
		} else {
			l.RestartLibvirtd(a)
		}
		t.Logf("%s: libvirtd restarted (%s) in %v", a, how, time.Since(start).Round(time.Millisecond))
		// libvirtd answers once it reconnected to its guests (and ran the
		// reconnect hook); give the watchdog's reconcile (every 5 s) a turn
		// on the new libvirtd too.
		for _, wait := range []time.Duration{0, 6 * time.Second} {
			time.Sleep(wait)
			for name, pid := range map[string]int{"vm2": pid2, "vm1": pid1} {
				if st := l.DomState(a, name); st != "running" {
					t.Fatalf("after libvirtd's %s restart (+%v): %s is %q on %s; want running", how, wait, name, st, a)
				}
				if !labProcAlive(pid) {
					t.Fatalf("after libvirtd's %s restart (+%v): %s's QEMU (pid %d) is gone", how, wait, name, pid)
				}
			}
			if got := l.HostQEMUPid(a, labVM2UUID); got != pid2 {
				t.Fatalf("vm2's QEMU is pid %d; want the same pid %d", got, pid2)
			}
		}
		for uuid, before := range map[string]map[string]LabRecord{labVM2UUID: keys2, labVM1UUID: keys1} {
			after := l.RequireHeldBy(uuid, a, 1)
			for k, v := range before {
				if after[k] != v {
					t.Errorf("key %s changed across the restart: %+v → %+v", k, v, after[k])
				}
			}
		}
		_, msg := requireStartRefused(t, l, b, "vm2")
		requireContains(t, "virsh's error", msg, "running on host "+a)
		if pids := l.QEMUPids(labVM2UUID); len(pids) != 1 {
			t.Fatalf("QEMUs of vm2: %v; want one, on %s", pids, a)
		}
	}
	if log := l.WatchdogLog(a); strings.Contains(log, "msg=killed") || strings.Contains(log, `msg="fencing`) {
		t.Errorf("%s's watchdog killed or fenced during the libvirtd restarts:\n%s", a, log)
	}
	if log := l.LibvirtdLog(a); strings.Contains(log, "reconnect begin") {
		t.Errorf("%s's libvirtd logged a failed reconnect hook call:\n%s", a, log)
	}

	// Now the one case where reconnect must fail: another host holds the
	// guest (forged here: vm1's domain key rewritten to host-b, on host-b's
	// lease). libvirt then kills the guest — or the watchdog's reconcile
	// (every 5 s) got there first; either way vm1 must die and vm2 live.
	bLease := l.HostLease(b)
	forged := fmt.Sprintf(`{"host":%q,"uuid":%q,"name":"vm1","lease":%q,"since":%q}`,
		b, labVM1UUID, bLease, time.Now().UTC().Format(time.RFC3339))
	l.EtcdPut("/virtlease/domains/"+labVM1UUID, forged, bLease)
	l.RestartLibvirtd(a)
	labWaitFor(t, 10*time.Second, "vm1's QEMU to be killed on "+a, func() (bool, string) {
		return !labProcAlive(pid1), fmt.Sprintf("pid %d alive", pid1)
	})
	byReconnect := strings.Contains(l.LibvirtdLog(a), "vm1 reconnect begin")
	if byReconnect {
		requireContains(t, a+"'s libvirtd log", l.LibvirtdLog(a), "virtlease: guest vm1 runs here, but etcd says "+b+" holds it")
		t.Logf("%s: the reconnect hook refused vm1 (held by %s): libvirt killed it; state %q", a, b, l.DomState(a, "vm1"))
	} else {
		t.Logf("%s: the watchdog's reconcile killed vm1 before libvirtd restarted (state %q)", a, l.DomState(a, "vm1"))
	}
	if !labProcAlive(pid2) || l.DomState(a, "vm2") != "running" {
		t.Fatalf("vm2 (pid %d) did not survive the restart that refused vm1", pid2)
	}
	if got := l.Claims(labVM1UUID)["/virtlease/domains/"+labVM1UUID]; got.Host != b {
		t.Errorf("vm1's domain key after the kill: %+v; want host-b's forged one left alone", got)
	}
}

// TestE2EEtcdStoppedStartFailsFast: with the etcd server SIGSTOPped (it
// accepts connections and never answers), a start is refused within the
// hook deadline (hook.timeout 2 s here) with a message about etcd, and the
// whole `virsh start` — prepare plus libvirt's stopped and release calls
// after it — takes one deadline, not three. A guest already running is left
// alone (the pause is shorter than the fence point: TTL 20 s here), and
// after SIGCONT starts work again.
func TestE2EEtcdStoppedStartFailsFast(t *testing.T) {
	const hookTimeout = 2 * time.Second
	l := startLab(t, 2, "VL_LAB_HOOK_TIMEOUT=2s", "VL_LAB_TTL=20s")
	a, b := l.Hosts[0], l.Hosts[1]

	l.MustVirsh(a, "start", "vm2")
	l.RequireHeldBy(labVM2UUID, a, 1)
	pid2 := l.HostQEMUPid(a, labVM2UUID)

	paused := time.Now()
	resume := l.PauseEtcd()
	t.Logf("etcd (pid %d) SIGSTOPped", l.EtcdPID())
	for _, c := range []struct{ host, name, why string }{
		{b, "vm2", "held by " + a + ": the dangerous case"},
		{a, "vm1", "held by nobody"},
		{b, "vm1-copy", "held by nobody, copied disk"},
	} {
		r, msg := requireStartRefused(t, l, c.host, c.name)
		t.Logf("%s: virsh start %s (%s) refused after %v (whole virsh call): %s",
			c.host, c.name, c.why, r.Took.Round(time.Millisecond), msg)
		requireContains(t, "virsh's error", msg, "etcd", "cannot start "+c.name)
		requireContains(t, "virsh's error", r.Stderr, "unexpected exit status 3")
		if r.Took > hookTimeout+time.Second {
			t.Errorf("%s: virsh start %s took %v with etcd stopped; want ≤ hook timeout %v + 1 s (one deadline, not one per hook call)",
				c.host, c.name, r.Took, hookTimeout)
		}
		if r.Took < hookTimeout/2 {
			t.Errorf("%s: refused in %v: faster than any etcd timeout, so not refused for etcd's sake?", c.host, r.Took)
		}
		if st := l.DomState(c.host, c.name); st != "shut off" {
			t.Errorf("%s: %s is %q; want shut off", c.host, c.name, st)
		}
	}
	// An operator asking for status gets an error, not a hang.
	_, stderr, code, took := l.Virtlease("status")
	t.Logf("virtlease status with etcd stopped: exit %d after %v: %s", code, took.Round(time.Millisecond), strings.TrimSpace(stderr))
	if code != 3 || !strings.Contains(stderr, "etcd") || took > 10*time.Second {
		t.Errorf("virtlease status with etcd stopped: exit %d after %v, %q; want exit 3 naming etcd within 10 s", code, took, stderr)
	}
	requireNoGoNoise(t, "virtlease status's error", stderr)
	if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("virtlease status's error is not one line:\n%s", stderr)
	}
	resume()
	t.Logf("etcd resumed after %v", time.Since(paused).Round(time.Millisecond))

	if !labProcAlive(pid2) {
		t.Fatalf("vm2's QEMU (pid %d) died during a %v etcd pause (fence point is TTL 20 s − margin 3 s)",
			pid2, time.Since(paused).Round(time.Millisecond))
	}
	if pids := l.QEMUPids(labVM2UUID); len(pids) != 1 {
		t.Fatalf("QEMUs of vm2: %v; want one, on %s", pids, a)
	}
	l.RequireHeldBy(labVM2UUID, a, 1)
	l.RequireNoClaims(labVM1UUID)
	l.RequireNoClaims(labVM1CopyUUID)
	// The refused starts left nothing behind that blocks the next one.
	labWaitFor(t, 15*time.Second, "vm1 to start on "+a+" once etcd answers again", func() (bool, string) {
		r := l.VirshTimed(a, "start", "vm1")
		return r.Err == nil, r.Stderr
	})
	l.RequireHeldBy(labVM1UUID, a, 1)
	_, msg := requireStartRefused(t, l, b, "vm2")
	requireContains(t, "virsh's error", msg, "running on host "+a)
	for _, h := range l.Hosts {
		if log := l.WatchdogLog(h); strings.Contains(log, "msg=killed") {
			t.Errorf("%s's watchdog killed a guest:\n%s", h, log)
		}
	}
}

// TestE2EHookBadInput runs a lab host's installed hook binary directly, the
// way libvirtd does (environment cleared to LC_ALL, PATH, HOME), with bad
// input: garbage XML, missing arguments, a broken or unreadable config.
// A start (prepare, migrate) must fail with one line on stderr, exit 2,
// nothing on stdout and no Go stack trace; the calls that must not kill or
// block guests (stopped, release, reconnect, started) exit 0 silently.
func TestE2EHookBadInput(t *testing.T) {
	l := startLab(t, 1)
	h := l.Hosts[0]
	good := l.DomainXML("vm1")

	check := func(t *testing.T, r HookResult, wantCode int, want ...string) {
		t.Helper()
		if r.Code != wantCode {
			t.Errorf("exit %d; want %d (stderr %q)", r.Code, wantCode, r.Stderr)
		}
		if r.Stdout != "" {
			t.Errorf("wrote to stdout (libvirt reads it as a new XML): %q", r.Stdout)
		}
		requireNoGoNoise(t, "the hook's stderr", r.Stderr)
		if wantCode == 0 {
			if r.Stderr != "" {
				t.Errorf("stderr %q; want nothing", r.Stderr)
			}
		} else {
			if !strings.HasPrefix(r.Stderr, "virtlease: ") || strings.Count(r.Stderr, "\n") != 1 || !strings.HasSuffix(r.Stderr, "\n") {
				t.Errorf("stderr %q; want one line starting with \"virtlease: \"", r.Stderr)
			}
			requireContains(t, "the hook's stderr", r.Stderr, want...)
		}
		if r.Took > 3*time.Second {
			t.Errorf("took %v; want a prompt answer", r.Took)
		}
	}
	junk := string([]byte{0x89, 'P', 'N', 'G', 0, 0xff, 0xfe, '\n', 0x0b, '<', '<'})
	cases := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  []string
	}{
		{"garbage XML", "this is not XML", []string{"vm1", "prepare", "begin", "-"}, 2, []string{"domain XML"}},
		{"empty stdin", "", []string{"vm1", "prepare", "begin", "-"}, 2, []string{"domain XML"}},
		{"binary junk", junk, []string{"vm1", "prepare", "begin", "-"}, 2, []string{"domain XML"}},
		{"truncated XML", good[:len(good)/2], []string{"vm1", "prepare", "begin", "-"}, 2, []string{"domain XML"}},
		{"no uuid", "<domain type='qemu'><name>vm1</name></domain>", []string{"vm1", "prepare", "begin", "-"}, 2, []string{"uuid"}},
		{"bad uuid", "<domain type='qemu'><name>vm1</name><uuid>not-a-uuid</uuid></domain>", []string{"vm1", "prepare", "begin", "-"}, 2, []string{"not-a-uuid"}},
		{"garbage XML, migrate", "<<<", []string{"vm1", "migrate", "begin", "-"}, 2, []string{"domain XML"}},
		{"garbage XML, restore", "<<<", []string{"vm1", "restore", "begin", "-"}, 2, []string{"domain XML"}},
		{"no arguments", good, nil, 2, []string{"usage"}},
		{"one argument", good, []string{"vm1"}, 2, []string{"usage"}},
		{"two arguments", good, []string{"vm1", "prepare"}, 2, []string{"usage"}},
		{"empty name", good, []string{"", "prepare", "begin", "-"}, 2, []string{"empty domain name"}},
		{"--help", good, []string{"--help"}, 2, []string{"usage"}},
		{"garbage XML, stopped", "garbage", []string{"vm1", "stopped", "end", "-"}, 0, nil},
		{"garbage XML, release", "garbage", []string{"vm1", "release", "end", "-"}, 0, nil},
		{"garbage XML, reconnect", "garbage", []string{"vm1", "reconnect", "begin", "-"}, 0, nil},
		{"garbage XML, started", "garbage", []string{"vm1", "started", "begin", "-"}, 0, nil},
		{"unknown operation", "garbage", []string{"vm1", "frobnicate", "begin", "-"}, 0, nil},
		{"extra arguments", good, []string{"vm1", "start", "begin", "-", "extra", "more"}, 0, nil},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			l := l.WithT(t)
			r := l.RunHook(h, c.stdin, c.args...)
			t.Logf("qemu %q → exit %d in %v: %s", c.args, r.Code, r.Took.Round(time.Millisecond), strings.TrimSpace(r.Stderr))
			check(t, r, c.code, c.want...)
		})
	}
	l.RequireNoClaims(labVM1UUID)

	// A bad config: replace the host's /etc/virtlease/config.yaml, restore it after.
	cfgPath := l.ConfigPath(h)
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	restore := func() {
		os.RemoveAll(cfgPath)
		if err := os.WriteFile(cfgPath, orig, 0o644); err != nil {
			t.Fatalf("restoring %s: %v", cfgPath, err)
		}
	}
	t.Cleanup(restore)
	configs := []struct {
		name    string
		content string // "DIR": a directory where the file should be (unreadable as a file)
		want    []string
	}{
		{"syntax error", "host: [\n", []string{"/etc/virtlease/config.yaml", "line 1"}},
		{"unknown key", "hosts: " + h + "\n", []string{"/etc/virtlease/config.yaml", `unknown key "hosts"`}},
		{"bad duration", "hook:\n  timeout: fast\n", []string{"hook.timeout", `"fast"`}},
		{"bad timing", "session:\n  ttl: 1s\n", []string{"session.ttl"}},
		{"not a mapping", "- a\n- b\n", []string{"/etc/virtlease/config.yaml"}},
		{"unreadable (a directory)", "DIR", []string{"/etc/virtlease/config.yaml", "cannot read"}},
	}
	for _, c := range configs {
		t.Run("config_"+strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			l := l.WithT(t)
			os.RemoveAll(cfgPath)
			if c.content == "DIR" {
				if err := os.Mkdir(cfgPath, 0o755); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(cfgPath, []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			defer restore()
			r := l.RunHook(h, good, "vm1", "prepare", "begin", "-")
			t.Logf("prepare → exit %d in %v: %s", r.Code, r.Took.Round(time.Millisecond), strings.TrimSpace(r.Stderr))
			check(t, r, 2, append([]string{"cannot start vm1"}, c.want...)...)
			// The calls that must never fail a running guest shrug it off.
			for _, op := range [][]string{{"stopped", "end"}, {"release", "end"}, {"reconnect", "begin"}} {
				r := l.RunHook(h, good, "vm1", op[0], op[1], "-")
				if r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
					t.Errorf("%s %s with a bad config: exit %d, stdout %q, stderr %q; want 0 and silence", op[0], op[1], r.Code, r.Stdout, r.Stderr)
				}
			}
			// Through libvirt: virsh start shows the same line.
			vr, msg := requireStartRefused(t, l, h, "vm1")
			requireContains(t, "virsh start's error", msg, c.want...)
			requireContains(t, "virsh start's error", vr.Stderr, "unexpected exit status 2")
		})
	}
	restore()
	l.RequireNoClaims(labVM1UUID)
	// With the config back, the same host starts vm1: nothing stuck.
	l.MustVirsh(h, "start", "vm1")
	l.RequireHeldBy(labVM1UUID, h, 1)
}

// TestE2EStopReleasesKeys: every way a guest stops releases its domain and
// disk keys, and only its own: virsh destroy; virsh shutdown (the lab guest
// has no OS, so the ACPI request is ignored: the guest must keep its keys
// while it runs, and release them when it then stops); QEMU exiting by
// itself (the monitor's quit, as a guest powering off does).
func TestE2EStopReleasesKeys(t *testing.T) {
	l := startLab(t, 2)
	a, b := l.Hosts[0], l.Hosts[1]

	l.MustVirsh(a, "start", "vm1")
	l.MustVirsh(a, "start", "vm2")
	keys1 := l.RequireHeldBy(labVM1UUID, a, 1)
	l.RequireHeldBy(labVM2UUID, a, 1)

	// destroy vm2: its keys go, vm1's stay.
	l.MustVirsh(a, "destroy", "vm2")
	l.RequireNoClaims(labVM2UUID)
	if got := l.RequireHeldBy(labVM1UUID, a, 1); fmt.Sprint(got) != fmt.Sprint(keys1) {
		t.Errorf("vm1's keys changed when vm2 stopped: %v → %v", keys1, got)
	}

	// shutdown vm1: a request the guest may ignore.
	l.MustVirsh(a, "shutdown", "vm1")
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && l.DomState(a, "vm1") == "running" {
		time.Sleep(200 * time.Millisecond)
	}
	switch st := l.DomState(a, "vm1"); st {
	case "running":
		t.Logf("%s: vm1 ignored the ACPI shutdown (no OS): still running, keys must stay", a)
		l.RequireHeldBy(labVM1UUID, a, 1)
		requireStartRefused(t, l, b, "vm1")
		l.MustVirsh(a, "destroy", "vm1")
	case "shut off":
		t.Logf("%s: vm1 shut down", a)
	default:
		t.Fatalf("%s: vm1 is %q after virsh shutdown", a, st)
	}
	l.RequireNoClaims(labVM1UUID)

	// QEMU exits on its own.
	l.MustVirsh(a, "start", "vm2")
	l.RequireHeldBy(labVM2UUID, a, 1)
	pid := l.HostQEMUPid(a, labVM2UUID)
	l.Virsh(a, "qemu-monitor-command", "vm2", "--hmp", "quit") // fails: QEMU hangs up on virsh
	labWaitFor(t, 10*time.Second, "vm2's QEMU to exit after quit", func() (bool, string) {
		return !labProcAlive(pid), fmt.Sprintf("pid %d alive", pid)
	})
	labWaitFor(t, 10*time.Second, "vm2 to be shut off on "+a, func() (bool, string) {
		st := l.DomState(a, "vm2")
		return st == "shut off", st
	})
	labWaitFor(t, 10*time.Second, "vm2's keys to be released", func() (bool, string) {
		c := l.Claims(labVM2UUID)
		return len(c) == 0, fmt.Sprint(c)
	})

	if d := l.EtcdGet("/virtlease/domains/"); len(d) != 0 {
		t.Errorf("etcdctl get --prefix /virtlease/domains/: %v; want nothing", d)
	}
	if d := l.EtcdGet("/virtlease/disks/"); len(d) != 0 {
		t.Errorf("etcdctl get --prefix /virtlease/disks/: %v; want nothing", d)
	}
	if l.HostLease(a) == "" {
		t.Errorf("%s's own hosts/ key is gone: stopping guests must not touch it", a)
	}
	// Released for real: the other host starts both.
	l.MustVirsh(b, "start", "vm1")
	l.MustVirsh(b, "start", "vm2")
	l.RequireHeldBy(labVM1UUID, b, 1)
	l.RequireHeldBy(labVM2UUID, b, 1)
}
