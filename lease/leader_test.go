package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/tests/v3/framework/integration"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestWrapClassifiesTransientErrors(t *testing.T) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s := NewStore(cli, "")
	tests := []struct {
		err         error
		unavailable bool
	}{
		{rpctypes.ErrLeaderChanged, true},
		{rpctypes.ErrNoLeader, true},
		{rpctypes.ErrTimeout, true},
		{rpctypes.ErrTimeoutDueToLeaderFail, true},
		{status.Error(codes.Unknown, "raft proposal dropped"), true},
		{context.DeadlineExceeded, true},
		{rpctypes.ErrPermissionDenied, false},
		{rpctypes.ErrLeaseNotFound, false},
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			got := s.wrap(tc.err, "reading")
			if errors.Is(got, ErrUnavailable) != tc.unavailable {
				t.Fatalf("wrap(%v) = %v: unavailable %v, want %v", tc.err, got, !tc.unavailable, tc.unavailable)
			}
		})
	}
}

// TestClaimsThroughLeaderMoves: a routine leader change must not refuse a
// start (the fault campaign saw "etcdserver: leader changed" refusals).
func TestClaimsThroughLeaderMoves(t *testing.T) {
	if testing.Short() {
		t.Skip("moves an etcd leader 10 times")
	}
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 3})
	defer clus.Terminate(t)
	s := NewStore(clus.Client(0), "")
	h := session(t, s, "host-a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var errs []error
	n := 0
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				uuid := fmt.Sprintf("%08d-0000-4000-8000-%012d", g, i)
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := s.Claim(cctx, h, vm(uuid, fmt.Sprintf("vm-%d-%d", g, i), fmt.Sprintf("rbd/p/%d-%d", g, i)))
				ccancel()
				mu.Lock()
				n++
				if err != nil && ctx.Err() == nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	for range 10 {
		lead := clus.WaitLeader(t)
		next := (lead + 1) % 3
		mctx, mcancel := context.WithTimeout(ctx, 5*time.Second)
		err := clus.Members[lead].Server.MoveLeader(mctx, uint64(clus.Members[lead].Server.MemberID()), uint64(clus.Members[next].Server.MemberID()))
		mcancel()
		if err != nil {
			t.Fatalf("moving the leader: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d claims across 10 leader moves", n)
	if len(errs) > 0 {
		t.Fatalf("%d of %d claims failed, e.g. %v", len(errs), n, errs[0])
	}
}
