package lease

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A host may hold more keys than etcd takes operations in one Txn
// (--max-txn-ops, default 128): Held and HAView must still answer.
func TestManyKeysPastMaxTxnOps(t *testing.T) {
	s := NewStore(newEtcd(t), "")
	ctx := testCtx(t)
	a := session(t, s, "host-a")
	const n = 150
	for i := range n {
		c := vm(fmt.Sprintf("00000000-0000-4000-8000-%012d", i), fmt.Sprintf("vm%d", i), fmt.Sprintf("rbd/pool/vm%d", i))
		c.Intent = &Intent{Want: WantRunning, Name: c.Name, Since: time.Now().UTC()}
		if _, err := s.Claim(ctx, a, c); err != nil {
			t.Fatal(err)
		}
	}
	// one more HA intent whose domain nobody holds: restartable
	lone := vm("00000000-0000-4000-8000-999999999999", "lone")
	lone.Intent = &Intent{Want: WantRunning, Name: "lone", Since: time.Now().UTC()}
	if _, err := s.Claim(ctx, a, lone); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Release(ctx, a, lone.UUID, nil, nil); err != nil {
		t.Fatal(err)
	}
	held, err := s.Held(ctx, a)
	if err != nil {
		t.Fatalf("Held with %d domains and %d disks: %v", n, n, err)
	}
	if len(held) != n {
		t.Fatalf("Held lists %d domains, want %d", len(held), n)
	}
	for _, d := range held {
		if len(d.Disks) != 1 {
			t.Fatalf("%s: disks %v, want one", d.Name, d.Disks)
		}
	}
	v, err := s.HAView(ctx)
	if err != nil {
		t.Fatalf("HAView with %d HA domains: %v", n+1, err)
	}
	if len(v.Restartable) != 1 || v.Restartable[0].UUID != lone.UUID {
		t.Fatalf("restartable %v, want only %s", v.Restartable, lone.UUID)
	}
}

// A domain with more disks than one claim Txn can carry is refused with a
// message that says so, not etcd's "too many operations in txn request";
// up to MaxClaimDisks it is claimed and released whole.
func TestClaimDiskLimit(t *testing.T) {
	s := NewStore(newEtcd(t), "")
	a := session(t, s, "host-a")
	for _, tc := range []struct {
		disks int
		ok    bool
	}{{MaxClaimDisks, true}, {MaxClaimDisks + 1, false}} {
		t.Run(fmt.Sprint(tc.disks), func(t *testing.T) {
			ctx := testCtx(t)
			c := vm(fmt.Sprintf("00000000-0000-4000-8000-%012d", tc.disks), "big")
			for i := range tc.disks {
				c.Disks = append(c.Disks, fmt.Sprintf("rbd/pool/big-%d-%d", tc.disks, i))
			}
			c.Intent = &Intent{Want: WantRunning, Name: "big", Since: time.Now().UTC()}
			_, err := s.Claim(ctx, a, c)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if n, err := s.Release(ctx, a, c.UUID, c.Disks, nil); err != nil || n != tc.disks+1 {
					t.Fatalf("release: %d keys, %v", n, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "disks") || strings.Contains(err.Error(), "too many operations") {
				t.Fatalf("claim of %d disks: %v", tc.disks, err)
			}
		})
	}
}
