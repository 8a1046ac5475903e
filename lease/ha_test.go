package lease

import (
	"testing"
	"time"
)

// TestMarkCrashed: only the very intent a clean stop on this host wrote,
// with nobody holding the domain, goes back to running.
func TestMarkCrashed(t *testing.T) {
	const uuid = "77777777-7777-7777-7777-777777777777"
	stoppedAt := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		// setup runs with a session of host-a (a) and host-b (b) on s.
		setup  func(t *testing.T, s *Store, a, b Holder)
		host   string
		at     time.Time
		wantOK bool
	}{
		{"the clean stop the hook recorded", nil, "host-a", stoppedAt, true},
		{"no intent", func(t *testing.T, s *Store, a, b Holder) {
			if _, err := s.cli.Delete(testCtx(t), s.keys.Intent(uuid)); err != nil {
				t.Fatal(err)
			}
		}, "host-a", stoppedAt, false},
		{"stopped on another host", nil, "host-b", stoppedAt, false},
		{"a later stop", nil, "host-a", stoppedAt.Add(-time.Second), false},
		{"started again elsewhere meanwhile", func(t *testing.T, s *Store, a, b Holder) {
			if _, err := s.Claim(testCtx(t), b, vm(uuid, "ha1")); err != nil {
				t.Fatal(err)
			}
		}, "host-a", stoppedAt, false},
		{"reset by an operator", func(t *testing.T, s *Store, a, b Holder) {
			if err := s.ResetIntent(testCtx(t), uuid, true); err != nil {
				t.Fatal(err)
			}
		}, "host-a", stoppedAt, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cli := newEtcd(t)
			s := NewStore(cli, "")
			a, b := session(t, s, "host-a"), session(t, s, "host-b")
			ctx := testCtx(t)
			c := vm(uuid, "ha1", "rbd/pool/ha1")
			c.Intent = &Intent{Want: WantRunning, Name: "ha1", Since: stoppedAt.Add(-time.Hour)}
			if _, err := s.Claim(ctx, a, c); err != nil {
				t.Fatal(err)
			}
			stop := &Intent{Want: WantStopped, Name: "ha1", Reason: StoppedBy("host-a"), Since: stoppedAt}
			if _, err := s.Release(ctx, a, uuid, c.Disks, stop); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, s, a, b)
			}
			ok, err := s.MarkCrashed(ctx, uuid, tc.host, tc.at)
			if err != nil || ok != tc.wantOK {
				t.Fatalf("MarkCrashed = %v, %v; want %v", ok, err, tc.wantOK)
			}
			resp, err := cli.Get(ctx, s.keys.Intent(uuid))
			if err != nil {
				t.Fatal(err)
			}
			var in Intent
			if len(resp.Kvs) == 1 {
				in, _ = decode[Intent]("", resp.Kvs[0].Value)
			}
			if crashed := in.Want == WantRunning && in.Reason == "crashed on host-a"; crashed != tc.wantOK {
				t.Errorf("intent after MarkCrashed: %+v", in)
			}
			if tc.wantOK {
				v, err := s.HAView(ctx)
				if err != nil || len(v.Restartable) != 1 || v.Restartable[0].UUID != uuid {
					t.Errorf("not restartable after MarkCrashed: %+v %v", v.Restartable, err)
				}
			}
		})
	}
}

// HAView counts the intents that gave up (want failed), for the
// virtlease_ha_intents_failed gauge; they are never restartable.
func TestHAViewCountsFailed(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	ctx := testCtx(t)
	for uuid, want := range map[string]Want{
		"11111111-1111-1111-1111-111111111111": WantFailed,
		"22222222-2222-2222-2222-222222222222": WantFailed,
		"33333333-3333-3333-3333-333333333333": WantRunning,
		"44444444-4444-4444-4444-444444444444": WantStopped,
	} {
		if _, err := cli.Put(ctx, s.keys.Intent(uuid), encode(Intent{Want: want, Name: "vm"})); err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.HAView(ctx)
	if err != nil || v.Failed != 2 || len(v.Restartable) != 1 {
		t.Fatalf("view: failed %d, restartable %d, %v; want 2 and 1", v.Failed, len(v.Restartable), err)
	}
}

// A restart is not counted once an unfenced record changed after the view
// (it may list the guest now), and an unreadable unfenced record stops HA
// restarts as it stops claims, rather than letting them fail and burn the
// restart count.
func TestHARestartAndUnfencedRecords(t *testing.T) {
	const uuid = "88888888-8888-8888-8888-888888888888"
	cli := newEtcd(t)
	s := NewStore(cli, "")
	ctx := testCtx(t)
	b := session(t, s, "host-b")
	if _, err := cli.Put(ctx, s.keys.Intent(uuid), encode(Intent{Want: WantRunning, Name: "ha1"})); err != nil {
		t.Fatal(err)
	}
	v, err := s.HAView(ctx)
	if err != nil || len(v.Restartable) != 1 {
		t.Fatalf("view: %+v %v", v, err)
	}
	if err := s.SetUnfenced(ctx, "host-a", Unfenced{Guests: []UnfencedGuest{{UUID: uuid, Name: "ha1"}}}); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := s.BeginRestart(ctx, b, v.Restartable[0], 3, time.Minute); ok || err != nil {
		t.Fatalf("BeginRestart = %v, %v after an unfenced record listing the guest appeared", ok, err)
	}
	if _, err := cli.Delete(ctx, s.keys.Unfenced("host-a")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, s.keys.Unfenced("host-c"), "{not json"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.HAView(ctx); err == nil {
		t.Fatalf("view with an unreadable unfenced record: %+v, want an error", v.Restartable)
	}
}
