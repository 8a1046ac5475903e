package lease

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/tests/v3/framework/integration"
)

// newEtcd starts a real single-member etcd in-process and returns a client.
func newEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	t.Cleanup(func() { clus.Terminate(t) })
	return clus.Client(0)
}

// session grants a lease and registers host on it, as the watchdog does.
func session(t *testing.T, s *Store, host string) Holder {
	t.Helper()
	ctx := testCtx(t)
	id, _, err := s.Grant(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Register(ctx, HostRecord{Host: host, Lease: id, PID: os.Getpid(), Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return Holder{Host: host, Lease: id}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func vm(uuid, name string, disks ...string) Claim {
	return Claim{UUID: uuid, Name: name, Disks: disks, Start: true}
}

func TestClaimOutcomes(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "/virtlease")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)

	web1 := vm("11111111-1111-1111-1111-111111111111", "web1", "rbd/pool/web1", "rbd/pool/shared")
	if r, err := s.Claim(ctx, a, web1); err != nil || r.Written != 3 {
		t.Fatalf("first claim: %+v %v", r, err)
	}
	if r, err := s.Claim(ctx, a, web1); err != nil || r.Written != 0 {
		t.Fatalf("claim again by holder must be a no-op: %+v %v", r, err)
	}

	tests := []struct {
		name     string
		h        Holder
		c        Claim
		wantKey  string
		wantHost string
		wantMsg  string
	}{
		{"same domain elsewhere", b, web1, s.keys.Domain(web1.UUID), "host-a",
			"domain web1 (11111111-1111-1111-1111-111111111111) is running on host host-a since "},
		{"copied XML, same disk, other host", b, vm("22222222-2222-2222-2222-222222222222", "web1-copy", "rbd/pool/web1"),
			s.keys.Disk("rbd/pool/web1"), "host-a", "disk rbd/pool/web1 is in use by domain web1"},
		{"copied XML, same disk, same host", a, vm("22222222-2222-2222-2222-222222222222", "web1-copy", "rbd/pool/web1"),
			s.keys.Disk("rbd/pool/web1"), "host-a", "refusing to start web1-copy here"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Claim(ctx, tc.h, tc.c)
			var held *HeldError
			if !errors.As(err, &held) {
				t.Fatalf("want *HeldError, got %v", err)
			}
			if held.Key != tc.wantKey || held.Held.Host != tc.wantHost {
				t.Errorf("refusal names key %s host %s, want %s %s", held.Key, held.Held.Host, tc.wantKey, tc.wantHost)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("message %q lacks %q", msg, tc.wantMsg)
			}
			// All or nothing: the refused claim wrote no key of its own.
			got, _ := cli.Get(ctx, s.keys.Domain(tc.c.UUID))
			if tc.c.UUID != web1.UUID && len(got.Kvs) != 0 {
				t.Errorf("refused claim left %s behind", s.keys.Domain(tc.c.UUID))
			}
		})
	}

	// The refused host's release (libvirt calls it after a failed prepare)
	// must not touch the holder's keys.
	if n, err := s.Release(ctx, b, web1.UUID, web1.Disks, nil); err != nil || n != 0 {
		t.Fatalf("release by non-holder: %d %v", n, err)
	}
	copyUUID := "22222222-2222-2222-2222-222222222222"
	if n, err := s.Release(ctx, a, copyUUID, []string{"rbd/pool/web1"}, nil); err != nil || n != 0 {
		t.Fatalf("release of the copied domain on the holder's host deleted %d keys: %v", n, err)
	}
	if rec, err := s.Holding(ctx, web1.UUID); err != nil || rec == nil || rec.Host != "host-a" {
		t.Fatalf("holder's key gone after others' releases: %+v %v", rec, err)
	}
	if n, err := s.Release(ctx, a, web1.UUID, web1.Disks, nil); err != nil || n != 3 {
		t.Fatalf("holder's release: %d %v", n, err)
	}
	if _, err := s.Claim(ctx, b, web1); err != nil {
		t.Fatalf("claim after release: %v", err)
	}
}

func TestClaimRaceOneWinner(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	hosts := []Holder{session(t, s, "host-a"), session(t, s, "host-b")}
	ctx := testCtx(t)
	c := vm("33333333-3333-3333-3333-333333333333", "race", "nbd/127.0.0.1:10809/disk", "file/shared/race.qcow2")
	for round := range 200 {
		var wg sync.WaitGroup
		errs := make([]error, len(hosts))
		for i, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.Claim(ctx, h, c)
			}()
		}
		wg.Wait()
		winners := 0
		for i, err := range errs {
			var held *HeldError
			switch {
			case err == nil:
				winners++
				if n, err := s.Release(ctx, hosts[i], c.UUID, c.Disks, nil); err != nil || n != 3 {
					t.Fatalf("round %d: winner's release: %d %v", round, n, err)
				}
			case errors.As(err, &held):
			default:
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d winners, want exactly 1 (%v)", round, winners, errs)
		}
	}
}

func TestKeysVanishWithSession(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a, b := session(t, s, "host-a"), session(t, s, "host-b")
	ctx := testCtx(t)
	c := vm("44444444-4444-4444-4444-444444444444", "db", "iscsi/iqn.2004-04.com.example:db/1")
	if _, err := s.Claim(ctx, a, c); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, a.Lease); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, s.keys.Prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	// Only host-b's hosts key and the domain's runs record (on no lease:
	// it outlives sessions) are left.
	if resp.Count != 2 {
		t.Fatalf("%d keys left after revoking host-a's session, want 2", resp.Count)
	}
	if _, err := s.Claim(ctx, b, c); err != nil {
		t.Fatalf("claim after the holder's session ended: %v", err)
	}
	// A claim under a dead session is refused, never written.
	if _, err := s.Claim(ctx, a, vm("55555555-5555-5555-5555-555555555555", "x")); !errors.Is(err, ErrNoSession) {
		t.Fatalf("claim under a revoked session: want ErrNoSession, got %v", err)
	}
	if _, err := s.Renew(ctx, a.Lease); !errors.Is(err, ErrNoSession) {
		t.Fatalf("renew of a revoked session: want ErrNoSession, got %v", err)
	}
}

func TestRegisterSecondMachineSameName(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a := session(t, s, "host-a")
	ctx := testCtx(t)
	if err := s.Register(ctx, HostRecord{Host: "host-a", Lease: a.Lease, PID: 1}); err != nil {
		t.Fatalf("re-register on the same lease (watchdog restart): %v", err)
	}
	other, _, err := s.Grant(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Register(ctx, HostRecord{Host: "host-a", Lease: other, PID: 2})
	if !errors.Is(err, ErrHostTaken) {
		t.Fatalf("want ErrHostTaken, got %v", err)
	}
}

func TestDrainRefusesNewStartsOnly(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	a := session(t, s, "host-a")
	ctx := testCtx(t)
	if _, err := cli.Put(ctx, s.keys.Drain("host-a"), encode(Drain{Since: time.Now(), By: "test"})); err != nil {
		t.Fatal(err)
	}
	c := vm("66666666-6666-6666-6666-666666666666", "web2")
	var held *HeldError
	if _, err := s.Claim(ctx, a, c); !errors.As(err, &held) || !strings.Contains(err.Error(), "draining") {
		t.Fatalf("start on a draining host: %v", err)
	}
	c.Start = false // adopting a running guest is not a start
	if _, err := s.Claim(ctx, a, c); err != nil {
		t.Fatalf("adopt on a draining host: %v", err)
	}
}

func TestUnfencedRecordRefusesElsewhere(t *testing.T) {
	cli := newEtcd(t)
	s := NewStore(cli, "")
	b := session(t, s, "host-b")
	ctx := testCtx(t)
	u := Unfenced{Since: time.Now(), Guests: []UnfencedGuest{{UUID: "77777777-7777-7777-7777-777777777777", Name: "mail", Disks: []string{"rbd/p/mail"}}}}
	if _, err := cli.Put(ctx, s.keys.Unfenced("host-a"), encode(u)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Claim{vm("77777777-7777-7777-7777-777777777777", "mail"), vm("88888888-8888-8888-8888-888888888888", "mail-copy", "rbd/p/mail")} {
		if _, err := s.Claim(ctx, b, c); err == nil || !strings.Contains(err.Error(), "may still") {
			t.Errorf("claim of %s next to an unfenced record: %v", c.Name, err)
		}
	}
}

// An etcd that accepts connections but never answers must not hold a claim
// past its deadline.
func TestClaimAgainstSilentEtcd(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // hold it open, say nothing
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	cli, err := Dial(EtcdConfig{Endpoints: []string{"http://" + ln.Addr().String()}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s := NewStore(cli, "")
	const deadline = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	_, err = s.Claim(ctx, Holder{Host: "host-a", Lease: 1}, vm("99999999-9999-9999-9999-999999999999", "x"))
	took := time.Since(start)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	// The safety bound: the call returns at its deadline, not later.
	if took > deadline+250*time.Millisecond {
		t.Fatalf("claim took %v against a silent etcd, deadline %v", took, deadline)
	}
	t.Logf("refused after %v: %v", took, err)
}

func ExampleStore_Claim() {
	// Against a real cluster: cli, _ := Dial(EtcdConfig{Endpoints: …})
	var held *HeldError = &HeldError{
		Key:  "/virtlease/domains/11111111-1111-1111-1111-111111111111",
		Want: "web1",
		Held: Record{Host: "host-a", UUID: "11111111-1111-1111-1111-111111111111", Name: "web1",
			Since: time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)},
	}
	fmt.Println(held)
	// Output: domain web1 (11111111-1111-1111-1111-111111111111) is running on host host-a since 2026-11-25T13:00:00Z; refusing to start it here
}
