package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// fakeClaims records what the hook asked of etcd and answers as told.
type fakeClaims struct {
	claimErr    error
	releaseErr  error
	checkErr    error
	checks      []lease.Claim
	claims      []lease.Claim
	prior       *lease.Intent // the intent a claim finds
	releases    []*lease.Intent
	releaseNone bool                      // nothing of ours is left to release
	onClaim     func()                    // runs while the claim is "in flight"
	claimHangs  bool                      // the claim waits for its context to end
	claimFn     func(c lease.Claim) error // when set, answers instead of claimErr
	// migration
	migrateFrom string
	migrateErr  error
	handOff     bool
	dropped     int
	// runs
	claimRun   *lease.Run // the run a claim records
	lastRun    *lease.Run // etcd's record
	lastRunErr error
}

func (f *fakeClaims) Claim(ctx context.Context, _ lease.Holder, c lease.Claim) (lease.ClaimResult, error) {
	f.claims = append(f.claims, c)
	if f.onClaim != nil {
		f.onClaim()
	}
	if f.claimHangs {
		<-ctx.Done()
		return lease.ClaimResult{}, fmt.Errorf("claiming: %w (no answer before the deadline)", lease.ErrUnavailable)
	}
	if f.claimFn != nil {
		if err := f.claimFn(c); err != nil {
			return lease.ClaimResult{}, err
		}
		return lease.ClaimResult{Run: f.claimRun, Prior: f.prior}, nil
	}
	if f.claimErr != nil {
		return lease.ClaimResult{}, f.claimErr
	}
	return lease.ClaimResult{Run: f.claimRun, Prior: f.prior}, nil
}

func (f *fakeClaims) LastRun(context.Context, string) (*lease.Run, error) {
	return f.lastRun, f.lastRunErr
}

func (f *fakeClaims) Release(_ context.Context, _ lease.Holder, _ string, _ []string, in *lease.Intent) (int, error) {
	f.releases = append(f.releases, in)
	if f.releaseNone {
		return 0, f.releaseErr
	}
	return 1, f.releaseErr
}

func (f *fakeClaims) Check(_ context.Context, _ lease.Holder, c lease.Claim) error {
	f.checks = append(f.checks, c)
	return f.checkErr
}

func (f *fakeClaims) RecordMigration(context.Context, lease.Holder, string, string, []string) (string, int64, error) {
	return f.migrateFrom, 7, f.migrateErr
}

func (f *fakeClaims) HandOff(context.Context, lease.Holder, string, string, []string) (bool, error) {
	return f.handOff, nil
}

func (f *fakeClaims) DropMigration(context.Context, lease.Holder, string) error {
	f.dropped++
	return nil
}

const bootID = "boot-1"

// env is one host's state directory with a session file in a given state.
type env struct {
	dir      string
	claims   *fakeClaims
	dials    int
	dialErr  error
	now      time.Duration
	noSess   bool
	sessFile lease.Session
}

func newEnv(t *testing.T) *env {
	e := &env{dir: t.TempDir(), claims: &fakeClaims{}, now: 100 * time.Second}
	e.sessFile = lease.Session{Host: "host-a", Lease: 0x1234, Boot: bootID, Deadline: int64(110 * time.Second), State: lease.SessionOK}
	return e
}

func (e *env) hook(t *testing.T) *Hook {
	if !e.noSess {
		if err := lease.WriteSession(filepath.Join(e.dir, "session"), e.sessFile); err != nil {
			t.Fatal(err)
		}
	}
	return &Hook{
		Config: Config{Host: "host-a", Margin: 3 * time.Second, StateDir: e.dir, RunsDir: filepath.Join(e.dir, "runs"), SaveDir: filepath.Join(e.dir, "save")},
		Connect: func(context.Context) (Claims, error) {
			e.dials++
			if e.dialErr != nil {
				return nil, e.dialErr
			}
			return e.claims, nil
		},
		BootNow: func() time.Duration { return e.now },
		BootID:  func() (string, error) { return bootID, nil },
	}
}

func fixture(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "domains", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func held() error {
	return &lease.HeldError{Key: "/virtlease/domains/x", Want: "vm", Held: lease.Record{Host: "host-b", Name: "vm", UUID: "x"}}
}

func TestPrepare(t *testing.T) {
	unavailable := fmt.Errorf("claiming: %w", lease.ErrUnavailable)
	tests := []struct {
		name      string
		xml       string
		setup     func(e *env)
		wantCode  int
		wantMsg   string
		wantClaim bool
		wantMark  bool // refused marker left for the release calls
	}{
		{"claimed", "rbd-auth-hosts.xml", nil, ExitOK, "", true, false},
		{"held elsewhere", "rbd-auth-hosts.xml", func(e *env) { e.claims.claimErr = held() }, ExitRefused, "is running on host host-b", true, true},
		{"etcd unavailable", "rbd-auth-hosts.xml", func(e *env) { e.claims.claimErr = unavailable }, ExitUnavailable, "etcd did not answer", true, true},
		{"fence point passes during the claim", "rbd-auth-hosts.xml", func(e *env) {
			e.now = 106*time.Second + 990*time.Millisecond // 10ms before deadline minus margin
			e.claims.claimHangs = true
		}, ExitRefused, "fence point", true, true},
		{"no session file", "rbd-auth-hosts.xml", func(e *env) { e.noSess = true }, ExitRefused, "is virtlease-watchdog running?", false, true},
		{"session past fence point", "rbd-auth-hosts.xml", func(e *env) { e.now = 107 * time.Second }, ExitRefused, "too old", false, true},
		{"session fencing", "rbd-auth-hosts.xml", func(e *env) { e.sessFile.State = lease.SessionFencing }, ExitRefused, "fencing", false, true},
		{"watchdog stopped", "rbd-auth-hosts.xml", func(e *env) { e.sessFile.State = lease.SessionStopped }, ExitRefused, "virtlease-watchdog", false, true},
		{"session of another boot", "rbd-auth-hosts.xml", func(e *env) { e.sessFile.Boot = "boot-0" }, ExitRefused, "earlier boot", false, true},
		{"session of another host name", "rbd-auth-hosts.xml", func(e *env) { e.sessFile.Host = "host-z" }, ExitRefused, "host-z", false, true},
		{"host shutting down", "rbd-auth-hosts.xml", func(e *env) {
			os.WriteFile(filepath.Join(e.dir, "shutdown"), []byte("failover\n"), 0o644)
		}, ExitRefused, "shutting down", false, true},
		{"bad XML", "", nil, ExitUsage, "domain XML", false, false},
		{"bogus mode", "mode-bogus.xml", nil, ExitUsage, "mode", false, false},
		{"opt-out, nobody holds it", "mode-off.xml", func(e *env) { e.noSess = true }, ExitOK, "", false, false},
		{"opt-out, held elsewhere", "mode-off.xml", func(e *env) { e.claims.checkErr = held() }, ExitRefused, "host-b", false, false},
		{"opt-out, etcd down at login: refused, fail closed", "mode-off.xml", func(e *env) { e.dialErr = unavailable }, ExitUnavailable, "etcd did not answer", false, false},
		{"opt-out, etcd down at the check: refused, fail closed", "mode-off.xml", func(e *env) { e.claims.checkErr = unavailable }, ExitUnavailable, "etcd did not answer", false, false},
		{"opt-out, bad etcd config", "mode-off.xml", func(e *env) { e.dialErr = errors.New("reading password file: no such file") }, ExitUsage, "password", false, false},
		{"login timed out: exit 3", "rbd-auth-hosts.xml", func(e *env) { e.dialErr = unavailable }, ExitUnavailable, "etcd did not answer", false, true},
		{"bad etcd credentials: exit 2", "rbd-auth-hosts.xml", func(e *env) { e.dialErr = errors.New("authentication failed") }, ExitUsage, "authentication failed", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			var xml []byte
			if tc.xml != "" {
				xml = fixture(t, tc.xml)
			} else {
				xml = []byte("<domain><name>broken")
			}
			err := e.hook(t).Run(context.Background(), []string{"vm", "prepare", "begin", "-"}, bytes.NewReader(xml))
			if got := Code(err); got != tc.wantCode {
				t.Fatalf("exit %d (%v), want %d", got, err, tc.wantCode)
			}
			if tc.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tc.wantMsg)) {
				t.Errorf("message %v lacks %q", err, tc.wantMsg)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("message is not one line: %q", err)
			}
			if got := len(e.claims.claims) > 0; got != tc.wantClaim {
				t.Errorf("claimed=%v, want %v", got, tc.wantClaim)
			}
			marks, _ := filepath.Glob(filepath.Join(e.dir, "refused", "*"))
			if got := len(marks) > 0; got != tc.wantMark {
				t.Errorf("refused marker=%v, want %v", got, tc.wantMark)
			}
			// Each refusal is counted once, under its reason, for the
			// watchdog's virtlease_start_refusals_total.
			counts, _ := filepath.Glob(filepath.Join(e.dir, "refusals", "*"))
			if want := map[string]string{"held elsewhere": "held", "etcd unavailable": "etcd_unavailable",
				"fence point passes during the claim": "fence_point", "no session file": "no_session",
				"host shutting down": "shutting_down", "login timed out: exit 3": "etcd_unavailable"}[tc.name]; want != "" {
				if fi, err := os.Stat(filepath.Join(e.dir, "refusals", want)); err != nil || fi.Size() != 1 || len(counts) != 1 {
					t.Errorf("refusal counts %v, want one under %s", counts, want)
				}
			}
			if !tc.wantMark && len(counts) != 0 {
				t.Errorf("refusal counted without a refusal: %v", counts)
			}
		})
	}
}

func TestRefusalReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w", lease.ErrUnavailable), "etcd_unavailable"},
		{fmt.Errorf("x: %w", lease.ErrNoLiveSession), "no_session"},
		{held(), "held"},
		{&lease.HeldError{Key: "/virtlease/drain/host-a", Why: "host host-a is draining"}, "draining"},
		{&lease.HeldError{Key: "/virtlease/unfenced/host-b", Why: "host-b left it running"}, "unfenced"},
		{errors.New("authentication failed"), "other"},
	} {
		if got := refusalReason(tc.err); got != tc.want {
			t.Errorf("refusalReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// After a refused prepare libvirt calls stopped end and release end: they
// must answer from the marker, without dialing etcd (which may be down and
// cost a deadline each), and never release anything.
func TestReleaseAfterRefusedPrepareIsLocal(t *testing.T) {
	e := newEnv(t)
	e.claims.claimErr = fmt.Errorf("x: %w", lease.ErrUnavailable)
	h := e.hook(t)
	xml := fixture(t, "rbd-auth-hosts.xml")
	if err := h.Run(context.Background(), []string{"vm", "prepare", "begin", "-"}, bytes.NewReader(xml)); Code(err) != ExitUnavailable {
		t.Fatalf("prepare: %v", err)
	}
	dials := e.dials
	for _, op := range []string{"stopped", "release"} {
		if err := h.Run(context.Background(), []string{"vm", op, "end", "-"}, bytes.NewReader(xml)); err != nil {
			t.Fatalf("%s end: %v", op, err)
		}
	}
	if e.dials != dials || len(e.claims.releases) != 0 {
		t.Fatalf("release after a refused prepare dialed etcd %d times and released %d times", e.dials-dials, len(e.claims.releases))
	}
	// The marker is consumed: the next stop of a real run releases.
	if err := h.Run(context.Background(), []string{"vm", "release", "end", "-"}, bytes.NewReader(xml)); err != nil || len(e.claims.releases) != 1 {
		t.Fatalf("release without marker: %v, %d releases", err, len(e.claims.releases))
	}
}

func TestReleaseNeverFails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(e *env)
	}{
		{"etcd down", func(e *env) { e.claims.releaseErr = lease.ErrUnavailable }},
		{"no session", func(e *env) { e.noSess = true }},
		{"dial fails", func(e *env) { e.dialErr = errors.New("boom") }},
		{"fencing: no etcd call at all", func(e *env) {
			e.sessFile.State = lease.SessionFencing
			e.dialErr = errors.New("must not dial while fencing")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.setup(e)
			for _, op := range []string{"stopped", "release"} {
				if err := e.hook(t).Run(context.Background(), []string{"vm", op, "end", "-"}, bytes.NewReader(fixture(t, "nbd.xml"))); err != nil {
					t.Errorf("%s end failed: %v", op, err)
				}
			}
		})
	}
}

func TestHAIntentOnStop(t *testing.T) {
	tests := []struct {
		name    string
		started bool
		killed  bool
		state   lease.SessionState
		want    lease.Want // "" = intent left alone
	}{
		{"clean stop", true, false, lease.SessionOK, lease.WantStopped},
		{"killed by the watchdog", true, true, lease.SessionOK, ""},
		{"stopped while fencing", true, false, lease.SessionFencing, ""},
		{"never started, no prepare seen here", false, false, lease.SessionOK, ""},
		// The watchdog is away (restarting, or in a rollout): the stop is
		// still the operator's. The intent lands only with the release of
		// our own domain key, so never once the session has expired.
		{"watchdog stopped", true, false, lease.SessionStopped, lease.WantStopped},
		{"watchdog stopped, record not written", true, false, lease.SessionOrphaned, lease.WantStopped},
	}
	t.Run("kill marker of an earlier run is cleared by the next start", func(t *testing.T) {
		e := newEnv(t)
		h := e.hook(t)
		xml := fixture(t, "mode-ha-hosts.xml")
		dom, _ := ParseDomain(xml)
		writeMarker(h.marker("killed", dom.UUID), "fence")
		for _, op := range [][]string{{"prepare", "begin"}, {"started", "begin"}, {"stopped", "end"}} {
			if err := h.Run(context.Background(), []string{"vm", op[0], op[1], "-"}, bytes.NewReader(xml)); err != nil {
				t.Fatal(err)
			}
		}
		if in := e.claims.releases[0]; in == nil || in.Want != lease.WantStopped {
			t.Fatalf("clean stop after a fenced run did not set the intent stopped: %+v", in)
		}
	})
	t.Run("host shutting down with on_shutdown failover", func(t *testing.T) {
		e := newEnv(t)
		h := e.hook(t)
		os.WriteFile(filepath.Join(e.dir, "shutdown"), []byte("failover\n"), 0o644)
		xml := fixture(t, "mode-ha-hosts.xml")
		h.Run(context.Background(), []string{"vm", "started", "begin", "-"}, bytes.NewReader(xml))
		h.Run(context.Background(), []string{"vm", "stopped", "end", "-"}, bytes.NewReader(xml))
		if len(e.claims.releases) != 1 || e.claims.releases[0] != nil {
			t.Fatalf("a stop during a failover shutdown set the intent: %+v", e.claims.releases)
		}
	})
	t.Run("session past its fence point: still the operator's stop", func(t *testing.T) {
		e := newEnv(t)
		e.now = 200 * time.Second
		h := e.hook(t)
		xml := fixture(t, "mode-ha-hosts.xml")
		h.Run(context.Background(), []string{"vm", "started", "begin", "-"}, bytes.NewReader(xml))
		h.Run(context.Background(), []string{"vm", "stopped", "end", "-"}, bytes.NewReader(xml))
		if len(e.claims.releases) != 1 || e.claims.releases[0] == nil || e.claims.releases[0].Want != lease.WantStopped {
			t.Fatalf("a stop near the fence point did not set the intent stopped: %+v", e.claims.releases)
		}
	})
	t.Run("session file of an earlier boot (libvirtd back after a host crash)", func(t *testing.T) {
		e := newEnv(t)
		e.sessFile.Boot = "boot-0"
		h := e.hook(t)
		xml := fixture(t, "mode-ha-hosts.xml")
		h.Run(context.Background(), []string{"vm", "started", "begin", "-"}, bytes.NewReader(xml))
		h.Run(context.Background(), []string{"vm", "stopped", "end", "-"}, bytes.NewReader(xml))
		if len(e.claims.releases) != 1 || e.claims.releases[0] != nil {
			t.Fatalf("a stop seen with a session of an earlier boot set the intent: %+v", e.claims.releases)
		}
	})
	// A start whose QEMU exits before started begin: its claim wrote want
	// running; the release puts back what was there, so a failed start
	// is not HA-restarted elsewhere, while a failed HA restart (the
	// intent was running) leaves it to the next candidate.
	for _, tc := range []struct {
		name  string
		prior *lease.Intent
		want  lease.Want
	}{
		{"failed first start", nil, lease.WantStopped},
		{"failed start of a stopped guest", &lease.Intent{Want: lease.WantStopped, Name: "vm", Reason: "stopped on host-b"}, lease.WantStopped},
		{"failed HA restart", &lease.Intent{Want: lease.WantRunning, Name: "vm", Restarts: 2}, lease.WantRunning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.claims.prior = tc.prior
			h := e.hook(t)
			xml := fixture(t, "mode-ha-hosts.xml")
			dom, _ := ParseDomain(xml)
			for _, op := range [][]string{{"prepare", "begin"}, {"stopped", "end"}, {"release", "end"}} {
				if err := h.Run(context.Background(), []string{"vm", op[0], op[1], "-"}, bytes.NewReader(xml)); err != nil {
					t.Fatal(err)
				}
			}
			if len(e.claims.releases) == 0 || e.claims.releases[0] == nil || e.claims.releases[0].Want != tc.want {
				t.Fatalf("release after a failed start wrote %+v, want %q", e.claims.releases, tc.want)
			}
			if tc.prior != nil && e.claims.releases[0].Restarts != tc.prior.Restarts {
				t.Errorf("prior intent not restored as it was: %+v", e.claims.releases[0])
			}
			if _, err := os.Stat(h.marker("stopped", dom.UUID)); err == nil {
				t.Error("a failed start left a clean-stop marker")
			}
			if _, err := os.Stat(h.marker("prior", dom.UUID)); err == nil {
				t.Error("prior marker left after the release")
			}
		})
	}
	t.Run("watchdog away past the TTL: the started marker stays for its return", func(t *testing.T) {
		e := newEnv(t)
		e.sessFile.State = lease.SessionStopped
		e.claims.releaseNone = true
		h := e.hook(t)
		xml := fixture(t, "mode-ha-hosts.xml")
		dom, _ := ParseDomain(xml)
		for _, op := range [][]string{{"started", "begin"}, {"stopped", "end"}, {"release", "end"}} {
			h.Run(context.Background(), []string{"vm", op[0], op[1], "-"}, bytes.NewReader(xml))
		}
		if _, err := os.Stat(h.marker("started", dom.UUID)); err != nil {
			t.Error("started marker gone: the returning watchdog cannot record the stop")
		}
		if _, err := os.Stat(h.marker("stopped", dom.UUID)); err == nil {
			t.Error("stopped marker for an intent that was not written")
		}
	})
	t.Run("a start that ran clears the prior intent", func(t *testing.T) {
		e := newEnv(t)
		h := e.hook(t)
		xml := fixture(t, "mode-ha-hosts.xml")
		for _, op := range [][]string{{"prepare", "begin"}, {"started", "begin"}, {"stopped", "end"}} {
			h.Run(context.Background(), []string{"vm", op[0], op[1], "-"}, bytes.NewReader(xml))
		}
		if in := e.claims.releases[0]; in == nil || in.Want != lease.WantStopped || in.Reason != lease.StoppedBy("host-a") {
			t.Fatalf("clean stop after a good start: %+v", in)
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.sessFile.State = tc.state
			h := e.hook(t)
			xml := fixture(t, "mode-ha-hosts.xml")
			dom, err := ParseDomain(xml)
			if err != nil {
				t.Fatal(err)
			}
			if tc.started {
				h.Run(context.Background(), []string{"vm", "started", "begin", "-"}, bytes.NewReader(xml))
			}
			if tc.killed {
				writeMarker(h.marker("killed", dom.UUID), "fence")
			}
			if err := h.Run(context.Background(), []string{"vm", "stopped", "end", "-"}, bytes.NewReader(xml)); err != nil {
				t.Fatal(err)
			}
			if tc.state == lease.SessionFencing {
				if len(e.claims.releases) != 0 {
					t.Fatalf("released while fencing: %+v", e.claims.releases)
				}
				return
			}
			if len(e.claims.releases) != 1 {
				t.Fatalf("%d releases", len(e.claims.releases))
			}
			in := e.claims.releases[0]
			switch {
			case tc.want == "" && in != nil:
				t.Errorf("intent set to %q, want it left alone", in.Want)
			case tc.want != "" && (in == nil || in.Want != tc.want):
				t.Errorf("intent %+v, want %q", in, tc.want)
			}
			// A clean stop leaves the watchdog a marker naming the intent
			// it wrote, in case libvirt says the QEMU crashed; the next
			// start removes it.
			b, err := os.ReadFile(h.marker("stopped", dom.UUID))
			if wantMark := tc.want == lease.WantStopped; (err == nil) != wantMark {
				t.Fatalf("stopped marker present=%v, want %v", err == nil, wantMark)
			}
			if err == nil {
				if got := strings.TrimSpace(string(b)); got != in.Since.Format(time.RFC3339) || in.Reason != lease.StoppedBy("host-a") {
					t.Errorf("stopped marker %q for intent %+v", got, in)
				}
				h.Run(context.Background(), []string{"vm", "started", "begin", "-"}, bytes.NewReader(xml))
				if _, err := os.Stat(h.marker("stopped", dom.UUID)); err == nil {
					t.Error("the next start left the stopped marker")
				}
			}
		})
	}
}

func TestReconnect(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(e *env)
		wantCode int
	}{
		{"mine or adopted", nil, ExitOK},
		{"held by another host: libvirt kills it", func(e *env) { e.claims.claimErr = held() }, ExitRefused},
		{"etcd unavailable: keep the guest", func(e *env) { e.claims.claimErr = lease.ErrUnavailable }, ExitOK},
		{"no session: keep the guest", func(e *env) { e.noSess = true }, ExitOK},
		{"fencing: the watchdog's job", func(e *env) { e.sessFile.State = lease.SessionFencing }, ExitOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			err := e.hook(t).Run(context.Background(), []string{"vm", "reconnect", "begin", "-"}, bytes.NewReader(fixture(t, "nbd.xml")))
			if Code(err) != tc.wantCode {
				t.Fatalf("exit %d (%v), want %d", Code(err), err, tc.wantCode)
			}
			for _, c := range e.claims.claims {
				if c.Start {
					t.Error("reconnect claimed as a new start (a draining host would refuse its running guests)")
				}
			}
		})
	}
}

func TestOtherOperations(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
	}{
		{[]string{"vm", "attach", "begin", "-"}, ExitOK},
		{[]string{"vm", "start", "begin", "-"}, ExitOK},
		{[]string{"vm", "prepare", "begin", "some new reason", "extra"}, ExitOK},
		{[]string{"vm", "prepare"}, ExitUsage},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			e := newEnv(t)
			err := e.hook(t).Run(context.Background(), tc.args, bytes.NewReader(fixture(t, "nbd.xml")))
			if Code(err) != tc.wantCode {
				t.Fatalf("exit %d (%v), want %d", Code(err), err, tc.wantCode)
			}
		})
	}
}

func TestMigration(t *testing.T) {
	xml := fixture(t, "nbd.xml")
	run := func(h *Hook, op, sub string) error {
		return h.Run(context.Background(), []string{"vm", op, sub, "-"}, bytes.NewReader(xml))
	}
	t.Run("destination: migrate records, prepare accepts the source's keys", func(t *testing.T) {
		e := newEnv(t)
		e.claims.migrateFrom = "host-b"
		h := e.hook(t)
		if err := run(h, "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if err := run(h, "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
		if got := e.claims.claims[0].IncomingFrom; got != "host-b" {
			t.Fatalf("prepare claimed with IncomingFrom %q", got)
		}
	})
	t.Run("destination: refused record refuses the migration", func(t *testing.T) {
		e := newEnv(t)
		e.claims.migrateErr = held()
		if err := run(e.hook(t), "migrate", "begin"); Code(err) != ExitRefused {
			t.Fatalf("exit %d: %v", Code(err), err)
		}
	})
	t.Run("destination: no session refuses the migration", func(t *testing.T) {
		e := newEnv(t)
		e.noSess = true
		if err := run(e.hook(t), "migrate", "begin"); Code(err) != ExitRefused {
			t.Fatalf("exit %d: %v", Code(err), err)
		}
	})
	t.Run("destination: failed migration drops the record", func(t *testing.T) {
		e := newEnv(t)
		e.claims.migrateFrom = "host-b"
		h := e.hook(t)
		run(h, "migrate", "begin")
		run(h, "prepare", "begin")
		run(h, "stopped", "end")
		run(h, "release", "end")
		if e.claims.dropped == 0 {
			t.Fatal("record not dropped")
		}
		if _, err := os.Stat(h.marker("migrated", "2f9d8c7b-6a5e-4d3c-b2a1-908f7e6d5c4b")); err == nil {
			t.Error("incoming marker left behind")
		}
	})
	t.Run("source: stop after hand-off is not a clean stop", func(t *testing.T) {
		e := newEnv(t)
		e.claims.handOff = true
		h := e.hook(t)
		ha := fixture(t, "mode-ha-hosts.xml")
		h.Run(context.Background(), []string{"vm", "started", "begin", "-"}, bytes.NewReader(ha))
		if err := h.Run(context.Background(), []string{"vm", "stopped", "end", "-"}, bytes.NewReader(ha)); err != nil {
			t.Fatal(err)
		}
		if len(e.claims.releases) != 0 {
			t.Fatal("released (and set the HA intent) after handing the keys over")
		}
	})
}

func TestRecordableXML(t *testing.T) {
	for _, in := range []string{
		`<domain><devices><graphics type='vnc' port='-1' passwd='s3cret' passwdValidTo="2026-01-01T00:00:00"/></devices></domain>`,
		// Whitespace around "=" is legal XML.
		`<domain><devices><graphics type='vnc' port='-1' passwd = 's3cret' passwdValidTo` + "\n\t=\n" + `"2026-01-01T00:00:00"/></devices></domain>`,
		"<domain><devices><graphics type='vnc' port='-1'\n  passwd=\"s3cret\"/></devices></domain>",
	} {
		got := recordableXML([]byte(in))
		if strings.Contains(got, "s3cret") || strings.Contains(got, "passwd") {
			t.Fatalf("a password reached the recorded XML: %s", got)
		}
		if !strings.Contains(got, "<graphics type='vnc' port='-1'/>") {
			t.Fatalf("the rest of the XML changed: %s", got)
		}
	}
	if recordableXML(make([]byte, maxRecordedXML+1)) != "" {
		t.Fatal("an oversized XML was recorded")
	}
	// Inline secrets elsewhere: nothing is recorded.
	for name, xml := range map[string]string{
		"http cookies": `<domain><devices><disk type='network' device='disk'><source protocol='https' name='/img'><host name='h'/>` +
			`<cookies><cookie name='session'>s3cret</cookie></cookies></source></disk></devices></domain>`,
		"url query": `<domain><devices><disk type='network' device='disk'><source protocol='https' name='/img' query='token=s3cret'/></disk></devices></domain>`,
		"qemu command line": `<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>` +
			`<qemu:commandline><qemu:arg value='-object'/><qemu:arg value='secret,id=s,data=s3cret'/></qemu:commandline></domain>`,
		"oem strings": `<domain><sysinfo type='smbios'><oemStrings><entry>io.systemd.credential:pw=s3cret</entry></oemStrings></sysinfo></domain>`,
	} {
		if got := recordableXML([]byte(xml)); strings.Contains(got, "s3cret") {
			t.Errorf("%s: a secret reached the recorded XML: %s", name, got)
		}
	}
	if got := recordableXML(fixture(t, "mode-ha-hosts.xml")); got == "" {
		t.Error("an ordinary HA domain's XML was not recorded")
	}
}

// Found by the model (docs/model, code-prepare-norecheck): a claim that
// etcd acknowledges after the watchdog began to fence must not start QEMU.
func TestPrepareRechecksSessionAfterClaim(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(s *lease.Session)
	}{
		{"fencing began", func(s *lease.Session) { s.State = lease.SessionFencing }},
		{"new session", func(s *lease.Session) { s.Lease = 0x9999 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			h := e.hook(t)
			e.claims.onClaim = func() {
				s := e.sessFile
				tc.change(&s)
				lease.WriteSession(filepath.Join(e.dir, "session"), s)
			}
			err := h.Run(context.Background(), []string{"vm", "prepare", "begin", "-"}, bytes.NewReader(fixture(t, "nbd.xml")))
			if Code(err) != ExitRefused {
				t.Fatalf("exit %d (%v): a claim that outlived the session started the guest", Code(err), err)
			}
		})
	}
}

// Found by the model (code-incoming-marker): a marker left by a failed
// migration must not let a later plain start claim as incoming.
func TestStaleIncomingMarkerIgnored(t *testing.T) {
	e := newEnv(t)
	h := e.hook(t)
	dom, _ := ParseDomain(fixture(t, "nbd.xml"))
	p := h.marker("incoming", dom.UUID)
	// Written by a migrate hook 2 TTLs ago on the boot clock (a wall-clock
	// step changes nothing).
	lease.WriteMigrationMarker(p, lease.MigrationMarker{From: "host-b", Rev: 7, Boot: bootID, At: int64(e.now - 2*incomingTTL)})
	if err := h.Run(context.Background(), []string{"vm", "prepare", "begin", "-"}, bytes.NewReader(fixture(t, "nbd.xml"))); err != nil {
		t.Fatal(err)
	}
	if from := e.claims.claims[0].IncomingFrom; from != "" {
		t.Fatalf("a stale marker made a plain start claim as incoming from %q", from)
	}
}

// A refused incoming migration's release drops its record.
func TestRefusedIncomingDropsRecord(t *testing.T) {
	e := newEnv(t)
	e.claims.migrateFrom = "host-b"
	h := e.hook(t)
	xml := fixture(t, "nbd.xml")
	h.Run(context.Background(), []string{"vm", "migrate", "begin", "-"}, bytes.NewReader(xml))
	e.claims.claimErr = held()
	h.Run(context.Background(), []string{"vm", "prepare", "begin", "-"}, bytes.NewReader(xml))
	h.Run(context.Background(), []string{"vm", "stopped", "end", "-"}, bytes.NewReader(xml))
	h.Run(context.Background(), []string{"vm", "release", "end", "-"}, bytes.NewReader(xml))
	if e.claims.dropped != 1 {
		t.Fatalf("migration record dropped %d times after a refused incoming prepare", e.claims.dropped)
	}
}

// Only the migration's own prepare claims as incoming: a second start
// right after (the migration failed, its record could not be dropped)
// is a plain start (found by the model: code-incoming-marker-ttl).
func TestIncomingMarkerUsedOnce(t *testing.T) {
	e := newEnv(t)
	e.claims.migrateFrom = "host-b"
	h := e.hook(t)
	xml := fixture(t, "nbd.xml")
	for _, op := range [][]string{{"migrate", "begin"}, {"prepare", "begin"}, {"prepare", "begin"}} {
		h.Run(context.Background(), []string{"vm", op[0], op[1], "-"}, bytes.NewReader(xml))
	}
	if len(e.claims.claims) != 2 || e.claims.claims[0].IncomingFrom != "host-b" || e.claims.claims[1].IncomingFrom != "" {
		t.Fatalf("claims %+v: want the first incoming from host-b, the second plain", e.claims.claims)
	}
}

// A start and a stop as libvirt calls them: stopped end releases, and the
// release end that follows answers from the marker without dialing etcd; the
// next start's release goes to etcd again.
func TestReleaseEndAfterStoppedEndIsLocal(t *testing.T) {
	e := newEnv(t)
	h := e.hook(t)
	xml := fixture(t, "rbd-auth-hosts.xml")
	run := func(op, sub string) {
		t.Helper()
		if err := h.Run(context.Background(), []string{"vm", op, sub, "-"}, bytes.NewReader(xml)); err != nil {
			t.Fatalf("%s %s: %v", op, sub, err)
		}
	}
	for round := 1; round <= 2; round++ {
		for _, c := range [][2]string{{"prepare", "begin"}, {"start", "begin"}, {"started", "begin"}, {"stopped", "end"}} {
			run(c[0], c[1])
		}
		dials, releases := e.dials, len(e.claims.releases)
		run("release", "end")
		if e.dials != dials || len(e.claims.releases) != releases {
			t.Fatalf("round %d: release end after a released stopped end dialed etcd %d times, released %d times", round, e.dials-dials, len(e.claims.releases)-releases)
		}
		if releases != round {
			t.Fatalf("round %d: %d releases in all, want %d", round, releases, round)
		}
	}
	// A failed release at stopped end leaves release end to try again.
	run("prepare", "begin")
	e.claims.releaseErr = errors.New("etcd down")
	run("stopped", "end")
	e.claims.releaseErr = nil
	releases := len(e.claims.releases)
	run("release", "end")
	if len(e.claims.releases) != releases+1 {
		t.Fatalf("release end after a failed stopped end did not release")
	}
}

// mode="off" runs the claim's own check (domain and disk keys, migration
// and unfenced records) without a session and without claiming.
func TestOptOutChecksDisks(t *testing.T) {
	e := newEnv(t)
	e.noSess = true
	err := e.hook(t).Run(context.Background(), []string{"vm-off", "prepare", "begin", "-"}, bytes.NewReader(fixture(t, "mode-off.xml")))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.claims.claims) != 0 || len(e.claims.checks) != 1 {
		t.Fatalf("claims %d checks %d, want 0 and 1", len(e.claims.claims), len(e.claims.checks))
	}
	c := e.claims.checks[0]
	if !c.Unprotected || !c.Start || len(c.Disks) != 1 {
		t.Errorf("checked %+v: want an unprotected start with its disk", c)
	}
}

// Check is prepare's decision without its effects: no claim, no marker,
// an incoming migration's marker left for the real prepare.
func TestCheckIsReadOnly(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(e *env)
		wantCode int
	}{
		{"allowed", nil, ExitOK},
		{"held elsewhere", func(e *env) { e.claims.checkErr = held() }, ExitRefused},
		{"etcd down", func(e *env) { e.claims.checkErr = fmt.Errorf("x: %w", lease.ErrUnavailable) }, ExitUnavailable},
		{"no session", func(e *env) { e.noSess = true }, ExitRefused},
		{"shutting down", func(e *env) { os.WriteFile(filepath.Join(e.dir, "shutdown"), []byte("stop\n"), 0o644) }, ExitRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			dom, err := ParseDomain(fixture(t, "mode-ha-hosts.xml"))
			if err != nil {
				t.Fatal(err)
			}
			writeMarker(filepath.Join(e.dir, "incoming", dom.UUID), "host-b")
			h := e.hook(t)
			before := markers(t, e.dir)
			err = h.Check(context.Background(), dom)
			if got := Code(err); got != tc.wantCode {
				t.Fatalf("exit %d (%v), want %d", got, err, tc.wantCode)
			}
			if len(e.claims.claims) != 0 {
				t.Errorf("Check claimed: %+v", e.claims.claims)
			}
			if after := markers(t, e.dir); after != before {
				t.Errorf("Check changed the markers:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// markers lists the files under dir but the session file.
func markers(t *testing.T, dir string) string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != "session" {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	return strings.Join(out, "\n")
}

// A disk named in a host-local way (/dev/sdb) is claimed, and the check
// tells the operator that the claim may protect nothing across hosts.
func TestCheckWarnsHostLocalDisk(t *testing.T) {
	e := newEnv(t)
	h := e.hook(t)
	var w bytes.Buffer
	h.Warnings = &w
	dom, err := ParseDomain(fixture(t, "block-sdb.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Check(context.Background(), dom); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.String(), "warning") || !strings.Contains(w.String(), "/dev/sdb") || strings.Count(w.String(), "\n") != 2 {
		t.Fatalf("warnings %q: want one line per kernel-named disk (sdb, nvme0n1p2)", w.String())
	}
}

// Review finding C1: a destination whose prepare is refused before the
// claim (here: its watchdog stopped during the migration) must not keep the
// incoming marker or the migration record, and a plain start there
// afterwards must never claim "as incoming" and ride on the source's keys.
func TestRefusedIncomingPrepareLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse func(e *env)
	}{
		{"watchdog stopped", func(e *env) { e.sessFile.State = lease.SessionStopped }},
		{"host shutting down", func(e *env) { os.WriteFile(filepath.Join(e.dir, "shutdown"), []byte("stop\n"), 0o644) }},
		{"etcd login failed", func(e *env) { e.dialErr = fmt.Errorf("login: %w", lease.ErrUnavailable) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.claims.migrateFrom = "host-b"
			xml := fixture(t, "nbd.xml")
			dom, _ := ParseDomain(xml)
			run := func(h *Hook, op, sub string) error {
				return h.Run(context.Background(), []string{"vm", op, sub, "-"}, bytes.NewReader(xml))
			}
			if err := run(e.hook(t), "migrate", "begin"); err != nil {
				t.Fatal(err)
			}
			tc.refuse(e)
			h := e.hook(t)
			if err := run(h, "prepare", "begin"); err == nil {
				t.Fatal("prepare not refused")
			}
			e.dialErr = nil
			os.Remove(filepath.Join(e.dir, "shutdown"))
			e.sessFile.State = lease.SessionOK
			h = e.hook(t) // the watchdog is back, same lease
			run(h, "stopped", "end")
			run(h, "release", "end")
			if e.claims.dropped == 0 {
				t.Error("the refused migration's record was not dropped")
			}
			for _, m := range []string{"incoming", "migrated"} {
				if _, err := os.Stat(h.marker(m, dom.UUID)); err == nil {
					t.Errorf("%s marker left behind", m)
				}
			}
			// The operator, seeing "migration failed", starts it here.
			claims := len(e.claims.claims)
			run(h, "prepare", "begin")
			for _, c := range e.claims.claims[claims:] {
				if c.IncomingFrom != "" {
					t.Fatalf("a plain start after a refused migration claimed as incoming from %s", c.IncomingFrom)
				}
			}
		})
	}
}

// Review finding M1 and m4: reconnect fails (and libvirt kills the guest)
// only when another host holds it, and never for a guest that came in by a
// live migration the source has not handed over yet: that is the only copy.
func TestReconnectIncomingAndNonHolderRefusals(t *testing.T) {
	heldByB := func() error {
		return &lease.HeldError{Key: "/virtlease/domains/x", Want: "vm", Held: lease.Record{Host: "host-b", Name: "vm", UUID: "x"}}
	}
	tests := []struct {
		name     string
		marker   bool // a migrated marker naming host-b
		claim    func(c lease.Claim) error
		wantCode int
	}{
		{"migrated marker, not handed over yet", true, func(c lease.Claim) error {
			if c.IncomingFrom == "host-b" {
				return nil // the source's keys are accepted: pending
			}
			return heldByB()
		}, ExitOK},
		{"marker lost, migration to here recorded", false, func(c lease.Claim) error {
			if c.IncomingFrom == "host-b" {
				return nil
			}
			return heldByB()
		}, ExitOK},
		{"migrated marker, migration over, held elsewhere since", true, func(c lease.Claim) error {
			if c.IncomingFrom != "" {
				return fmt.Errorf("x: %w", lease.ErrNotIncoming)
			}
			return heldByB()
		}, ExitRefused},
		{"held by another host, no migration", false, func(c lease.Claim) error {
			if c.IncomingFrom != "" {
				return fmt.Errorf("x: %w", lease.ErrNotIncoming)
			}
			return heldByB()
		}, ExitRefused},
		{"unfenced record of another host: the reconcile's to judge", false, func(lease.Claim) error {
			return &lease.HeldError{Key: "/virtlease/unfenced/host-c", Want: "vm", Why: "may still run on host-c"}
		}, ExitOK},
		{"another domain of this host holds a disk", false, func(lease.Claim) error {
			return &lease.HeldError{Key: "/virtlease/disks/d", Disk: "d", Want: "vm", Held: lease.Record{Host: "host-a", Name: "copy", UUID: "y"}}
		}, ExitOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.claims.claimFn = tc.claim
			h := e.hook(t)
			xml := fixture(t, "nbd.xml")
			dom, _ := ParseDomain(xml)
			if tc.marker {
				writeMarker(h.marker("migrated", dom.UUID), "host-b")
			}
			err := h.Run(context.Background(), []string{"vm", "reconnect", "begin", "-"}, bytes.NewReader(xml))
			if Code(err) != tc.wantCode {
				t.Fatalf("exit %d (%v), want %d", Code(err), err, tc.wantCode)
			}
		})
	}
}

// Review findings m6 and m7: an incoming migration's prepare is not a new
// start (a draining host lets incoming migrations in); the marker's age is
// read on the boot clock, so a wall-clock step does not make a live
// migration's marker look stale; and a marker that cannot be read, removed
// or kept as "migrated" refuses the start rather than being ignored.
func TestPrepareIncomingMarker(t *testing.T) {
	xml := fixture(t, "nbd.xml")
	dom, _ := ParseDomain(xml)
	run := func(h *Hook, op string) error {
		return h.Run(context.Background(), []string{"vm", op, "begin", "-"}, bytes.NewReader(xml))
	}
	t.Run("incoming claim is not a new start", func(t *testing.T) {
		e := newEnv(t)
		e.claims.migrateFrom = "host-b"
		h := e.hook(t)
		if err := run(h, "migrate"); err != nil {
			t.Fatal(err)
		}
		if err := run(h, "prepare"); err != nil {
			t.Fatal(err)
		}
		if c := e.claims.claims[0]; c.IncomingFrom != "host-b" || c.Start {
			t.Fatalf("incoming claim %+v: want IncomingFrom host-b, Start false", c)
		}
	})
	t.Run("wall clock stepped back an hour after migrate begin", func(t *testing.T) {
		e := newEnv(t)
		e.claims.migrateFrom = "host-b"
		h := e.hook(t)
		if err := run(h, "migrate"); err != nil {
			t.Fatal(err)
		}
		p := h.marker("incoming", dom.UUID)
		old := time.Now().Add(-time.Hour)
		os.Chtimes(p, old, old)
		if err := run(h, "prepare"); err != nil {
			t.Fatal(err)
		}
		if c := e.claims.claims[0]; c.IncomingFrom != "host-b" {
			t.Fatalf("a wall-clock step made the live migration's prepare a plain claim: %+v", c)
		}
	})
	for _, tc := range []struct {
		name  string
		spoil func(h *Hook)
	}{
		{"marker unreadable", func(h *Hook) {
			p := h.marker("incoming", dom.UUID)
			os.Remove(p)
			os.MkdirAll(filepath.Join(p, "x"), 0o755)
		}},
		{"migrated marker cannot be written", func(h *Hook) {
			os.RemoveAll(filepath.Join(h.Config.StateDir, "migrated"))
			os.WriteFile(filepath.Join(h.Config.StateDir, "migrated"), nil, 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.claims.migrateFrom = "host-b"
			h := e.hook(t)
			if err := run(h, "migrate"); err != nil {
				t.Fatal(err)
			}
			tc.spoil(h)
			if err := run(h, "prepare"); Code(err) != ExitRefused {
				t.Fatalf("exit %d (%v), want %d", Code(err), err, ExitRefused)
			}
			if len(e.claims.claims) != 0 {
				t.Fatalf("claimed %+v", e.claims.claims)
			}
		})
	}
}

// Review finding m9: a started marker left by an earlier run (whose release
// failed) must not make this run's stop look clean when QEMU never started.
func TestPrepareClearsStaleStartedMarker(t *testing.T) {
	e := newEnv(t)
	h := e.hook(t)
	xml := fixture(t, "mode-ha-hosts.xml")
	run := func(op, sub string) {
		t.Helper()
		if err := h.Run(context.Background(), []string{"vm", op, sub, "-"}, bytes.NewReader(xml)); err != nil {
			t.Fatalf("%s %s: %v", op, sub, err)
		}
	}
	run("started", "begin") // an earlier run; its stop never reached us
	run("prepare", "begin")
	run("stopped", "end") // QEMU failed to start: no started begin
	// Not a clean stop: the release puts back the intent the claim
	// replaced (none here: stopped, as a failed start), never "stopped on".
	if len(e.claims.releases) != 1 || e.claims.releases[0] == nil || e.claims.releases[0].Reason == lease.StoppedBy("host-a") {
		t.Fatalf("a run that never started was recorded as a clean stop: %+v", e.claims.releases)
	}
}

// Review finding m10: when the session check after a successful claim
// refuses, the claim did land: no refused marker, so the release that
// follows releases the keys instead of skipping etcd.
func TestRecheckRefusalStillReleases(t *testing.T) {
	e := newEnv(t)
	h := e.hook(t)
	xml := fixture(t, "nbd.xml")
	e.claims.onClaim = func() {
		s := e.sessFile
		s.State = lease.SessionStopped
		lease.WriteSession(filepath.Join(e.dir, "session"), s)
	}
	if err := h.Run(context.Background(), []string{"vm", "prepare", "begin", "-"}, bytes.NewReader(xml)); Code(err) != ExitRefused {
		t.Fatalf("exit %d (%v)", Code(err), err)
	}
	e.claims.onClaim = nil
	for _, op := range []string{"stopped", "release"} {
		h.Run(context.Background(), []string{"vm", op, "end", "-"}, bytes.NewReader(xml))
	}
	if len(e.claims.releases) == 0 {
		t.Fatal("the landed claim's keys were not released")
	}
}

// Review finding m12: migrate begin on a host that is shutting down records
// nothing (its prepare would be refused).
func TestMigrateRefusedWhileShuttingDown(t *testing.T) {
	e := newEnv(t)
	e.claims.migrateFrom = "host-b"
	os.WriteFile(filepath.Join(e.dir, "shutdown"), []byte("migrate\n"), 0o644)
	h := e.hook(t)
	err := h.Run(context.Background(), []string{"vm", "migrate", "begin", "-"}, bytes.NewReader(fixture(t, "nbd.xml")))
	if Code(err) != ExitRefused || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("exit %d (%v), want refused: shutting down", Code(err), err)
	}
	dom, _ := ParseDomain(fixture(t, "nbd.xml"))
	if _, err := os.Stat(h.marker("incoming", dom.UUID)); err == nil {
		t.Fatal("incoming marker written")
	}
}
