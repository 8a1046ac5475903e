//go:build e2e

package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// lastRun reads the domain's runs record (/virtlease/runs/UUID) from etcd; the zero
// value when there is none.
func (l *Lab) lastRun(uuid string) (r struct {
	Host string `json:"host"`
	Seq  uint64 `json:"seq"`
}) {
	l.t.Helper()
	for k, v := range l.EtcdGet("/virtlease/runs/" + uuid) {
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			l.t.Fatalf("etcd key %s: not a runs record: %v: %q", k, err, v)
		}
	}
	return r
}

// requireSaved fails unless host keeps a managed save of name.
func requireSaved(t *testing.T, l *Lab, host, name string) {
	t.Helper()
	out := l.MustVirsh(host, "list", "--all", "--name", "--with-managed-save")
	if !strings.Contains("\n"+out, "\n"+name+"\n") {
		t.Fatalf("%s: no managed save of %s (virsh list --with-managed-save: %q)", host, name, out)
	}
}

// requireReason fails unless `virsh domstate --reason` of name on host
// starts with want ("running (restored)", "running (booted)").
func requireReason(t *testing.T, l *Lab, host, name, want string) {
	t.Helper()
	out := strings.TrimSpace(l.MustVirsh(host, "domstate", "--reason", name))
	if out != want {
		t.Fatalf("%s: %s is %q, want %q", host, name, out, want)
	}
}

// TestE2EManagedSaveRestore: a managed save restored on the host that made
// it, with nobody starting the guest in between, comes back (libvirt calls
// restore begin, then prepare); once another host has started the guest
// since the save, `virsh start` on the saving host is refused in the hook,
// naming that host and `virsh managedsave-remove`, with no QEMU started
// and no key left; a live migration into the saving host is refused too
// (libvirt would keep the stale state through it); doing what the message
// says then boots the guest fresh; after a live migration the destination
// restores what it saved.
func TestE2EManagedSaveRestore(t *testing.T) {
	l := startLab(t, 2)
	a, b := l.Hosts[0], l.Hosts[1]

	// Saved and restored on host-a: allowed.
	l.MustVirsh(a, "start", "vm2")
	if r := l.lastRun(labVM2UUID); r.Host != a || r.Seq != 1 {
		t.Fatalf("runs record after the first start: %+v, want %s run 1", r, a)
	}
	l.MustVirsh(a, "managedsave", "vm2")
	requireSaved(t, l, a, "vm2")
	l.RequireNoClaims(labVM2UUID)
	l.MustVirsh(a, "start", "vm2")
	requireReason(t, l, a, "vm2", "running (restored)")
	l.RequireHeldBy(labVM2UUID, a, 1)
	if r := l.lastRun(labVM2UUID); r.Host != a || r.Seq != 2 {
		t.Fatalf("runs record after the restore: %+v, want %s run 2", r, a)
	}

	// Saved on host-a, then started and stopped on host-b: host-a's saved
	// memory is stale against the disk host-b wrote.
	l.MustVirsh(a, "managedsave", "vm2")
	requireSaved(t, l, a, "vm2")
	l.MustVirsh(b, "start", "vm2")
	l.RequireHeldBy(labVM2UUID, b, 1)
	if r := l.lastRun(labVM2UUID); r.Host != b || r.Seq != 3 {
		t.Fatalf("runs record after host-b's start: %+v, want %s run 3", r, b)
	}
	l.MustVirsh(b, "destroy", "vm2")
	l.RequireNoClaims(labVM2UUID)

	r, msg := requireStartRefused(t, l, a, "vm2")
	t.Logf("%s: virsh start vm2 refused after %v: %s", a, r.Took, msg)
	requireContains(t, "virsh's error on "+a, msg, "refusing to restore vm2 from its saved state",
		"host "+b+" started it", "virsh managedsave-remove vm2")
	if pids := l.QEMUPids(labVM2UUID); len(pids) != 0 {
		t.Fatalf("QEMUs of vm2 after the refused restore: %v", pids)
	}
	l.RequireNoClaims(labVM2UUID)
	requireSaved(t, l, a, "vm2") // refused, not discarded: the operator decides
	if r := l.lastRun(labVM2UUID); r.Host != b || r.Seq != 3 {
		t.Fatalf("runs record after the refused restore: %+v, want %s run 3 still", r, b)
	}

	// A live migration into host-a would start the guest there and keep
	// the saved state (libvirt 9.0 does): a later virsh start on host-a
	// would restore it. Refused in host-a's prepare; the guest stays on
	// host-b.
	l.MustVirsh(b, "start", "vm2")
	_, stderr, err := l.Virsh(b, "migrate", "--live", "vm2", l.URI(a), "tcp://127.0.0.1")
	if err == nil {
		t.Fatalf("migration of vm2 into %s, which keeps a saved state of it, succeeded", a)
	}
	requireContains(t, "virsh migrate's error", stderr, "keeps a saved state of it", "virsh managedsave-remove vm2")
	if st := l.DomState(b, "vm2"); st != "running" {
		t.Fatalf("%s: vm2 is %q after the refused migration, want running", b, st)
	}
	l.RequireHeldBy(labVM2UUID, b, 1)
	if m := l.EtcdGet("/virtlease/migrations/"); len(m) != 0 {
		t.Fatalf("migration records left after the refused migration: %v", m)
	}
	l.MustVirsh(b, "destroy", "vm2")
	requireStartRefused(t, l, a, "vm2")

	// What the message says to do: discard the saved state, start afresh.
	l.MustVirsh(a, "managedsave-remove", "vm2")
	l.MustVirsh(a, "start", "vm2")
	requireReason(t, l, a, "vm2", "running (booted)")
	l.RequireHeldBy(labVM2UUID, a, 1)
	if r := l.lastRun(labVM2UUID); r.Host != a || r.Seq != 5 {
		t.Fatalf("runs record after the fresh start: %+v, want %s run 5", r, a)
	}

	// A live migration continues the run on host-b: the hand-off moves the
	// record there, so host-b may restore what it saves afterwards.
	l.MustVirsh(a, "migrate", "--live", "vm2", l.URI(b), "tcp://127.0.0.1")
	l.RequireHeldBy(labVM2UUID, b, 1)
	if r := l.lastRun(labVM2UUID); r.Host != b || r.Seq != 5 {
		t.Fatalf("runs record after the migration: %+v, want %s run 5", r, b)
	}
	l.MustVirsh(b, "managedsave", "vm2")
	l.MustVirsh(b, "start", "vm2")
	requireReason(t, l, b, "vm2", "running (restored)")
	if r := l.lastRun(labVM2UUID); r.Host != b || r.Seq != 6 {
		t.Fatalf("runs record after host-b's restore: %+v, want %s run 6", r, b)
	}
}
