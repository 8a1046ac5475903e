package fence

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/tests/v3/framework/integration"

	"github.com/virtlease/virtlease/lease"
)

// fakeDomains is libvirt with a fixed list of running guests; every other
// domain is inactive with no job.
type fakeDomains struct{ running []Guest }

func (f *fakeDomains) Running(context.Context, bool) ([]Guest, error) { return f.running, nil }
func (f *fakeDomains) State(_ context.Context, uuid string) (bool, bool, error) {
	return slices.ContainsFunc(f.running, func(g Guest) bool { return g.UUID == uuid }), false, nil
}
func (f *fakeDomains) Events(context.Context) (<-chan LifecycleEvent, error) { return nil, nil }

// recordingGuests records kills.
type recordingGuests struct{ killed []string }

func (r *recordingGuests) Running(context.Context) ([]Guest, error) { return nil, nil }
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
	w := New(Options{Config: testConfig, Host: "host-a", StateDir: dir, Sessions: store, Guests: kills,
		Clock: wallClock{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.active.Store(&a)
	since := map[string]time.Time{}
	w.reconcileOnce(ctx, opts, a, since) // notes u-stale inactive
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
