package fence

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/tests/v3/framework/integration"

	"github.com/virtlease/virtlease/lease"
)

// wallClock is a boot clock for tests against real etcd.
type wallClock struct{}

func (wallClock) Now() time.Duration { return lease.BootNow() }
func (wallClock) After(d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	time.AfterFunc(d, func() { close(ch) })
	return ch
}

// fakeGuests is one running guest that remembers when it was killed.
type fakeGuests struct {
	mu     sync.Mutex
	alive  bool
	killed time.Time
	kills  int
}

func (g *fakeGuests) Running(context.Context) ([]Guest, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.alive {
		return nil, nil
	}
	return []Guest{{UUID: "11111111-1111-1111-1111-111111111111", Name: "vm-1", PID: 1}}, nil
}

func (g *fakeGuests) Kill(context.Context, []Guest) []Guest {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.alive {
		g.alive, g.killed = false, time.Now()
		g.kills++
	}
	return nil
}

func (g *fakeGuests) fences() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.kills
}

// testConfig is the shortest timing Config.Validate's rules allow with a 2s margin.
var testConfig = Config{TTL: 5 * time.Second, RenewInterval: 500 * time.Millisecond, Margin: 2 * time.Second}

func startWatchdog(t *testing.T, endpoints []string, host string, g Guests) (stop func()) {
	t.Helper()
	ec := lease.EtcdConfig{Endpoints: endpoints, DialTimeout: time.Second}
	cli, err := lease.Dial(ec)
	if err != nil {
		t.Fatal(err)
	}
	// As the watchdog command wires it: renewals through each endpoint in
	// turn.
	store := lease.NewStore(cli, "")
	renewer, errs := lease.NewRenewer(ec, store)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var logw io.Writer = io.Discard
	if testing.Verbose() {
		logw = os.Stderr
	}
	w := New(Options{Config: testConfig, Host: host, Version: "test", StateDir: t.TempDir(), BootID: "test-boot",
		Clock: wallClock{}, Sessions: lease.WithRenewer{Store: store, Renewer: renewer}, Guests: g,
		Log: slog.New(slog.NewTextHandler(logw, nil)).With("host", host)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("watchdog: %v", err)
		}
		renewer.Close()
		cli.Close()
	}
}

// testSession grants a 30 s session and registers host on it, as a
// watchdog does.
func testSession(t *testing.T, store *lease.Store, host string) lease.Holder {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, _, err := store.Grant(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Register(ctx, lease.HostRecord{Host: host, Lease: id}); err != nil {
		t.Fatal(err)
	}
	return lease.Holder{Host: host, Lease: id}
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hostKeyLease(ctx context.Context, cli *clientv3.Client, host string) clientv3.LeaseID {
	resp, err := cli.Get(ctx, lease.NewKeys("").Host(host))
	if err != nil || len(resp.Kvs) == 0 {
		return 0
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

// Leader changes only ever extend leases: killing the leader 20 times
// while a session is held must never fence.
func TestLeaderKillsNoFalseFence(t *testing.T) {
	if testing.Short() {
		t.Skip("kills an etcd leader 20 times")
	}
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 3})
	defer clus.Terminate(t)
	g := &fakeGuests{alive: true}
	stop := startWatchdog(t, clus.Endpoints(), "host-a", g)
	defer stop()
	obs := clus.Client(0)
	ctx := context.Background()
	waitUntil(t, "session", 10*time.Second, func() bool { return hostKeyLease(ctx, obs, "host-a") != 0 })
	first := hostKeyLease(ctx, obs, "host-a")
	for i := range 20 {
		lead := clus.WaitLeader(t)
		m := clus.Members[lead]
		m.Stop(t)
		time.Sleep(300 * time.Millisecond)
		if err := m.Restart(t); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		clus.WaitLeader(t)
	}
	time.Sleep(testConfig.TTL) // long enough for a missed renewal to show
	if n := g.fences(); n != 0 {
		t.Fatalf("%d fences across 20 leader kills: a false fence", n)
	}
	if got := hostKeyLease(ctx, clus.Client(clus.WaitLeader(t)), "host-a"); got != first {
		t.Fatalf("session changed from %x to %x", first, got)
	}
}

// A host cut off from etcd fences before any other client can see its
// session gone: the margin must hold in every run.
func TestPartitionFencesBeforeExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for lease expiry several times")
	}
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 3, UseBridge: true})
	defer clus.Terminate(t)
	cut := clus.Members[0]
	obs := clus.Client(1)
	ctx := context.Background()
	for run := range 3 {
		g := &fakeGuests{alive: true}
		stop := startWatchdog(t, []string{cut.GRPCURL}, "host-a", g)
		waitUntil(t, "session", 10*time.Second, func() bool { return hostKeyLease(ctx, obs, "host-a") != 0 })
		time.Sleep(time.Second)
		cutAt := time.Now()
		cut.Bridge().Blackhole()
		var gone time.Time
		waitUntil(t, "expiry seen by another client", 3*testConfig.TTL, func() bool {
			if hostKeyLease(ctx, obs, "host-a") == 0 {
				gone = time.Now()
				return true
			}
			return false
		})
		g.mu.Lock()
		killed := g.killed
		g.mu.Unlock()
		if killed.IsZero() || !killed.Before(gone) {
			t.Fatalf("run %d: guest killed at %v, session seen gone at %v: not fenced first", run, killed.Sub(cutAt), gone.Sub(cutAt))
		}
		// Bound: fenced within ttl − margin (+1s) of the cut.
		if bound := testConfig.TTL - testConfig.Margin + time.Second; killed.Sub(cutAt) > bound {
			t.Fatalf("run %d: fenced %v after the cut, bound %v", run, killed.Sub(cutAt), bound)
		}
		t.Logf("run %d: fenced %v after the cut, session gone for others %v after; lead %v",
			run, killed.Sub(cutAt).Round(time.Millisecond), gone.Sub(cutAt).Round(time.Millisecond), gone.Sub(killed).Round(time.Millisecond))
		cut.Bridge().Unblackhole()
		stop()
	}
}
