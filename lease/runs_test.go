package lease

import (
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestCheckRestore(t *testing.T) {
	at := time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)
	mine := &Run{Host: "host-a", Seq: 5, Since: at}
	tests := []struct {
		name       string
		last, mine *Run
		wantMsg    []string // empty: allowed
	}{
		{"no record anywhere: ran nowhere else", nil, nil, nil},
		{"no record, this host knows a run", nil, mine, nil},
		{"my run is still the last", &Run{Host: "host-a", Seq: 5, Since: at}, mine, nil},
		{"another host started it since", &Run{Host: "host-b", Seq: 6, Since: at.Add(time.Hour)}, mine,
			[]string{"refusing to restore web1 from its saved state", "host host-b started it after this host last did (run 6, 2026-12-04T21:00:00Z)",
				"`virsh managedsave-remove web1` discards the saved state"}},
		// The clock stepped back before host-b's start: its time is earlier
		// than mine, its sequence number is not.
		{"another host started it since, clock stepped back", &Run{Host: "host-b", Seq: 6, Since: at.Add(-time.Hour)}, mine,
			[]string{"host host-b started it after this host last did"}},
		{"another host started it, this host knows no run", &Run{Host: "host-b", Seq: 1, Since: at}, nil,
			[]string{"host host-b started it"}},
		{"this host started it again since (local record lost)", &Run{Host: "host-a", Seq: 7, Since: at}, mine,
			[]string{"the saved state comes from run 5 here, but etcd's last run of it is run 7"}},
		{"the record went back (etcd restored from a backup)", &Run{Host: "host-a", Seq: 4, Since: at}, mine,
			[]string{"run 5 here", "run 4"}},
		{"my run, but no local record of it", &Run{Host: "host-a", Seq: 5, Since: at}, nil,
			[]string{"keeps no record of which run the saved state comes from"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRestore("web1", "host-a", tc.last, tc.mine)
			if len(tc.wantMsg) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var re *RestoreError
			if !errors.As(err, &re) {
				t.Fatalf("want *RestoreError, got %v", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message is not one line: %q", msg)
			}
			for _, w := range tc.wantMsg {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
}

// Every start bumps the domain's one runs record in its claim's Txn; an
// adopt does not; a restore's claim is refused, writing nothing, once
// another host started the domain after the run the saved state ends.
func TestRunsRecordedByStarts(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	web1 := vm("11111111-1111-1111-1111-111111111111", "web1", "rbd/pool/web1")

	start := func(h Holder, c Claim) *Run {
		t.Helper()
		r, err := s.Claim(ctx, h, c)
		if err != nil {
			t.Fatalf("%s: claim: %v", h.Host, err)
		}
		if r.Run == nil || r.Run.Host != h.Host {
			t.Fatalf("%s: a start recorded run %+v", h.Host, r.Run)
		}
		last, err := s.LastRun(ctx, c.UUID)
		if err != nil || last == nil || !last.same(*r.Run) {
			t.Fatalf("%s: runs record %+v (%v), the claim said %+v", h.Host, last, err, r.Run)
		}
		return r.Run
	}
	stop := func(h Holder) {
		t.Helper()
		if _, err := s.Release(ctx, h, web1.UUID, web1.Disks, nil); err != nil {
			t.Fatal(err)
		}
	}

	if last, err := s.LastRun(ctx, web1.UUID); err != nil || last != nil {
		t.Fatalf("runs record before any start: %+v %v", last, err)
	}
	a1 := start(a, web1)
	if a1.Seq != 1 {
		t.Fatalf("first start: run %d, want 1", a1.Seq)
	}
	stop(a)
	a2 := start(a, web1) // a managed-save-remove'd fresh start on the same host
	if a2.Seq != 2 {
		t.Fatalf("second start: run %d, want 2", a2.Seq)
	}
	// The saved state of run 2, restored on host-a: nobody started it since.
	stop(a)
	restore := web1
	restore.Restore = &Restore{Mine: a2}
	a3 := start(a, restore)
	stop(a)

	// An adopt (reconnect, watchdog) is not a start: the record stays.
	adopt := web1
	adopt.Start = false
	if r, err := s.Claim(ctx, a, adopt); err != nil || r.Run != nil {
		t.Fatalf("adopt: %+v %v", r, err)
	}
	if last, _ := s.LastRun(ctx, web1.UUID); !last.same(*a3) {
		t.Fatalf("adopt changed the runs record to %+v", last)
	}
	stop(a)

	// host-b starts and stops it: host-a's saved state of run 3 is stale.
	// host-b's clock is an hour behind: the sequence number decides.
	s.now = func() time.Time { return time.Now().Add(-time.Hour) }
	b4 := start(b, web1)
	s.now = time.Now
	if b4.Seq != a3.Seq+1 || !b4.Since.Before(a3.Since) {
		t.Fatalf("host-b's start: %+v after %+v", b4, a3)
	}
	stop(b)
	restore.Restore = &Restore{Mine: a3}
	_, err := s.Claim(ctx, a, restore)
	var re *RestoreError
	if !errors.As(err, &re) || re.Last.Host != "host-b" || re.Last.Seq != b4.Seq {
		t.Fatalf("restore of a state saved before host-b's start: want *RestoreError naming host-b's run, got %v", err)
	}
	if rec, _ := s.Holding(ctx, web1.UUID); rec != nil {
		t.Fatalf("the refused restore left a domain key: %+v", rec)
	}
	if last, _ := s.LastRun(ctx, web1.UUID); !last.same(*b4) {
		t.Fatalf("the refused restore changed the runs record to %+v", last)
	}
	// host-b may restore what it saved.
	restore.Restore = &Restore{Mine: b4}
	start(b, restore)

	// One key per domain, however many starts.
	resp, err := cli.Get(ctx, s.keys.Dir("runs"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 1 {
		t.Fatalf("%d runs records (%v), want 1", resp.Count, err)
	}
}

// restore begin and prepare are two hook calls: a start elsewhere between
// them (started and stopped again) must still refuse the restore, in the
// claim's own Txn.
func TestRestoreClaimRefusedAfterStartBetweenHookCalls(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	c := vm("22222222-2222-2222-2222-222222222222", "db", "iscsi/iqn.2004-04.com.example:db/1")
	r, err := s.Claim(ctx, a, c)
	if err != nil {
		t.Fatal(err)
	}
	s.Release(ctx, a, c.UUID, c.Disks, nil) // managedsave: the QEMU is gone

	// restore begin on host-a: allowed.
	last, err := s.LastRun(ctx, c.UUID)
	if err != nil || CheckRestore(c.Name, "host-a", last, r.Run) != nil {
		t.Fatalf("restore begin: %+v %v", last, err)
	}
	// host-b starts and stops the guest meanwhile.
	if _, err := s.Claim(ctx, b, c); err != nil {
		t.Fatal(err)
	}
	s.Release(ctx, b, c.UUID, c.Disks, nil)
	// prepare on host-a.
	c.Restore = &Restore{Mine: r.Run}
	var re *RestoreError
	if _, err := s.Claim(ctx, a, c); !errors.As(err, &re) {
		t.Fatalf("restore's claim after host-b's run: want *RestoreError, got %v", err)
	}
}

// A live migration continues the source's run on the destination: its
// incoming claim returns that run under the destination's name, and the
// hand-off moves the record there. A state the source saved earlier is
// stale then; one the destination saves after is not.
func TestMigrationMovesTheRun(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	c := vm("33333333-3333-3333-3333-333333333333", "mig", "rbd/p/mig")
	ra, err := s.Claim(ctx, a, c)
	if err != nil {
		t.Fatal(err)
	}
	from, rev, err := s.RecordMigration(ctx, b, c.UUID, c.Name, c.Disks)
	if err != nil || from != "host-a" {
		t.Fatalf("record: %q %v", from, err)
	}
	in := c
	in.Start, in.IncomingFrom, in.IncomingRev = false, from, rev
	rb, err := s.Claim(ctx, b, in)
	if err != nil {
		t.Fatal(err)
	}
	if rb.Run == nil || rb.Run.Host != "host-b" || rb.Run.Seq != ra.Run.Seq {
		t.Fatalf("incoming claim's run %+v; want host-b's continuation of %+v", rb.Run, ra.Run)
	}
	if last, _ := s.LastRun(ctx, c.UUID); !last.same(*ra.Run) {
		t.Fatalf("runs record before the hand-off: %+v, want the source's %+v", last, ra.Run)
	}
	if ok, err := s.HandOff(ctx, a, c.UUID, c.Name, c.Disks); !ok || err != nil {
		t.Fatalf("hand-off: %v %v", ok, err)
	}
	last, _ := s.LastRun(ctx, c.UUID)
	if last == nil || !last.same(*rb.Run) {
		t.Fatalf("runs record after the hand-off: %+v, want %+v", last, rb.Run)
	}
	if err := CheckRestore(c.Name, "host-b", last, rb.Run); err != nil {
		t.Fatalf("host-b may not restore a state saved after the guest moved there: %v", err)
	}
	if CheckRestore(c.Name, "host-a", last, ra.Run) == nil {
		t.Fatal("host-a may restore a state from before the guest moved to host-b")
	}
}

// A runs record that is not one refuses starts (fail closed) but not an
// adopt of a running guest.
func TestBadRunsRecord(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a := session(t, s, "host-a")
	ctx := testCtx(t)
	c := vm("44444444-4444-4444-4444-444444444444", "odd")
	if _, err := cli.Put(ctx, s.keys.Run(c.UUID), "not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, a, c); err == nil || !strings.Contains(err.Error(), "not a virtlease record") {
		t.Fatalf("start over a bad runs record: %v", err)
	}
	c.Start = false
	if _, err := s.Claim(ctx, a, c); err != nil {
		t.Fatalf("adopt over a bad runs record: %v", err)
	}
}
