package lease

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// pausingKV runs before() once, just before the first Txn that deletes
// keys is committed: the point between a release's read and its write.
type pausingKV struct {
	clientv3.KV
	before func()
}

func (p *pausingKV) Txn(ctx context.Context) clientv3.Txn {
	return &pausingTxn{Txn: p.KV.Txn(ctx), kv: p}
}

type pausingTxn struct {
	clientv3.Txn
	kv      *pausingKV
	deletes bool
}

func (t *pausingTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *pausingTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}
func (t *pausingTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		t.deletes = t.deletes || op.IsDelete()
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}
func (t *pausingTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.deletes && t.kv.before != nil {
		f := t.kv.before
		t.kv.before = nil
		f()
	}
	return t.Txn.Commit()
}

// A stale-key release by the reconcile (it saw the domain inactive, then
// releases what Holdings listed) must not delete the keys of a start that
// claimed them again in between: "all mine already" is no reason to leave
// them as they were. Both orders of the race: the start's claim lands
// between the release's read and its write, or before the release reads.
func TestReleaseStaleSparesNewStart(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a := session(t, s, "host-a")
	ctx := testCtx(t)
	for _, tc := range []struct {
		name       string
		claimFirst bool // the start claims before the release reads
	}{
		{"claim between the release's read and write", false},
		{"claim before the release reads", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := vm("44444444-4444-4444-4444-444444444444", "web4", "rbd/pool/web4")
			// Stale keys of ours: a stop whose hook did not reach etcd.
			if _, err := s.Claim(ctx, a, c); err != nil {
				t.Fatal(err)
			}
			hs, err := s.Holdings(ctx, a)
			if err != nil || len(hs.Domains) != 1 {
				t.Fatalf("holdings: %+v %v", hs, err)
			}
			// Here the reconcile asks libvirt, which says inactive; then
			// the operator starts the guest (its prepare claims).
			s.now = func() time.Time { return time.Now().Add(time.Minute) }
			defer func() { s.now = time.Now }()
			start := func() {
				if _, err := s.Claim(ctx, a, c); err != nil {
					t.Errorf("the start's claim: %v", err)
				}
			}
			rc, err := clientv3.New(clientv3.Config{Endpoints: cli.Endpoints(), DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			pk := &pausingKV{KV: rc.KV}
			rc.KV = pk
			if tc.claimFirst {
				start()
			} else {
				pk.before = start
			}
			if _, err := NewStore(rc, "").ReleaseStale(ctx, a, hs.Domains[0]); err != nil {
				t.Fatal(err)
			}
			if rec, err := s.Holding(ctx, c.UUID); err != nil || rec == nil {
				t.Fatalf("the started guest's domain key is gone: %v %v", rec, err)
			}
			got, err := cli.Get(ctx, s.keys.Disk("rbd/pool/web4"))
			if err != nil || len(got.Kvs) != 1 {
				t.Fatalf("the started guest's disk key is gone: %v", err)
			}
			if _, err := s.Release(ctx, a, c.UUID, c.Disks, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Without a start in between, the reconcile's release does release.
func TestReleaseStaleReleases(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a := session(t, s, "host-a")
	ctx := testCtx(t)
	c := vm("55555555-5555-5555-5555-555555555555", "web5", "rbd/pool/web5", "file/img/web5")
	if _, err := s.Claim(ctx, a, c); err != nil {
		t.Fatal(err)
	}
	hs, err := s.Holdings(ctx, a)
	if err != nil || len(hs.Domains) != 1 {
		t.Fatalf("holdings: %+v %v", hs, err)
	}
	if n, err := s.ReleaseStale(ctx, a, hs.Domains[0]); err != nil || n != 3 {
		t.Fatalf("released %d keys (%v), want 3", n, err)
	}
}
