package fence

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/tests/v3/framework/integration"

	"github.com/virtlease/virtlease/lease"
)

// fakeDomains is libvirt with a fixed list of running guests; every other
// domain is inactive with no job.
type fakeDomains struct {
	running []Guest
	crashed map[string]bool // shut off because the QEMU died
}

func (f *fakeDomains) Running(context.Context, bool) ([]Guest, error) { return f.running, nil }
func (f *fakeDomains) State(_ context.Context, uuid string) (bool, bool, error) {
	return slices.ContainsFunc(f.running, func(g Guest) bool { return g.UUID == uuid }), false, nil
}
func (f *fakeDomains) Crashed(_ context.Context, uuid string) (bool, error) {
	return f.crashed[uuid], nil
}
func (f *fakeDomains) Events(context.Context) (<-chan LifecycleEvent, error) { return nil, nil }

// recordingGuests records kills.
type recordingGuests struct {
	killed []string
	alive  []Guest // QEMUs found in /proc
}

func (r *recordingGuests) Running(context.Context) ([]Guest, error) { return r.alive, nil }
func (r *recordingGuests) Kill(_ context.Context, gs []Guest) []Guest {
	for _, g := range gs {
		r.killed = append(r.killed, g.Name)
	}
	return nil
}

func TestReconcile(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx := context.Background()
	sess := func(host string) lease.Holder { return testSession(t, store, host) }
	a, b := sess("host-a"), sess("host-b")
	claim := func(h lease.Holder, uuid, name string, disks ...string) {
		if _, err := store.Claim(ctx, h, lease.Claim{UUID: uuid, Name: name, Disks: disks}); err != nil {
			t.Fatal(err)
		}
	}
	claim(b, "u-elsewhere", "elsewhere")              // runs here too: two hosts
	claim(b, "u-incoming", "migrated")                // migrating to host-a
	claim(a, "u-mine", "mine", "disk/mine")           // mine, running
	claim(a, "u-stale", "stale", "disk/stale")        // mine, not running here any more
	claim(b, "u-other-disk", "other-disk", "disk/hp") // holds a disk host-a's guest hot-plugged
	if _, _, err := store.RecordMigration(ctx, a, "u-incoming", "migrated", nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "migrated"), 0o755)
	os.WriteFile(filepath.Join(dir, "migrated", "u-incoming"), []byte("host-b\n"), 0o644)

	disks := map[string][]string{"u-mine": {"disk/mine", "disk/new"}, "u-hotplug": {"disk/hp"}}
	doms := &fakeDomains{running: []Guest{
		{UUID: "u-elsewhere", Name: "elsewhere"}, {UUID: "u-incoming", Name: "migrated"},
		{UUID: "u-mine", Name: "mine"}, {UUID: "u-adopt", Name: "adopt"}, {UUID: "u-hotplug", Name: "hotplug"},
		{UUID: "u-off", Name: "off"},
	}}
	for i := range doms.running {
		doms.running[i].XML = doms.running[i].UUID
		doms.running[i].PID = 1000 + i
	}
	// A domain whose prepare hook still runs: active, no QEMU yet. Not
	// reconcile's business, whoever holds it.
	doms.running = append(doms.running, Guest{UUID: "u-starting", Name: "starting", XML: "u-starting"})
	claim(b, "u-starting", "starting")
	opts := ReconcileOptions{Domains: doms, Grace: time.Nanosecond, Parse: func(xml string) (lease.Claim, bool, error) {
		return lease.Claim{UUID: xml, Name: xml[2:], Disks: disks[xml]}, xml != "u-off", nil
	}}
	kills := &recordingGuests{}
	m := &managedCount{}
	w := New(Options{Config: testConfig, Host: "host-a", StateDir: dir, Sessions: store, Guests: kills,
		Clock: wallClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: m})
	w.active.Store(&a)
	since := map[string]time.Time{}
	w.reconcileOnce(ctx, opts, a, since) // notes u-stale inactive
	// u-off opted out, u-starting has no QEMU yet: 5 managed guests run.
	if m.n != 5 {
		t.Errorf("GuestsManaged = %d, want 5", m.n)
	}
	time.Sleep(time.Millisecond)
	w.reconcileOnce(ctx, opts, a, since) // past the grace: releases it

	slices.Sort(kills.killed)
	kills.killed = slices.Compact(kills.killed) // a killed guest stays listed until libvirt notices
	if want := []string{"elsewhere", "hotplug"}; !slices.Equal(kills.killed, want) {
		t.Errorf("killed %v, want %v (held elsewhere, and a hot-plugged disk another host writes)", kills.killed, want)
	}
	for uuid, want := range map[string]string{"u-adopt": "host-a", "u-mine": "host-a", "u-incoming": "host-b", "u-stale": "", "u-off": ""} {
		rec, err := store.Holding(ctx, uuid)
		got := ""
		if rec != nil {
			got = rec.Host
		}
		if err != nil || got != want {
			t.Errorf("%s held by %q, want %q (%v)", uuid, got, want, err)
		}
	}
	held, _ := store.Held(ctx, a)
	for _, d := range held {
		if d.UUID == "u-mine" && !slices.Contains(d.Disks, "disk/new") {
			t.Errorf("hot-plugged disk/new not claimed: %v", d.Disks)
		}
	}
}

// After an incoming live migration the destination's reconcile must treat
// the guest as its own: a finished migration (record gone) is an ordinary
// guest, and a record whose keys are all ours (the source expired
// mid-hand-off) is dropped, or it would refuse every later migration.
func TestReconcileIncomingMigrationEnds(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx := context.Background()
	sess := func(host string) lease.Holder { return testSession(t, store, host) }
	a, b := sess("host-a"), sess("host-b")
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "migrated"), 0o755)
	for _, u := range []string{"u-done", "u-orphan"} {
		if _, err := store.Claim(ctx, a, lease.Claim{UUID: u, Name: u, Start: true}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.RecordMigration(ctx, b, u, u, nil); err != nil {
			t.Fatal(err)
		}
		// host-b's prepare claimed as the destination.
		if _, err := store.Claim(ctx, b, lease.Claim{UUID: u, Name: u, IncomingFrom: "host-a"}); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "migrated", u), []byte("host-a\n"), 0o644)
	}
	// u-done: handed over normally, but its keys were lost since (etcdctl
	// del); u-orphan: the source died mid-hand-off, its keys expired.
	if ok, err := store.HandOff(ctx, a, "u-done", "", nil); !ok || err != nil {
		t.Fatal(ok, err)
	}
	clus.Client(0).Delete(ctx, store.Keys().Domain("u-done"))
	if err := store.Revoke(ctx, a.Lease); err != nil {
		t.Fatal(err)
	}
	doms := &fakeDomains{running: []Guest{{UUID: "u-done", Name: "done", XML: "u-done", PID: 1}, {UUID: "u-orphan", Name: "orphan", XML: "u-orphan", PID: 2}}}
	opts := ReconcileOptions{Domains: doms, Parse: func(xml string) (lease.Claim, bool, error) {
		return lease.Claim{UUID: xml, Name: xml}, true, nil
	}}
	kills := &recordingGuests{}
	w := New(Options{Config: testConfig, Host: "host-b", StateDir: dir, Sessions: store, Guests: kills,
		Clock: wallClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.active.Store(&b)
	w.reconcileOnce(ctx, opts, b, map[string]time.Time{})
	if len(kills.killed) != 0 {
		t.Fatalf("killed %v", kills.killed)
	}
	for _, u := range []string{"u-done", "u-orphan"} {
		if rec, _ := store.Holding(ctx, u); rec == nil || rec.Host != "host-b" {
			t.Errorf("%s not re-claimed by host-b: %+v", u, rec)
		}
		if _, err := os.Stat(filepath.Join(dir, "migrated", u)); err == nil {
			t.Errorf("%s: incoming marker left", u)
		}
		if resp, _ := clus.Client(0).Get(ctx, store.Keys().Migration(u)); len(resp.Kvs) != 0 {
			t.Errorf("%s: migration record left", u)
		}
	}
}

// jobDomains is fakeDomains with jobs on some inactive domains (an incoming
// migration being set up).
type jobDomains struct {
	fakeDomains
	jobs map[string]bool
}

func (f *jobDomains) State(ctx context.Context, uuid string) (bool, bool, error) {
	active, _, err := f.fakeDomains.State(ctx, uuid)
	return active, f.jobs[uuid], err
}

// A migration to this host whose guest never arrived (this libvirtd was
// killed mid-migration: no hook dropped the record) leaves its record on
// our lease. After the grace period with no trace of the guest here, the
// reconcile drops it; one whose domain has a job here is left alone.
func TestReconcileDropsStaleIncoming(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx := context.Background()
	sess := func(host string) lease.Holder { return testSession(t, store, host) }
	a, b := sess("host-a"), sess("host-c")
	for _, u := range []string{"u-stale", "u-in-progress"} {
		if _, err := store.Claim(ctx, a, lease.Claim{UUID: u, Name: u, Start: true, Disks: []string{"nbd/" + u}}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := store.RecordMigration(ctx, b, u, u, []string{"nbd/" + u}); err != nil {
			t.Fatal(err)
		}
	}
	doms := &jobDomains{jobs: map[string]bool{"u-in-progress": true}}
	opts := ReconcileOptions{Domains: doms, Grace: 200 * time.Millisecond, Parse: func(xml string) (lease.Claim, bool, error) {
		return lease.Claim{UUID: xml, Name: xml}, true, nil
	}}
	w := New(Options{Config: testConfig, Host: "host-c", Sessions: store, Guests: &recordingGuests{},
		Clock: wallClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.active.Store(&b)
	since := map[string]time.Time{}
	record := func(u string) bool {
		resp, err := clus.Client(0).Get(ctx, store.Keys().Migration(u))
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Kvs) == 1
	}
	w.reconcileOnce(ctx, opts, b, since)
	if !record("u-stale") {
		t.Fatal("dropped at first sight, before the grace period")
	}
	time.Sleep(300 * time.Millisecond)
	w.reconcileOnce(ctx, opts, b, since)
	if record("u-stale") {
		t.Error("the stale migration record is still there after the grace period")
	}
	if !record("u-in-progress") {
		t.Error("a migration with a job here lost its record")
	}
	// The source's keys are untouched: it still runs the guest.
	if rec, _ := store.Holding(ctx, "u-stale"); rec == nil || rec.Host != "host-a" {
		t.Errorf("u-stale's domain key: %+v, want host-a's", rec)
	}
}

// The reconcile releases the keys of HA guests that stopped here while the
// hook could not reach etcd, and records each stop as the hook would have:
// a deliberate one sets the intent stopped (it was left running, and HA
// restarted a guest the operator had shut down), a start that failed
// before the guest ran gets its earlier intent back, a kill by the
// watchdog or a crash leaves it running. A crash is released at once, not
// after the grace period; keys of a guest whose QEMU still runs stay.
func TestReconcileRecordsStops(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx := context.Background()
	a := testSession(t, store, "host-a")
	dir := t.TempDir()
	st := lease.StopState{Dir: dir, Host: "host-a", BootID: "boot-1"}
	if err := lease.WriteSession(filepath.Join(dir, "session"), lease.Session{Host: "host-a", Lease: a.Lease, Boot: "boot-1",
		Deadline: int64(lease.BootNow() + time.Hour), State: lease.SessionOK}); err != nil {
		t.Fatal(err)
	}
	mark := func(kind, uuid string) {
		os.MkdirAll(filepath.Join(dir, kind), 0o755)
		os.WriteFile(st.Marker(kind, uuid), nil, 0o644)
	}
	for _, u := range []string{"u-clean", "u-killed", "u-failed-start", "u-crashed", "u-lost-by-libvirt", "u-plain"} {
		c := lease.Claim{UUID: u, Name: u, Start: true, Disks: []string{"nbd/" + u}}
		if u != "u-plain" {
			c.Intent = &lease.Intent{Want: lease.WantRunning, Name: u, XML: "<domain/>"}
		}
		if _, err := store.Claim(ctx, a, c); err != nil {
			t.Fatal(err)
		}
	}
	mark("started", "u-clean")
	mark("started", "u-plain")
	mark("started", "u-killed")
	mark("killed", "u-killed")
	st.WritePrior("u-failed-start", &lease.Intent{Want: lease.WantStopped, Name: "u-failed-start", Reason: "stopped on host-b"})
	mark("started", "u-crashed")
	mark("started", "u-lost-by-libvirt")
	doms := &fakeDomains{crashed: map[string]bool{"u-crashed": true}}
	kills := &recordingGuests{alive: []Guest{{UUID: "u-lost-by-libvirt", Name: "lost", PID: 7}}}
	w := New(Options{Config: testConfig, Host: "host-a", BootID: "boot-1", StateDir: dir, Sessions: store, Guests: kills,
		Clock: wallClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.active.Store(&a)
	parse := func(xml string) (lease.Claim, bool, error) { return lease.Claim{UUID: xml, Name: xml}, true, nil }
	held := func(u string) bool {
		rec, err := store.Holding(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		return rec != nil
	}
	since := map[string]time.Time{}
	w.reconcileOnce(ctx, ReconcileOptions{Domains: doms, Grace: time.Hour, Parse: parse}, a, since)
	if held("u-crashed") {
		t.Error("the keys of a crashed guest wait for the grace period")
	}
	if !held("u-clean") {
		t.Fatal("released before the grace period")
	}
	w.reconcileOnce(ctx, ReconcileOptions{Domains: doms, Grace: time.Nanosecond, Parse: parse}, a, since)
	if !held("u-lost-by-libvirt") {
		t.Error("released the keys of a guest whose QEMU still runs here")
	}
	snap, err := store.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for u, want := range map[string]lease.Want{"u-clean": lease.WantStopped, "u-killed": lease.WantRunning,
		"u-failed-start": lease.WantStopped, "u-crashed": lease.WantRunning} {
		if held(u) {
			t.Errorf("%s: keys not released", u)
		}
		if got := snap.Intents[u]; got.Want != want {
			t.Errorf("%s: intent %+v, want %q", u, got, want)
		}
	}
	if in := snap.Intents["u-clean"]; in.Reason != lease.StoppedBy("host-a") || in.XML == "" {
		t.Errorf("clean stop's intent %+v: want the stored intent, stopped by host-a", in)
	}
	if _, ok := snap.Intents["u-plain"]; ok {
		t.Error("an intent was written for a non-HA domain")
	}
	if _, err := os.Stat(st.Marker("started", "u-clean")); err == nil {
		t.Error("started marker left after the release")
	}
}

// managedCount records GuestsManaged.
type managedCount struct {
	noMetrics
	n int
}

func (m *managedCount) GuestsManaged(n int) { m.n = n }

// The watchdog was stopped (its unfenced record lists the guests) and
// stayed away past the TTL; meanwhile the operator shut one HA guest down.
// The hook had no key left to record the stop with, so the returning
// watchdog does: that intent becomes stopped (with a marker for the crash
// check), the guest still running is claimed again, and the intent of a
// guest the hook did not see stop cleanly stays running.
func TestRecoverRecordsStopsWhileAway(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx := context.Background()
	old := testSession(t, store, "host-a")
	dir := t.TempDir()
	st := lease.StopState{Dir: dir, Host: "host-a", BootID: "boot-1"}
	var listed []lease.UnfencedGuest
	for _, u := range []string{"u-stopped", "u-running", "u-lost"} {
		c := lease.Claim{UUID: u, Name: u, Start: true, Intent: &lease.Intent{Want: lease.WantRunning, Name: u}}
		if _, err := store.Claim(ctx, old, c); err != nil {
			t.Fatal(err)
		}
		listed = append(listed, lease.UnfencedGuest{UUID: u, Name: u})
	}
	if err := store.SetUnfenced(ctx, "host-a", lease.Unfenced{Guests: listed}); err != nil {
		t.Fatal(err)
	}
	if err := lease.WriteSession(filepath.Join(dir, "session"), lease.Session{Host: "host-a", Lease: old.Lease, Boot: "boot-1",
		Deadline: int64(lease.BootNow()), State: lease.SessionStopped}); err != nil {
		t.Fatal(err)
	}
	// The hook kept the started markers of the clean stop it could not
	// record, and of the guest still running; u-lost's QEMU died with no
	// clean stop seen (no marker).
	for _, u := range []string{"u-stopped", "u-running"} {
		os.MkdirAll(filepath.Join(dir, "started"), 0o755)
		os.WriteFile(st.Marker("started", u), nil, 0o644)
	}
	if err := store.Revoke(ctx, old.Lease); err != nil { // expired while away
		t.Fatal(err)
	}
	now := testSession(t, store, "host-a")
	guests := &recordingGuests{alive: []Guest{{UUID: "u-running", Name: "u-running", PID: 7}}}
	w := New(Options{Config: testConfig, Host: "host-a", BootID: "boot-1", StateDir: dir, Sessions: store, Guests: guests,
		Clock: wallClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.lease = now.Lease
	if left, err := w.recover(ctx, now); left || err != nil {
		t.Fatalf("recover: record left %v, %v", left, err)
	}
	snap, err := store.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for u, want := range map[string]lease.Want{"u-stopped": lease.WantStopped, "u-running": lease.WantRunning, "u-lost": lease.WantRunning} {
		if got := snap.Intents[u].Want; got != want {
			t.Errorf("%s: intent %q, want %q", u, got, want)
		}
	}
	if rec, _ := store.Holding(ctx, "u-running"); rec == nil || rec.Lease != now.Lease {
		t.Errorf("u-running not claimed again: %+v", rec)
	}
	b, err := os.ReadFile(st.Marker("stopped", "u-stopped"))
	if in := snap.Intents["u-stopped"]; err != nil || strings.TrimSpace(string(b)) != in.Since.Format(time.RFC3339) {
		t.Errorf("stopped marker %q (%v) for intent %+v", b, err, in)
	}
	if _, _, ok, _ := store.GetUnfenced(ctx, "host-a"); ok {
		t.Error("unfenced record left")
	}
}

// countingDomains counts reconcile passes (one Running call each).
type countingDomains struct {
	fakeDomains
	mu     sync.Mutex
	passes int
}

func (c *countingDomains) Running(ctx context.Context, xml bool) ([]Guest, error) {
	c.mu.Lock()
	c.passes++
	c.mu.Unlock()
	return c.fakeDomains.Running(ctx, xml)
}

func (c *countingDomains) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.passes
}

// A reconcile pass that falls due while the session is not ok yet (the
// watchdog starting or resuming) runs once it is, not a whole Interval
// later; so does one after each (re)subscription to libvirt's events
// (libvirtd back after a crash: events were lost meanwhile).
func TestReconcileRunsWhenSessionBecomesOK(t *testing.T) {
	doms := &countingDomains{}
	w := New(Options{Config: testConfig, Host: "host-a", Guests: &recordingGuests{}, Sessions: noHoldings{},
		Clock: wallClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.reconcile(ctx, ReconcileOptions{Domains: doms, Interval: time.Hour, Parse: func(string) (lease.Claim, bool, error) {
		return lease.Claim{}, false, nil
	}})
	time.Sleep(300 * time.Millisecond)
	if n := doms.count(); n != 0 {
		t.Fatalf("%d passes without a session", n)
	}
	h := lease.Holder{Host: "host-a", Lease: 1}
	w.active.Store(&h)
	waitUntil(t, "a reconcile pass once the session is ok", 10*time.Second, func() bool { return doms.count() > 0 })
}

// noHoldings is a store where this host holds nothing.
type noHoldings struct{ Sessions }

func (noHoldings) Holdings(context.Context, lease.Holder) (lease.Holdings, error) {
	return lease.Holdings{}, nil
}

// The migrated marker lost: "an incoming migration (incoming marker, or a
// migration record to me)" is not killed while the source still holds the
// keys before its hand-off (review of the watchdog: incoming migrations
// honoured by marker only).
func TestReconcileIncomingWithoutMarker(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx := context.Background()
	a, b := testSession(t, store, "host-a"), testSession(t, store, "host-b")
	if _, err := store.Claim(ctx, a, lease.Claim{UUID: "u-in", Name: "in", Start: true}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.RecordMigration(ctx, b, "u-in", "in", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Claim(ctx, b, lease.Claim{UUID: "u-in", Name: "in", IncomingFrom: "host-a"}); err != nil {
		t.Fatal(err)
	}
	doms := &fakeDomains{running: []Guest{{UUID: "u-in", Name: "in", XML: "u-in", PID: 1}}}
	opts := ReconcileOptions{Domains: doms, Parse: func(xml string) (lease.Claim, bool, error) {
		return lease.Claim{UUID: xml, Name: xml}, true, nil
	}}
	kills := &recordingGuests{}
	w := New(Options{Config: testConfig, Host: "host-b", StateDir: t.TempDir(), Sessions: store, Guests: kills,
		Clock: wallClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.active.Store(&b)
	w.reconcileOnce(ctx, opts, b, map[string]time.Time{})
	if len(kills.killed) != 0 {
		t.Fatalf("killed %v: an incoming migration before its hand-off", kills.killed)
	}
	if rec, _ := store.Holding(ctx, "u-in"); rec == nil || rec.Host != "host-a" {
		t.Fatalf("holder %+v, want host-a until the hand-off", rec)
	}
}

// procGuests is /proc with a fixed list of QEMUs; kills are recorded.
type procGuests struct {
	running []Guest
	err     error
	killed  []string
}

func (p *procGuests) Running(context.Context) ([]Guest, error) { return p.running, p.err }
func (p *procGuests) Kill(_ context.Context, gs []Guest) []Guest {
	for _, g := range gs {
		p.killed = append(p.killed, g.Name)
	}
	return nil
}

// libvirt can lose a live QEMU (libvirtd crashed between exec and saving its
// status, a lost status file): it then reports the domain inactive with no
// job while the QEMU still writes the disk. Its keys must stay, or HA (the
// intent stays running) starts a second copy elsewhere.
func TestReconcileKeepsKeysOfAQEMULibvirtLost(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx := context.Background()
	a := testSession(t, store, "host-a")
	for _, c := range []lease.Claim{
		{UUID: "u-lost", Name: "lost", Disks: []string{"disk/lost"}},    // QEMU runs, libvirt forgot it
		{UUID: "u-gone", Name: "gone", Disks: []string{"disk/gone"}},    // no QEMU: released
		{UUID: "u-blind", Name: "blind", Disks: []string{"disk/blind"}}, // /proc unreadable: kept
	} {
		if _, err := store.Claim(ctx, a, c); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		procs *procGuests
		held  map[string]bool
	}{ // in order: the first keeps what the second releases
		{"/proc unreadable", &procGuests{err: errors.New("fence: could not read the command line of 1 process(es)")},
			map[string]bool{"u-blind": true, "u-gone": true}},
		{"QEMU in /proc", &procGuests{running: []Guest{{UUID: "u-lost", Name: "lost", PID: 4242}}},
			map[string]bool{"u-lost": true, "u-gone": false, "u-blind": false}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := ReconcileOptions{Domains: &fakeDomains{}, Grace: time.Nanosecond,
				Parse: func(string) (lease.Claim, bool, error) { return lease.Claim{}, false, nil }}
			w := New(Options{Config: testConfig, Host: "host-a", StateDir: t.TempDir(), Sessions: store, Guests: c.procs,
				Clock: wallClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			w.active.Store(&a)
			since := map[string]time.Time{}
			w.reconcileOnce(ctx, opts, a, since)
			time.Sleep(time.Millisecond)
			w.reconcileOnce(ctx, opts, a, since) // past the grace
			for uuid, want := range c.held {
				rec, err := store.Holding(ctx, uuid)
				if err != nil {
					t.Fatal(err)
				}
				if got := rec != nil && rec.Host == "host-a"; got != want {
					t.Errorf("%s held by host-a: %v, want %v", uuid, got, want)
				}
			}
			if len(c.procs.killed) != 0 {
				t.Errorf("killed %v: reconcile must not kill a guest libvirt lost", c.procs.killed)
			}
		})
	}
}
