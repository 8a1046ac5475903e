package lease

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/tests/v3/framework/integration"
)

// TestRenewerRotatesEndpoints: one member hangs (its connection stays open,
// nothing comes back, as with a SIGSTOPped etcd), and the watchdog keeps
// making other calls between renewals. Renewals must still go to each
// member in turn: never two in a row on the hung one, whatever the phase
// of the other calls. Renewing through the shared client instead, whose
// round robin is shared with the other calls, put every renewal on the hung
// member in one phase.
func TestRenewerRotatesEndpoints(t *testing.T) {
	clus, shared, r, h := renewerCluster(t, true)
	ctx := testCtx(t)
	// Every connection up before the hang.
	for range 2 * len(clus.Members) {
		if _, err := r.Renew(ctx, h.Lease); err != nil {
			t.Fatal(err)
		}
		if _, err := shared.Renew(ctx, h.Lease); err != nil {
			t.Fatal(err)
		}
	}
	clus.Members[1].Bridge().Blackhole()
	defer clus.Members[1].Bridge().Unblackhole()

	// With shared.Renew in this map, one phase gives "ok hung hung hung
	// hung hung": the round robin puts every renewal on the hung member.
	renewers := map[string]func(context.Context, ID) (time.Duration, error){"renewer": r.Renew}
	for name, renew := range renewers {
		// Whatever the phase of the other calls against the round robin.
		for phase := range 3 {
			t.Run(fmt.Sprintf("%s/phase%d", name, phase), func(t *testing.T) {
				get := func() {
					gctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
					shared.cli.Get(gctx, "x")
					cancel()
				}
				for range phase {
					get()
				}
				var pattern []string
				for range 6 {
					// The watchdog's other calls between two renewals.
					get()
					get()
					rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
					_, err := renew(rctx, h.Lease)
					cancel()
					pattern = append(pattern, map[bool]string{true: "ok", false: "hung"}[err == nil])
				}
				p := strings.Join(pattern, " ")
				if strings.Contains(p, "hung hung") || strings.Count(p, "hung") > 2 {
					t.Fatalf("renewals: %s; want each member in turn (one in three on the hung member)", p)
				}
				t.Logf("renewals: %s", p)
			})
		}
	}
}

// TestRenewerPassesOverDeadMember: a stopped member (connection refused, the
// client reconnecting with backoff) gets at most one renewal; plain
// rotation sent it every third one, each waiting out its deadline (an
// intermittent false fence across 20 leader kills under -race).
func TestRenewerPassesOverDeadMember(t *testing.T) {
	clus, _, r, h := renewerCluster(t, false)
	ctx := testCtx(t)
	for range 2 * len(clus.Members) {
		if _, err := r.Renew(ctx, h.Lease); err != nil {
			t.Fatal(err)
		}
	}
	dead := clus.Members[2]
	if dead.Server.Leader() == dead.Server.MemberID() {
		dead = clus.Members[1] // keep the leader: this is about one dead member
	}
	dead.Stop(t)
	defer dead.Restart(t)
	var pattern []string
	for range 9 {
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := r.Renew(rctx, h.Lease)
		cancel()
		pattern = append(pattern, map[bool]string{true: "ok", false: "failed"}[err == nil])
	}
	p := strings.Join(pattern, " ")
	t.Logf("renewals with one member stopped: %s", p)
	if strings.Count(p, "failed") > 1 {
		t.Fatalf("renewals: %s; a dead member must be passed over after at most one failure", p)
	}
}

// renewerCluster starts a real 3-member etcd (with bridges to cut, or not)
// and returns it with a store on a client of every endpoint, a Renewer
// over the same endpoints and a session of host-a; all end with the test.
func renewerCluster(t *testing.T, bridge bool) (*integration.Cluster, *Store, *Renewer, Holder) {
	t.Helper()
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 3, UseBridge: bridge})
	t.Cleanup(func() { clus.Terminate(t) })
	var eps []string
	for _, m := range clus.Members {
		eps = append(eps, m.GRPCURL)
	}
	ec := EtcdConfig{Endpoints: eps, DialTimeout: 2 * time.Second}
	cli, err := Dial(ec)
	if err != nil {
		t.Fatal(err)
	}
	shared := NewStore(cli, "")
	r, errs := NewRenewer(ec, shared)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	// Cleanups run last-in first-out: connections close before the cluster.
	t.Cleanup(func() { r.Close(); cli.Close() })
	return clus, shared, r, session(t, shared, "host-a")
}
