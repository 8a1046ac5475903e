package lease

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Apply writes only what the operator was shown: a change between the plan
// and the Apply (the holder came back, a new claim) writes nothing.
func TestForceReleaseChangedSincePlan(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "/virtlease")
	ctx := testCtx(t)
	a := session(t, s, "host-a")
	web1 := vm("11111111-1111-1111-1111-111111111111", "web1", "rbd/pool/web1")
	if _, err := s.Claim(ctx, a, web1); err != nil {
		t.Fatal(err)
	}

	plan, err := s.PlanForceRelease(ctx, "web1")
	if err != nil || len(plan.Alive) != 1 || plan.Host != "host-a" || plan.Lease != a.Lease || len(plan.Keys) != 2 {
		t.Fatalf("plan %+v %v", plan, err)
	}
	if _, _, err := s.Apply(ctx, plan, "test", false); !errors.Is(err, ErrAlive) {
		t.Fatalf("apply on a live holder: %v", err)
	}

	// The holder's hosts key vanishes (dead), the operator plans, and then
	// the host registers again before the Apply.
	if _, err := cli.Delete(ctx, s.keys.Host("host-a")); err != nil {
		t.Fatal(err)
	}
	plan, err = s.PlanForceRelease(ctx, web1.UUID)
	if err != nil || len(plan.Alive) != 0 {
		t.Fatalf("plan on a dead holder: %+v %v", plan, err)
	}
	if err := s.Register(ctx, HostRecord{Host: "host-a", Lease: a.Lease}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Apply(ctx, plan, "test", false); !errors.Is(err, ErrChanged) {
		t.Fatalf("apply after the holder came back: %v", err)
	}
	if rec, _ := s.Holding(ctx, web1.UUID); rec == nil {
		t.Fatal("domain key deleted although the plan was stale")
	}
	if resp, _ := cli.Get(ctx, s.keys.Dir("audit"), clientv3.WithPrefix()); len(resp.Kvs) != 0 {
		t.Fatal("audit record written for an action that did not happen")
	}

	// An unfenced-only domain: a claim made after the plan wins.
	if err := s.SetUnfenced(ctx, "host-z", Unfenced{Since: time.Now(), Guests: []UnfencedGuest{{UUID: "22222222-2222-2222-2222-222222222222", Name: "db1"}}}); err != nil {
		t.Fatal(err)
	}
	plan, err = s.PlanForceRelease(ctx, "db1")
	if err != nil || plan.Host != "host-z" || len(plan.Keys) != 1 || plan.Keys[0] != s.keys.Unfenced("host-z") {
		t.Fatalf("plan of an unfenced guest: %+v %v", plan, err)
	}
	if _, err := cli.Put(ctx, s.keys.Domain("22222222-2222-2222-2222-222222222222"), `{"host":"host-a"}`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Apply(ctx, plan, "test", false); !errors.Is(err, ErrChanged) {
		t.Fatalf("apply after a new claim: %v", err)
	}

	// Disk keys left without their domain key are released too.
	orphan := "33333333-3333-3333-3333-333333333333"
	if _, err := cli.Put(ctx, s.keys.Disk("rbd/pool/orphan"), encode(Record{Host: "host-q", UUID: orphan, Name: "orphan", Lease: 7})); err != nil {
		t.Fatal(err)
	}
	plan, err = s.PlanForceRelease(ctx, "orphan")
	if err != nil || plan.Host != "host-q" || len(plan.Keys) != 1 || plan.Keys[0] != s.keys.Disk("rbd/pool/orphan") || len(plan.Alive) != 0 {
		t.Fatalf("plan of an orphan disk key: %+v %v", plan, err)
	}
	if rec, key, err := s.Apply(ctx, plan, "test", false); err != nil || rec.UUID != orphan || key == "" {
		t.Fatalf("apply: %+v %q %v", rec, key, err)
	}

	if _, err := s.PlanForceRelease(ctx, "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("plan of an unknown domain: %v", err)
	}
	if _, err := s.PlanClearUnfenced(ctx, "host-y"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("plan of a missing unfenced record: %v", err)
	}
}

func TestDrainRecord(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "/virtlease")
	ctx := testCtx(t)
	since := time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)
	d, was, err := s.SetDrain(ctx, "host-a", Drain{Since: since, By: "alice@admin"})
	if err != nil || was || d.By != "alice@admin" {
		t.Fatalf("drain: %+v %v %v", d, was, err)
	}
	// Draining again keeps the first record; asking to evacuate sets only that.
	d, was, err = s.SetDrain(ctx, "host-a", Drain{Since: since.Add(time.Hour), By: "bob@admin", Evacuate: true})
	if err != nil || !was || !d.Since.Equal(since) || d.By != "alice@admin" || !d.Evacuate {
		t.Fatalf("drain again: %+v %v %v", d, was, err)
	}
	resp, _ := cli.Get(ctx, "/virtlease/drain/host-a")
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"since":"2026-11-25T13:00:00Z","by":"alice@admin","evacuate":true}` {
		t.Fatalf("drain key: %+v", resp.Kvs)
	}
	old, err := s.ClearDrain(ctx, "host-a")
	if err != nil || old == nil || old.By != "alice@admin" {
		t.Fatalf("undrain: %+v %v", old, err)
	}
	if old, err := s.ClearDrain(ctx, "host-a"); err != nil || old != nil {
		t.Fatalf("undrain again: %+v %v", old, err)
	}
}
