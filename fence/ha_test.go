package fence

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/tests/v3/framework/integration"

	"github.com/virtlease/virtlease/lease"
)

func TestRestartOrder(t *testing.T) {
	live := []string{"host-a", "host-b", "host-c"}
	tests := []struct {
		name       string
		candidates []string
		live       []string
		want       []string
	}{
		{"hosts= order, dead ones left out", []string{"host-c", "host-x", "host-a"}, live, []string{"host-c", "host-a"}},
		{"hosts= none alive", []string{"host-x"}, live, nil},
		{"no live host", nil, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := restartOrder("u", tc.candidates, tc.live); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Rendezvous: every host computes the same order, and first choices
	// spread over the hosts.
	first := map[string]int{}
	for i := range 300 {
		u := fmt.Sprintf("uuid-%d", i)
		o := restartOrder(u, nil, live)
		if !slices.Equal(o, restartOrder(u, nil, []string{"host-c", "host-a", "host-b"})) {
			t.Fatalf("order depends on the input order: %v", o)
		}
		first[o[0]]++
	}
	for _, h := range live {
		if first[h] < 60 {
			t.Errorf("host %s is first choice for only %d of 300 domains: %v", h, first[h], first)
		}
	}
	// And the second choices: a lost host's guests spread over the
	// survivors, not all onto one.
	pairs := map[[2]string]int{}
	for i := range 600 {
		o := restartOrder(fmt.Sprintf("5d0e1a5e-0000-4000-8000-%012x", i), nil, live)
		pairs[[2]string{o[0], o[1]}]++
	}
	for _, a := range live {
		for _, b := range live {
			if a != b && pairs[[2]string{a, b}] < 50 {
				t.Errorf("%s is second choice after %s for only %d of 600 domains: %v", b, a, pairs[[2]string{a, b}], pairs)
			}
		}
	}
}

// hookStarter starts a domain as libvirt would: its hook claims it.
type hookStarter struct {
	store *lease.Store
	h     lease.Holder
	fail  map[string]bool // UUIDs whose start fails here (e.g. not defined)
	mu    *sync.Mutex
	runs  map[string][]string // uuid → hosts that started it
	// defined: domains defined here by Define (ha.define_missing)
	defined map[string]bool
	// crashed: domains libvirt reports shut off by a crash
	crashed map[string]bool
}

func (s *hookStarter) Crashed(_ context.Context, uuid string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crashed[uuid], nil
}

func (s *hookStarter) Define(_ context.Context, xml string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.defined == nil {
		s.defined = map[string]bool{}
	}
	s.defined[xml] = true // the tests record the UUID as the "XML"
	return nil
}

func (s *hookStarter) Start(ctx context.Context, uuid string) error {
	s.mu.Lock()
	defined := s.defined[uuid]
	s.mu.Unlock()
	if s.fail[uuid] && !defined {
		return fmt.Errorf("fence: cannot start domain %s: %w", uuid, ErrNoDomain)
	}
	in := &lease.Intent{Want: lease.WantRunning, Name: uuid}
	if _, err := s.store.Claim(ctx, s.h, lease.Claim{UUID: uuid, Name: uuid, Start: true, Intent: in}); err != nil {
		return err
	}
	s.mu.Lock()
	s.runs[uuid] = append(s.runs[uuid], s.h.Host)
	s.mu.Unlock()
	return nil
}

func TestHARestart(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sess := func(host string) lease.Holder { return testSession(t, store, host) }
	a, b, c := sess("host-a"), sess("host-b"), sess("host-c")
	ha := func(uuid string, hosts ...string) {
		in := &lease.Intent{Want: lease.WantRunning, Name: uuid, Candidates: hosts}
		if _, err := store.Claim(ctx, a, lease.Claim{UUID: uuid, Name: uuid, Start: true, Intent: in}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		ha(fmt.Sprintf("ha-%d", i))
	}
	ha("pref-c", "host-c", "host-b")
	ha("undefined-on-b", "host-b", "host-c")
	ha("nowhere", "host-x")
	ha("stopped")
	if _, err := store.Release(ctx, a, "stopped", nil, &lease.Intent{Want: lease.WantStopped, Name: "stopped"}); err != nil {
		t.Fatal(err)
	}
	// A protected, non-HA guest: never restarted.
	if _, err := store.Claim(ctx, a, lease.Claim{UUID: "plain", Name: "plain", Start: true}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	runs := map[string][]string{}
	opts := func(h lease.Holder, fail map[string]bool) HAOptions {
		return HAOptions{Store: store, Starter: &hookStarter{store: store, h: h, fail: fail, mu: &mu, runs: runs},
			Interval: 50 * time.Millisecond, Step: 300 * time.Millisecond, Settle: time.Millisecond}
	}
	for _, x := range []struct {
		h    lease.Holder
		fail map[string]bool
	}{{b, map[string]bool{"undefined-on-b": true}}, {c, nil}} {
		w := New(Options{Config: testConfig, Host: x.h.Host, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		w.active.Store(&x.h)
		go w.restarter(ctx, opts(x.h, x.fail), 0)
	}
	// host-a is lost: its session ends, its keys go, intents stay running.
	if err := store.Revoke(ctx, a.Lease); err != nil {
		t.Fatal(err)
	}
	want := []string{"ha-0", "ha-1", "ha-2", "ha-3", "ha-4", "pref-c", "undefined-on-b"}
	waitUntil(t, "every HA guest restarted", 15*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, u := range want {
			if len(runs[u]) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // let any duplicate attempt happen
	mu.Lock()
	defer mu.Unlock()
	spread := map[string]int{}
	for _, u := range want {
		if len(runs[u]) != 1 {
			t.Errorf("%s started %d times (%v), want exactly once", u, len(runs[u]), runs[u])
		}
		spread[runs[u][0]]++
	}
	if runs["pref-c"][0] != "host-c" {
		t.Errorf("pref-c (hosts=host-c,host-b) restarted on %s", runs["pref-c"][0])
	}
	if runs["undefined-on-b"][0] != "host-c" {
		t.Errorf("undefined-on-b should fall to the next candidate host-c, ran on %v", runs["undefined-on-b"])
	}
	if spread["host-b"] == 0 || spread["host-c"] == 0 {
		t.Errorf("restarts not spread over the candidates: %v", spread)
	}
	for _, u := range []string{"stopped", "plain", "nowhere"} {
		if len(runs[u]) != 0 {
			t.Errorf("%s restarted on %v: it must not be", u, runs[u])
		}
	}
	in, _ := store.Snapshot(ctx)
	if got := in.Intents["undefined-on-b"]; got.Restarts != 2 || got.Want != lease.WantRunning {
		t.Errorf("undefined-on-b intent %+v: want running with 2 restarts counted (one failed, one done)", got)
	}
}

func TestHAGivesUpAfterMaxRestarts(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := testSession(t, store, "host-b")
	if _, err := clus.Client(0).Put(ctx, store.Keys().Intent("flaky"), `{"want":"running","name":"flaky","restarts":0,"since":"2026-11-25T00:00:00Z"}`); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	w := New(Options{Config: testConfig, Host: "host-b", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.active.Store(&b)
	go w.restarter(ctx, HAOptions{Store: store, Interval: 20 * time.Millisecond, Step: 10 * time.Millisecond, Settle: time.Millisecond, MaxRestarts: 3,
		Starter: &hookStarter{store: store, h: b, fail: map[string]bool{"flaky": true}, mu: &mu, runs: map[string][]string{}}}, 0)
	waitUntil(t, "intent failed", 10*time.Second, func() bool {
		snap, _ := store.Snapshot(ctx)
		return snap.Intents["flaky"].Want == lease.WantFailed
	})
	snap, _ := store.Snapshot(ctx)
	if in := snap.Intents["flaky"]; in.Restarts != 3 {
		t.Fatalf("failed after %d restarts, want 3: %+v", in.Restarts, in)
	}
	if err := store.ResetIntent(ctx, "flaky", false); err != nil {
		t.Fatal(err)
	}
	snap, _ = store.Snapshot(ctx)
	if in := snap.Intents["flaky"]; in.Want != lease.WantRunning || in.Restarts != 0 {
		t.Fatalf("after reset: %+v", in)
	}
}

// With ha.define_missing a candidate that lacks the domain defines it from
// the XML recorded with the intent and starts it; without, it passes.
func TestHADefineMissing(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := testSession(t, store, "host-b")
	intent := `{"want":"running","name":"lonely","restarts":0,"since":"2026-11-25T00:00:00Z","xml":"lonely"}`
	if _, err := clus.Client(0).Put(ctx, store.Keys().Intent("lonely"), intent); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runs := map[string][]string{}
	w := New(Options{Config: testConfig, Host: "host-b", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.active.Store(&b)
	go w.restarter(ctx, HAOptions{Store: store, Interval: 20 * time.Millisecond, Step: 10 * time.Millisecond, Settle: time.Millisecond, DefineMissing: true,
		Starter: &hookStarter{store: store, h: b, fail: map[string]bool{"lonely": true}, mu: &mu, runs: runs}}, 0)
	waitUntil(t, "lonely defined and started on host-b", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(runs["lonely"]) == 1
	})
}

// TestHARevivesCrashedGuest: the hook recorded each stop as clean (it cannot
// tell); where libvirt says the QEMU crashed, the watchdog sets that intent
// running again and the guest is restarted once; a destroy, a shutdown and
// an intent changed since stay stopped.
func TestHARevivesCrashedGuest(t *testing.T) {
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	defer clus.Terminate(t)
	store := lease.NewStore(clus.Client(0), "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sess := func(host string) lease.Holder { return testSession(t, store, host) }
	a, b := sess("host-a"), sess("host-b")
	stoppedAt := time.Now().UTC().Truncate(time.Second)
	dir := t.TempDir()
	// uuid → crashed per libvirt, and who wrote the stopped intent.
	guests := []struct {
		uuid      string
		crashed   bool
		stoppedBy string
	}{
		{"crashed", true, "host-a"},
		{"destroyed", false, "host-a"},
		{"crashed-then-stopped-elsewhere", true, "host-b"},
	}
	for _, g := range guests {
		in := &lease.Intent{Want: lease.WantRunning, Name: g.uuid, Candidates: []string{"host-a", "host-b"}}
		if _, err := store.Claim(ctx, a, lease.Claim{UUID: g.uuid, Name: g.uuid, Start: true, Intent: in}); err != nil {
			t.Fatal(err)
		}
		stop := &lease.Intent{Want: lease.WantStopped, Name: g.uuid, Candidates: in.Candidates, Reason: lease.StoppedBy(g.stoppedBy), Since: stoppedAt}
		if _, err := store.Release(ctx, a, g.uuid, nil, stop); err != nil {
			t.Fatal(err)
		}
		// As the hook leaves it after a clean stop here.
		os.MkdirAll(filepath.Join(dir, "stopped"), 0o755)
		os.WriteFile(filepath.Join(dir, "stopped", g.uuid), []byte(stoppedAt.Format(time.RFC3339)+"\n"), 0o644)
	}
	// The crash happened long ago (a long fence, an outage): still a crash.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(dir, "stopped", "crashed"), old, old)
	var mu sync.Mutex
	runs := map[string][]string{}
	crashed := map[string]bool{"crashed": true, "crashed-then-stopped-elsewhere": true}
	for _, h := range []lease.Holder{a, b} {
		w := New(Options{Config: testConfig, Host: h.Host, StateDir: dir, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if h.Host == "host-b" {
			w.o.StateDir = t.TempDir() // markers are host-a's
		}
		w.active.Store(&h)
		go w.restarter(ctx, HAOptions{Store: store, Starter: &hookStarter{store: store, h: h, mu: &mu, runs: runs, crashed: crashed},
			Interval: 50 * time.Millisecond, Step: 300 * time.Millisecond, Settle: time.Millisecond}, 0)
	}
	waitUntil(t, "the crashed guest restarted", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(runs["crashed"]) > 0
	})
	time.Sleep(time.Second) // let any wrong or duplicate start happen
	mu.Lock()
	defer mu.Unlock()
	if got := runs["crashed"]; len(got) != 1 || got[0] != "host-a" {
		t.Errorf("crashed guest started on %v, want once on host-a (its first candidate)", got)
	}
	for _, u := range []string{"destroyed", "crashed-then-stopped-elsewhere"} {
		if len(runs[u]) != 0 {
			t.Errorf("%s restarted on %v: its stop stands", u, runs[u])
		}
	}
	for _, g := range guests {
		if _, err := os.Stat(filepath.Join(dir, "stopped", g.uuid)); err == nil {
			t.Errorf("marker of %s left after libvirt answered", g.uuid)
		}
	}
}

// fakeHA is the etcd side of HA restarts for unit tests: restartable
// domains that run nowhere until one host starts them.
type fakeHA struct {
	mu      sync.Mutex
	live    []string
	domains []string
	ranBy   map[string]string // uuid → host that started it
	begun   map[string]int    // uuid → BeginRestart calls that counted
	reason  map[string]string // uuid → the intent's Reason ("" for most)
}

func (f *fakeHA) HAView(context.Context) (lease.HAView, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := lease.HAView{Live: slices.Clone(f.live)}
	for _, u := range f.domains {
		if f.ranBy[u] == "" {
			v.Restartable = append(v.Restartable, lease.Restartable{UUID: u, Intent: lease.Intent{Want: lease.WantRunning, Name: u, Reason: f.reason[u]}, Rev: 1})
		}
	}
	return v, nil
}

func (f *fakeHA) BeginRestart(_ context.Context, _ lease.Holder, r lease.Restartable, _ int, _ time.Duration) (bool, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ranBy[r.UUID] != "" {
		return false, false, nil
	}
	f.begun[r.UUID]++
	return true, false, nil
}

func (f *fakeHA) NoteRestartFailure(context.Context, string, string) error { return nil }
func (f *fakeHA) MarkCrashed(context.Context, string, string, time.Time) (bool, error) {
	return false, nil
}

// fakeHAStarter starts a domain at once (its claim lands).
type fakeHAStarter struct {
	f    *fakeHA
	host string
}

func (s fakeHAStarter) Start(_ context.Context, uuid string) error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.f.ranBy[uuid] = s.host
	return nil
}
func (fakeHAStarter) Define(context.Context, string) error          { return nil }
func (fakeHAStarter) Crashed(context.Context, string) (bool, error) { return false, nil }
func (f *fakeHA) count(host string) (n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.ranBy {
		if h == host {
			n++
		}
	}
	return n
}

// After a whole-cluster outage the hosts come back one by one. The first
// one back must not restart every HA guest (it is rank 0 among itself
// alone): it waits Settle, restarts at most MaxStarts per round, and a host
// back a few seconds later takes the guests whose first choice it is.
// On a fake clock, one round per second.
func TestHAAfterWholeClusterOutage(t *testing.T) {
	f := &fakeHA{live: []string{"host-a"}, ranBy: map[string]string{}, begun: map[string]int{}}
	for i := range 12 {
		f.domains = append(f.domains, fmt.Sprintf("uuid-%d", i))
	}
	o := HAOptions{Store: f, Interval: time.Second, Step: 3 * time.Second, Settle: 10 * time.Second, MaxStarts: 2}.withDefaults()
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	type host struct {
		w  *Watchdog
		h  lease.Holder
		st *haState
		o  HAOptions
	}
	mk := func(name string) *host {
		oo := o
		oo.Starter = fakeHAStarter{f: f, host: name}
		return &host{w: New(Options{Config: testConfig, Host: name, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}),
			h: lease.Holder{Host: name, Lease: 1}, st: newHAState(clock), o: oo}
	}
	a, b := mk("host-a"), mk("host-b")
	firstB := 0
	for _, u := range f.domains {
		if restartOrder(u, nil, []string{"host-a", "host-b"})[0] == "host-b" {
			firstB++
		}
	}
	for sec := 0; sec <= 40; sec++ {
		now = t0.Add(time.Duration(sec) * time.Second)
		if sec == 5 {
			f.mu.Lock()
			f.live = []string{"host-a", "host-b"}
			f.mu.Unlock()
		}
		before := f.count("host-a")
		a.w.restartOnce(context.Background(), a.o, a.h, a.st)
		if got := f.count("host-a") - before; got > o.MaxStarts {
			t.Fatalf("t=%ds: host-a began %d restarts in one round, max %d", sec, got, o.MaxStarts)
		}
		if sec >= 5 {
			b.w.restartOnce(context.Background(), b.o, b.h, b.st)
		}
		if sec < 10 && f.count("host-a") > 0 {
			t.Fatalf("t=%ds: the first host back restarted %d guests before settling", sec, f.count("host-a"))
		}
	}
	if n := len(f.ranBy); n != len(f.domains) {
		t.Fatalf("%d of %d guests restarted", n, len(f.domains))
	}
	for u, n := range f.begun {
		if n != 1 {
			t.Errorf("%s: %d restarts counted", u, n)
		}
	}
	if got := f.count("host-b"); got != firstB {
		t.Errorf("host-b, back 5 s after host-a, restarted %d guests; it is the first choice of %d", got, firstB)
	}
}

// A restart another host has just counted (its claim not landed yet) is
// not counted again by a host that sees the domain still restartable: it
// waits one Step for the claim.
func TestHADoesNotCountAnotherHostsRestartAgain(t *testing.T) {
	f := &fakeHA{live: []string{"host-a", "host-b"}, ranBy: map[string]string{}, begun: map[string]int{}}
	// A domain whose first choice is host-a.
	for i := 0; len(f.domains) == 0; i++ {
		if u := fmt.Sprintf("uuid-%d", i); restartOrder(u, nil, f.live)[0] == "host-a" {
			f.domains = append(f.domains, u)
		}
	}
	view := func(context.Context) (lease.HAView, error) {
		return lease.HAView{Live: f.live, Restartable: []lease.Restartable{{UUID: f.domains[0], Rev: 7,
			Intent: lease.Intent{Want: lease.WantRunning, Name: "vm", Restarts: 1, Reason: "restarting on host-b"}}}}, nil
	}
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	st := newHAState(func() time.Time { return now })
	st.holder = lease.Holder{Host: "host-a", Lease: 1}
	st.joined["host-a"] = now.Add(-time.Hour)
	st.joined["host-b"] = now.Add(-time.Hour)
	o := HAOptions{Store: viewStore{f, view}, Starter: fakeHAStarter{f: f, host: "host-a"}, Step: 3 * time.Second, Settle: time.Second}.withDefaults()
	w := New(Options{Config: testConfig, Host: "host-a", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for _, dt := range []time.Duration{0, time.Second, time.Second} {
		now = now.Add(dt)
		w.restartOnce(context.Background(), o, st.holder, st)
	}
	if n := f.begun[f.domains[0]]; n != 0 {
		t.Fatalf("counted the restart host-b has just begun again (%d), before its claim could land", n)
	}
	now = now.Add(2 * time.Second)
	w.restartOnce(context.Background(), o, st.holder, st)
	if n := f.begun[f.domains[0]]; n != 1 {
		t.Fatalf("after one Step with no claim from host-b, host-a began %d restarts, want 1", n)
	}
}

// viewStore is fakeHA with a fixed view.
type viewStore struct {
	*fakeHA
	view func(context.Context) (lease.HAView, error)
}

func (v viewStore) HAView(ctx context.Context) (lease.HAView, error) { return v.view(ctx) }

// A watchdog restarted while its session lives (an upgrade, a crash)
// resumes that session: it is not new, and nothing settles, so a guest
// that crashed meanwhile is restarted at once.
func TestHAResumedSessionDoesNotSettle(t *testing.T) {
	f := &fakeHA{live: []string{"host-a"}, ranBy: map[string]string{}, begun: map[string]int{}, domains: []string{"uuid-0"}}
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	st := newHAState(func() time.Time { return now })
	st.resumed = 42
	o := HAOptions{Store: f, Starter: fakeHAStarter{f: f, host: "host-a"}, Settle: 10 * time.Second}.withDefaults()
	w := New(Options{Config: testConfig, Host: "host-a", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.restartOnce(context.Background(), o, lease.Holder{Host: "host-a", Lease: 42}, st)
	if f.ranBy["uuid-0"] != "host-a" {
		t.Fatal("a resumed session waited to settle")
	}
}

// A host back from a partition, with the cluster up all along, is not
// waited for: a guest whose first choice it is comes back on the next
// candidate one Step after the restart became due, not Settle later.
func TestHALateJoinerIsNotWaitedFor(t *testing.T) {
	f := &fakeHA{live: []string{"host-a", "host-b"}, ranBy: map[string]string{}, begun: map[string]int{}}
	for i := 0; len(f.domains) == 0; i++ {
		u := fmt.Sprintf("uuid-%d", i)
		if o := restartOrder(u, nil, []string{"host-a", "host-b", "host-c"}); o[0] == "host-c" && o[1] == "host-a" {
			f.domains = append(f.domains, u)
		}
	}
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	st := newHAState(func() time.Time { return now })
	st.resumed = 1 // up all along
	o := HAOptions{Store: f, Starter: fakeHAStarter{f: f, host: "host-a"}, Step: 3 * time.Second, Settle: 10 * time.Second}.withDefaults()
	w := New(Options{Config: testConfig, Host: "host-a", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h := lease.Holder{Host: "host-a", Lease: 1}
	f.mu.Lock()
	ran := f.ranBy
	f.ranBy = map[string]string{f.domains[0]: "host-x"} // running elsewhere
	f.mu.Unlock()
	for sec := 0; sec < 5; sec++ {
		w.restartOnce(context.Background(), o, h, st)
		now = now.Add(time.Second)
	}
	// host-c comes back from a partition as the guest's host is lost.
	f.mu.Lock()
	f.live, f.ranBy = []string{"host-a", "host-b", "host-c"}, ran
	f.mu.Unlock()
	for sec := 0; sec <= 4; sec++ {
		w.restartOnce(context.Background(), o, h, st)
		now = now.Add(time.Second)
	}
	if f.ranBy[f.domains[0]] != "host-a" {
		t.Fatalf("4 s after the guest became restartable, host-a (second choice after host-c, back from a partition) had not started it: %v", f.ranBy)
	}
}

// A guest whose QEMU crashed while its host's watchdog held a session is
// no outage's guest: it comes back at once, even on a host whose watchdog
// started (with a new session) moments before, while a guest whose host
// was lost still waits out the settle period.
func TestHACrashedGuestDoesNotSettle(t *testing.T) {
	f := &fakeHA{live: []string{"host-a"}, ranBy: map[string]string{}, begun: map[string]int{},
		domains: []string{"uuid-crashed", "uuid-lost"}, reason: map[string]string{"uuid-crashed": lease.CrashedOn("host-a")}}
	o := HAOptions{Store: f, Starter: fakeHAStarter{f: f, host: "host-a"}, Interval: time.Second, Step: 3 * time.Second,
		Settle: 10 * time.Second, MaxStarts: 2}.withDefaults()
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	now := t0
	w := New(Options{Config: testConfig, Host: "host-a", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	st := newHAState(func() time.Time { return now })
	h := lease.Holder{Host: "host-a", Lease: 1}
	w.restartOnce(context.Background(), o, h, st)
	if f.ranBy["uuid-crashed"] != "host-a" {
		t.Fatalf("the crashed guest was not restarted in the first round: %v", f.ranBy)
	}
	if f.ranBy["uuid-lost"] != "" {
		t.Fatalf("the lost host's guest was restarted before settling: %v", f.ranBy)
	}
	now = t0.Add(o.Settle)
	w.restartOnce(context.Background(), o, h, st)
	if f.ranBy["uuid-lost"] != "host-a" {
		t.Fatalf("the lost host's guest was not restarted after settling: %v", f.ranBy)
	}
}
