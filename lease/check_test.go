package lease

import (
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Check decides as Claim does and writes nothing; an unprotected domain
// (mode="off") needs no session but is refused over anyone else's claim.
func TestCheck(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	const (
		heldUUID  = "a1111111-1111-1111-1111-111111111111"
		migUUID   = "a2222222-2222-2222-2222-222222222222"
		otherUUID = "a3333333-3333-3333-3333-333333333333"
		staleUUID = "a4444444-4444-4444-4444-444444444444"
		unfUUID   = "a5555555-5555-5555-5555-555555555555"
	)
	if _, err := s.Claim(ctx, b, vm(heldUUID, "db", "rbd/p/db")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, a, vm(staleUUID, "old", "rbd/p/old")); err != nil {
		t.Fatal(err)
	}
	// A migration of another domain from b to a, listing its disk.
	if _, err := s.Claim(ctx, b, vm(migUUID, "moving", "rbd/p/moving")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RecordMigration(ctx, a, migUUID, "moving", []string{"rbd/p/moving"}); err != nil {
		t.Fatal(err)
	}
	u := Unfenced{Since: time.Now(), Guests: []UnfencedGuest{{UUID: unfUUID, Name: "mail", Disks: []string{"rbd/p/mail"}}}}
	if _, err := cli.Put(ctx, s.keys.Unfenced("host-c"), encode(u)); err != nil {
		t.Fatal(err)
	}
	off := func(c Claim) Claim { c.Unprotected = true; return c }
	noSession := Holder{Host: "host-a"} // mode="off" on a host without a watchdog
	tests := []struct {
		name    string
		h       Holder
		c       Claim
		wantErr string // "" allowed
	}{
		{"free domain", a, vm(otherUUID, "new", "rbd/p/new"), ""},
		{"held elsewhere", a, vm(heldUUID, "db"), "running on host host-b"},
		{"copied XML, disk held elsewhere", a, vm(otherUUID, "db-copy", "rbd/p/db"), "in use by domain db"},
		{"no session", noSession, vm(otherUUID, "new"), "no live session"},
		{"off, free", noSession, off(vm(otherUUID, "new", "rbd/p/new")), ""},
		{"off, this host's stale claim of it", noSession, off(vm(staleUUID, "old", "rbd/p/old")), ""},
		{"off, held elsewhere", noSession, off(vm(heldUUID, "db")), "running on host host-b"},
		{"off, copied XML, disk held elsewhere", noSession, off(vm(otherUUID, "db-copy", "rbd/p/db")), "in use by domain db"},
		{"off, copied XML, disk of another domain here", noSession, off(vm(otherUUID, "old-copy", "rbd/p/old")), "in use by domain old"},
		{"off, being migrated", noSession, off(vm(migUUID, "moving")), "host-b"},
		{"off, disk of a migrating domain", noSession, off(vm(otherUUID, "copy", "rbd/p/moving")), "being migrated"},
		{"off, unfenced elsewhere", noSession, off(vm(unfUUID, "mail")), "may still run on host host-c"},
		{"off, disk of an unfenced guest", noSession, off(vm(otherUUID, "copy", "rbd/p/mail")), "may still be in use"},
	}
	before, err := cli.Get(ctx, "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Check(ctx, tc.h, tc.c)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want a refusal saying %q", err, tc.wantErr)
			}
		})
	}
	after, err := cli.Get(ctx, "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision {
		t.Errorf("Check wrote to etcd: revision %d -> %d", before.Header.Revision, after.Header.Revision)
	}
	// Claim refuses an unprotected domain: it is never claimed.
	if _, err := s.Claim(ctx, a, off(vm(otherUUID, "new"))); err == nil {
		t.Error("Claim took an unprotected domain")
	}
	var held *HeldError
	if err := s.Check(ctx, a, vm(heldUUID, "db")); !errors.As(err, &held) {
		t.Errorf("refusal is %T, want *HeldError", err)
	}
}

// One unreadable unfenced record refuses every start (it may list a guest
// still running there) with a line that says how to end it, and the
// operator's release --force --host can clear it.
func TestUnreadableUnfencedRecord(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a := session(t, s, "host-a")
	ctx := testCtx(t)
	if _, err := cli.Put(ctx, s.keys.Unfenced("host-z"), "{not json"); err != nil {
		t.Fatal(err)
	}
	c := vm("a6666666-6666-6666-6666-666666666666", "web6", "rbd/p/web6")
	if _, err := s.Claim(ctx, a, c); err == nil || !strings.Contains(err.Error(), "virtlease release --force --host host-z") {
		t.Fatalf("claim next to an unreadable unfenced record: %v", err)
	}
	plan, err := s.PlanClearUnfenced(ctx, "host-z")
	if err != nil {
		t.Fatalf("planning to clear it: %v", err)
	}
	if _, _, err := s.Apply(ctx, plan, "test", false); err != nil {
		t.Fatalf("clearing it: %v", err)
	}
	if _, err := s.Claim(ctx, a, c); err != nil {
		t.Fatalf("claim once it is cleared: %v", err)
	}
}
