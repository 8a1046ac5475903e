package lease

import (
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMigrationHandOff(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b, c := session(t, s, "host-a"), session(t, s, "host-b"), session(t, s, "host-c")
	ctx := testCtx(t)
	d := vm("aaaaaaaa-0000-0000-0000-000000000001", "web", "nbd/127.0.0.1:10809/web")
	if _, err := s.Claim(ctx, a, d); err != nil {
		t.Fatal(err)
	}
	refused := func(step string, h Holder, cl Claim) {
		t.Helper()
		var held *HeldError
		if _, err := s.Claim(ctx, h, cl); !errors.As(err, &held) {
			t.Fatalf("%s: %s's claim not refused: %v", step, h.Host, err)
		}
	}
	from, _, err := s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks)
	if err != nil || from != "host-a" {
		t.Fatalf("record: %q %v", from, err)
	}
	if _, _, err := s.RecordMigration(ctx, c, d.UUID, d.Name, d.Disks); err == nil {
		t.Fatal("a second migration to host-c was recorded")
	}
	refused("during migration", c, d)
	in := d
	in.IncomingFrom = "host-a"
	if r, err := s.Claim(ctx, b, in); err != nil || r.Written != 0 {
		t.Fatalf("destination prepare: %+v %v", r, err)
	}
	inC := d
	inC.IncomingFrom = "host-a"
	refused("incoming claim with no record", c, inC)
	refused("during migration, after destination prepare", c, d)

	handed, err := s.HandOff(ctx, a, d.UUID, "", d.Disks)
	if err != nil || !handed {
		t.Fatalf("hand-off: %v %v", handed, err)
	}
	for _, k := range []string{s.keys.Domain(d.UUID), s.keys.Disk(d.Disks[0])} {
		resp, _ := cli.Get(ctx, k)
		if len(resp.Kvs) != 1 || ID(resp.Kvs[0].Lease) != b.Lease {
			t.Fatalf("%s not on host-b's lease after hand-off: %v", k, resp.Kvs)
		}
	}
	if resp, _ := cli.Get(ctx, s.keys.Migration(d.UUID)); len(resp.Kvs) != 0 {
		t.Fatal("migration record survived the hand-off")
	}
	refused("after hand-off", a, d)
	refused("after hand-off", c, d)
	// The source's release after the hand-off deletes nothing of host-b's.
	if n, err := s.Release(ctx, a, d.UUID, d.Disks, nil); err != nil || n != 0 {
		t.Fatalf("source release after hand-off: %d %v", n, err)
	}
	if n, err := s.Release(ctx, b, d.UUID, d.Disks, nil); err != nil || n != 2 {
		t.Fatalf("destination release: %d %v", n, err)
	}
	if _, err := s.Claim(ctx, a, d); err != nil {
		t.Fatalf("claim after the destination stopped it: %v", err)
	}
}

func TestMigrationFailedLeavesSource(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	d := vm("aaaaaaaa-0000-0000-0000-000000000002", "db", "rbd/p/db")
	s.Claim(ctx, a, d)
	s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks)
	in := d
	in.IncomingFrom = "host-a"
	if _, err := s.Claim(ctx, b, in); err != nil {
		t.Fatal(err)
	}
	// The destination QEMU dies; libvirt runs its stopped/release hooks.
	if n, err := s.Release(ctx, b, d.UUID, d.Disks, nil); err != nil || n != 0 {
		t.Fatalf("destination release deleted %d source keys: %v", n, err)
	}
	if err := s.DropMigration(ctx, b, d.UUID); err != nil {
		t.Fatal(err)
	}
	if rec, _ := s.Holding(ctx, d.UUID); rec == nil || rec.Host != "host-a" {
		t.Fatalf("source lost its key: %+v", rec)
	}
	if resp, _ := cli.Get(ctx, s.keys.Migration(d.UUID)); len(resp.Kvs) != 0 {
		t.Fatal("stale migration record")
	}
	// With no record, the source's stop is an ordinary release.
	if handed, err := s.HandOff(ctx, a, d.UUID, "", d.Disks); handed || err != nil {
		t.Fatalf("hand-off without a record: %v %v", handed, err)
	}
}

func TestMigrationSourceSessionDies(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b, c := session(t, s, "host-a"), session(t, s, "host-b"), session(t, s, "host-c")
	ctx := testCtx(t)
	d := vm("aaaaaaaa-0000-0000-0000-000000000003", "mail")
	s.Claim(ctx, a, d)
	s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks)
	if err := s.Revoke(ctx, a.Lease); err != nil {
		t.Fatal(err)
	}
	// The source's keys are gone, but the record on host-b's lease still
	// keeps every third host out.
	var held *HeldError
	if _, err := s.Claim(ctx, c, d); !errors.As(err, &held) {
		t.Fatalf("third host got in while a migration is recorded: %v", err)
	}
	// host-b adopts the guest it now runs.
	adopt := d
	adopt.Start = false
	if _, err := s.Claim(ctx, b, adopt); err != nil {
		t.Fatalf("destination adopt: %v", err)
	}
}

func TestHandOffToDeadDestination(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	d := vm("aaaaaaaa-0000-0000-0000-000000000004", "dns")
	s.Claim(ctx, a, d)
	s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks)
	s.Revoke(ctx, b.Lease) // drops host-b's record too
	if handed, err := s.HandOff(ctx, a, d.UUID, "", nil); handed || err != nil {
		t.Fatalf("handed to a dead destination: %v %v", handed, err)
	}
	if n, _ := s.Release(ctx, a, d.UUID, nil, nil); n != 1 {
		t.Fatalf("source release: %d", n)
	}
}

// The source keeps running the guest during the migration: its reconcile's
// claim (not a start) must succeed, or the watchdog would kill the guest
// mid-migration; a new start on the source is still refused.
func TestMigrationSourceStillHoldsDuringMigration(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	d := vm("aaaaaaaa-0000-0000-0000-000000000005", "web")
	s.Claim(ctx, a, d)
	if _, _, err := s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks); err != nil {
		t.Fatal(err)
	}
	adopt := d
	adopt.Start = false
	if _, err := s.Claim(ctx, a, adopt); err != nil {
		t.Fatalf("source's reconcile claim during its own outgoing migration: %v", err)
	}
	var held *HeldError
	if _, err := s.Claim(ctx, a, d); !errors.As(err, &held) {
		t.Fatalf("a new start on the source during the migration: %v", err)
	}
	in := d
	in.IncomingFrom = "host-a"
	if r, err := s.Claim(ctx, b, in); err != nil || r.Pending != 1 {
		t.Fatalf("destination claim: %+v %v (want the domain key pending)", r, err)
	}
}

// Found by the model (docs/model, code-handoff): when the source's keys
// are already gone at its hand-off (its session expired or was revoked
// first), the keys go to the destination, which runs the guest; the record
// is never dropped leaving the guest with no key and no record.
func TestHandOffAfterSourceKeysGone(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b, c := session(t, s, "host-a"), session(t, s, "host-b"), session(t, s, "host-c")
	ctx := testCtx(t)
	d := vm("aaaaaaaa-0000-0000-0000-000000000006", "db", "rbd/p/db6")
	s.Claim(ctx, a, d)
	_, rev, _ := s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks)
	in := d
	in.IncomingFrom, in.IncomingRev = "host-a", rev
	if _, err := s.Claim(ctx, b, in); err != nil { // the destination's prepare
		t.Fatal(err)
	}
	// The source's session dies; its process still runs its release hook
	// (under the session file it had).
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(a.Lease)); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.HandOff(ctx, a, d.UUID, "", d.Disks); !ok || err != nil {
		t.Fatalf("hand-off: %v %v", ok, err)
	}
	for _, k := range []string{s.keys.Domain(d.UUID), s.keys.Disk(d.Disks[0])} {
		resp, _ := cli.Get(ctx, k)
		if len(resp.Kvs) != 1 || ID(resp.Kvs[0].Lease) != b.Lease {
			t.Fatalf("%s not on host-b's lease: %v", k, resp.Kvs)
		}
	}
	var held *HeldError
	if _, err := s.Claim(ctx, c, d); !errors.As(err, &held) {
		t.Fatalf("a third host got in after the hand-off: %v", err)
	}
}

// Found by the fault campaign (docs/reliability.md, issue 1): while a
// migration is recorded its disks belong to it, even after the source's
// keys are gone and before the destination holds them: a copied XML
// sharing a disk must be refused.
func TestMigrationRecordKeepsDisks(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b, c := session(t, s, "host-a"), session(t, s, "host-b"), session(t, s, "host-c")
	ctx := testCtx(t)
	d := vm("aaaaaaaa-0000-0000-0000-000000000007", "vm2", "nbd/127.0.0.1:10809/vm2")
	s.Claim(ctx, a, d)
	if _, _, err := s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, a.Lease); err != nil { // the source lost etcd
		t.Fatal(err)
	}
	copied := vm("aaaaaaaa-0000-0000-0000-0000000000c7", "vm2-copy", "nbd/127.0.0.1:10809/vm2")
	var held *HeldError
	if _, err := s.Claim(ctx, c, copied); !errors.As(err, &held) || !strings.Contains(err.Error(), "being migrated") {
		t.Fatalf("a copied XML took a migrating domain's disk: %v", err)
	}
}

// A migration record whose destination never claimed (its prepare was
// refused or never ran, and its drop did not reach etcd) must not turn the
// source's next stop into a hand-off: that stop is an ordinary release,
// and a clean stop's intent is written (review finding M4).
func TestHandOffOnlyAfterDestinationPrepared(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	d := vm("aaaaaaaa-0000-0000-0000-000000000008", "ha1", "rbd/p/ha1")
	if _, err := s.Claim(ctx, a, d); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks); err != nil {
		t.Fatal(err)
	}
	// host-b's prepare never claimed. The operator stops the guest on host-a.
	if handed, err := s.HandOff(ctx, a, d.UUID, d.Name, d.Disks); handed || err != nil {
		t.Fatalf("stale record: the stop handed the keys to host-b (%v, %v)", handed, err)
	}
	stopped := &Intent{Want: WantStopped, Name: d.Name, Since: time.Now().UTC().Truncate(time.Second)}
	if n, err := s.Release(ctx, a, d.UUID, d.Disks, stopped); err != nil || n != 2 {
		t.Fatalf("release after the refused hand-off: %d %v", n, err)
	}
	if resp, _ := cli.Get(ctx, s.keys.Intent(d.UUID)); len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"stopped"`) {
		t.Fatalf("intent after a clean stop: %v", resp.Kvs)
	}
}

// A migration record may not list a disk that another domain holds: until
// it is dropped, that domain's own claims (its reconcile) would be refused,
// and the reconcile kills a guest whose claim is refused (review m12).
func TestRecordMigrationRefusesDiskOfAnotherDomain(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	other := vm("aaaaaaaa-0000-0000-0000-0000000000d1", "other", "rbd/p/shared")
	if _, err := s.Claim(ctx, a, other); err != nil {
		t.Fatal(err)
	}
	d := vm("aaaaaaaa-0000-0000-0000-0000000000d2", "mover")
	if _, err := s.Claim(ctx, a, d); err != nil {
		t.Fatal(err)
	}
	// The destination's XML of mover lists other's disk.
	var held *HeldError
	if _, _, err := s.RecordMigration(ctx, b, d.UUID, d.Name, []string{"rbd/p/shared"}); !errors.As(err, &held) {
		t.Fatalf("recorded a migration listing another domain's disk: %v", err)
	}
	adopt := other
	adopt.Start = false
	if _, err := s.Claim(ctx, a, adopt); err != nil {
		t.Fatalf("the disk's holder's own claim is refused now: %v", err)
	}
}

// Review finding C1: an incoming claim names its migration by the record's
// CreateRevision; a record of another (later) migration does not serve it,
// and the claim marks the record prepared.
func TestIncomingClaimBoundToItsRecord(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	d := vm("aaaaaaaa-0000-0000-0000-000000000009", "web9", "rbd/p/web9")
	if _, err := s.Claim(ctx, a, d); err != nil {
		t.Fatal(err)
	}
	_, rev1, err := s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DropMigration(ctx, b, d.UUID); err != nil {
		t.Fatal(err)
	}
	_, rev2, err := s.RecordMigration(ctx, b, d.UUID, d.Name, d.Disks)
	if err != nil || rev2 == rev1 {
		t.Fatalf("second record: rev %d (first %d), %v", rev2, rev1, err)
	}
	in := d
	in.IncomingFrom, in.IncomingRev = "host-a", rev1
	if _, err := s.Claim(ctx, b, in); !errors.Is(err, ErrNotIncoming) {
		t.Fatalf("a claim naming the first migration rode on the second's record: %v", err)
	}
	in.IncomingRev = rev2
	r, err := s.Claim(ctx, b, in)
	if err != nil || r.Pending != 2 {
		t.Fatalf("the second migration's claim: %+v %v", r, err)
	}
	resp, _ := cli.Get(ctx, s.keys.Migration(d.UUID))
	if len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"prepared":true`) || ID(resp.Kvs[0].Lease) != b.Lease {
		t.Fatalf("record after the destination's claim: %v", resp.Kvs)
	}
	if handed, err := s.HandOff(ctx, a, d.UUID, d.Name, d.Disks); !handed || err != nil {
		t.Fatalf("hand-off after the destination claimed: %v %v", handed, err)
	}
}
