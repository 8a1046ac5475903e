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
	claimErr   error
	releaseErr error
	holding    *lease.Record
	claims     []lease.Claim
	releases   []*lease.Intent
	onClaim    func() // runs while the claim is "in flight"
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

func (f *fakeClaims) Claim(_ context.Context, _ lease.Holder, c lease.Claim) (lease.ClaimResult, error) {
	f.claims = append(f.claims, c)
	if f.onClaim != nil {
		f.onClaim()
	}
	if f.claimErr != nil {
		return lease.ClaimResult{}, f.claimErr
	}
	return lease.ClaimResult{Run: f.claimRun}, nil
}

func (f *fakeClaims) LastRun(context.Context, string) (*lease.Run, error) {
	return f.lastRun, f.lastRunErr
}

func (f *fakeClaims) Release(_ context.Context, _ lease.Holder, _ string, _ []string, in *lease.Intent) (int, error) {
	f.releases = append(f.releases, in)
	return 1, f.releaseErr
}

func (f *fakeClaims) Holding(context.Context, string) (*lease.Record, error) { return f.holding, nil }

func (f *fakeClaims) RecordMigration(context.Context, lease.Holder, string, string, []string) (string, error) {
	return f.migrateFrom, f.migrateErr
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
		{"opt-out, held elsewhere", "mode-off.xml", func(e *env) {
			e.claims.holding = &lease.Record{Host: "host-b", Name: "vm-off", UUID: "u"}
		}, ExitRefused, "host-b", false, false},
		{"opt-out, etcd down: starts (not protected by choice)", "mode-off.xml", func(e *env) { e.dialErr = unavailable }, ExitOK, "", false, false},
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
		})
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
		{"never started (failed start)", false, false, lease.SessionOK, ""},
		{"watchdog stopped", true, false, lease.SessionStopped, ""},
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
	t.Run("session past its deadline (libvirtd back after a host crash)", func(t *testing.T) {
		e := newEnv(t)
		e.now = 200 * time.Second
		h := e.hook(t)
		xml := fixture(t, "mode-ha-hosts.xml")
		h.Run(context.Background(), []string{"vm", "started", "begin", "-"}, bytes.NewReader(xml))
		h.Run(context.Background(), []string{"vm", "stopped", "end", "-"}, bytes.NewReader(xml))
		if len(e.claims.releases) != 1 || e.claims.releases[0] != nil {
			t.Fatalf("a stop seen with an expired session set the intent: %+v", e.claims.releases)
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
	in := `<domain><devices><graphics type='vnc' port='-1' passwd='s3cret' passwdValidTo="2026-01-01T00:00:00"/></devices></domain>`
	got := recordableXML([]byte(in))
	if strings.Contains(got, "s3cret") || strings.Contains(got, "passwd") {
		t.Fatalf("a password reached the recorded XML: %s", got)
	}
	if !strings.Contains(got, "<graphics type='vnc' port='-1'/>") {
		t.Fatalf("the rest of the XML changed: %s", got)
	}
	if recordableXML(make([]byte, maxRecordedXML+1)) != "" {
		t.Fatal("an oversized XML was recorded")
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
	writeMarker(p, "host-b")
	old := time.Now().Add(-2 * incomingTTL)
	os.Chtimes(p, old, old)
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
