package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtlease/virtlease/lease"
)

const shutdownUnit = "../../scripts/systemd/virtlease-shutdown.service"

// unitValue is the value of key= in a unit file's text (the last one set).
func unitValue(t *testing.T, unit, key string) string {
	t.Helper()
	v, found := "", false
	for _, line := range strings.Split(unit, "\n") {
		if rest, ok := strings.CutPrefix(line, key+"="); ok {
			v, found = rest, true
		}
	}
	if !found {
		t.Fatalf("the unit sets no %s=", key)
	}
	return v
}

// The unit's ExecStop, word for word after the binary, reaches the
// command's action with the config it names: the file is read (here one
// with a bad ha.on_shutdown, so that nothing else runs) and its error is a
// config error, exit 2 — not a usage error about the flags.
func TestShutdownUnitExecStopParses(t *testing.T) {
	unit := readFile(t, shutdownUnit)
	words := strings.Fields(unitValue(t, unit, "ExecStop"))
	if len(words) < 2 || filepath.Base(words[0]) != "virtlease" {
		t.Fatalf("ExecStop %q does not run virtlease", words)
	}
	args := words[1:]
	i := slices.Index(args, "/etc/virtlease/config.yaml")
	if i < 0 {
		t.Fatalf("ExecStop %q does not name /etc/virtlease/config.yaml", words)
	}
	// The same config file as the watchdog's.
	watchdog := readFile(t, "../../scripts/systemd/virtlease-watchdog.service")
	if !strings.Contains(unitValue(t, watchdog, "ExecStart"), "--config /etc/virtlease/config.yaml") {
		t.Error("the watchdog unit reads another config than the shutdown unit")
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("host: host-a\nha:\n  on_shutdown: bogus\n"), 0o644)
	args = slices.Clone(args)
	args[i] = cfg
	var stdout, stderr bytes.Buffer
	code := runCLI(append([]string{"virtlease"}, args...), strings.NewReader(""), &stdout, &stderr, func(string) string { return "" })
	if code != 2 || !strings.Contains(stderr.String(), cfg) || !strings.Contains(stderr.String(), "on_shutdown") {
		t.Errorf("virtlease %s: exit %d, want the config error (2)\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
}

// systemd gives the ExecStop time for every bound shutdown-mark keeps, so
// it ends on its own rather than being killed halfway.
func TestShutdownUnitStopTimeout(t *testing.T) {
	unit := readFile(t, shutdownUnit)
	d, err := time.ParseDuration(unitValue(t, unit, "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if need := shutdownEvacuateFor + shutdownStopFor + shutdownSlack; d < need {
		t.Errorf("TimeoutStopSec=%v is shorter than the command's own bounds (%v)", d, need)
	}
	// Stop order is the reverse of start order: the unit must stop (its
	// ExecStop run) before the watchdog and libvirtd stop.
	after := strings.Join(strings.Fields(strings.Join(unitValues(unit, "After"), " ")), " ")
	for _, u := range []string{"virtlease-watchdog.service", "libvirtd.service", "virtqemud.service", "network.target"} {
		if !slices.Contains(strings.Fields(after), u) {
			t.Errorf("After= lacks %s: the shutdown would run after it stopped", u)
		}
	}
	if strings.Contains(unit, "\nReadWritePaths=/") {
		t.Error("ReadWritePaths= without '-' fails the unit when the directory is missing")
	}
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		bin, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		copyUnit := filepath.Join(t.TempDir(), "virtlease-shutdown.service")
		execStop := unitValue(t, unit, "ExecStop")
		os.WriteFile(copyUnit, []byte(strings.ReplaceAll(unit, "ExecStop="+strings.Fields(execStop)[0], "ExecStop="+bin)), 0o644)
		out, err := exec.Command(analyze, "verify", copyUnit).CombinedOutput()
		// Units named in After= may be missing here (no libvirt): only
		// complaints about this unit count.
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(line, "virtlease-shutdown.service") {
				t.Errorf("systemd-analyze verify: %v: %s", err, line)
			}
		}
	} else if os.Getenv("CI") == "true" {
		t.Error("no systemd-analyze: the unit cannot be verified")
	}
}

func unitValues(unit, key string) []string {
	var vs []string
	for _, line := range strings.Split(unit, "\n") {
		if rest, ok := strings.CutPrefix(line, key+"="); ok {
			vs = append(vs, rest)
		}
	}
	return vs
}

// fakeGuests is hostGuests over a map; guests in deaf ignore ACPI.
type fakeGuests struct {
	mu        sync.Mutex
	running   map[string]bool
	deaf      map[string]bool
	shutdowns []string
	destroys  []string
	// onStop, when set, sees the state dir's marker at each stop.
	onStop func(uuid string)
}

func (f *fakeGuests) Running(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for u, r := range f.running {
		if r {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (f *fakeGuests) Shutdown(_ context.Context, u string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdowns = append(f.shutdowns, u)
	if f.onStop != nil {
		f.onStop(u)
	}
	if !f.deaf[u] {
		f.running[u] = false
	}
	return nil
}

func (f *fakeGuests) Destroy(_ context.Context, u string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.destroys = append(f.destroys, u)
	if f.onStop != nil {
		f.onStop(u)
	}
	f.running[u] = false
	return nil
}

// A host-a with HA guest ha1 (candidates a, b), non-HA guest plain1, an
// unmanaged running guest (no key), and a live host-b.
func shutdownSnapshot() lease.Snapshot {
	return lease.Snapshot{
		Hosts: []lease.HostStatus{{HostRecord: lease.HostRecord{Host: "host-a"}}, {HostRecord: lease.HostRecord{Host: "host-b"}}},
		Domains: []lease.DomainStatus{
			{Record: lease.Record{Host: "host-a", UUID: "u-ha1", Name: "ha1"}},
			{Record: lease.Record{Host: "host-a", UUID: "u-plain1", Name: "plain1"}},
			{Record: lease.Record{Host: "host-b", UUID: "u-other", Name: "other"}},
		},
		Intents: map[string]lease.Intent{"u-ha1": {Want: lease.WantRunning, Name: "ha1", Candidates: []string{"host-a", "host-b"}}},
	}
}

// Whatever the policy, the marker is written before anything moves or
// stops; migrate evacuates (here a migration that never ends, cut by its
// bound), every guest this host holds is stopped, and only those.
func TestShutdownRun(t *testing.T) {
	for _, tc := range []struct {
		mode, marker string
		migrates     bool
		snapErr      error
		ctxCancelled bool // SIGTERM during the migration
		wantStopped  []string
	}{
		{mode: "migrate", marker: "failover", migrates: true, wantStopped: []string{"u-ha1", "u-plain1"}},
		{mode: "migrate", marker: "failover", migrates: true, ctxCancelled: true, wantStopped: []string{"u-ha1", "u-plain1"}},
		{mode: "failover", marker: "failover", wantStopped: []string{"u-ha1", "u-plain1"}},
		{mode: "stop", marker: "stop", wantStopped: []string{"u-ha1", "u-plain1"}},
		// etcd cannot say what this host holds: no evacuation, and every
		// running guest is stopped, so the watchdog finds none.
		{mode: "migrate", marker: "failover", snapErr: errors.New("etcd down"), wantStopped: []string{"u-ha1", "u-plain1", "u-unmanaged"}},
	} {
		name := tc.mode
		if tc.ctxCancelled {
			name += "/sigterm"
		}
		if tc.snapErr != nil {
			name += "/etcd-down"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			marker := func() string {
				b, err := os.ReadFile(filepath.Join(dir, "shutdown"))
				if err != nil {
					return "(none)"
				}
				return strings.TrimSpace(string(b))
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			g := &fakeGuests{running: map[string]bool{"u-ha1": true, "u-plain1": true, "u-unmanaged": true}, deaf: map[string]bool{"u-plain1": true}}
			g.onStop = func(u string) {
				if m := marker(); m != tc.marker {
					t.Errorf("%s stopped with the marker %q, want %q", u, m, tc.marker)
				}
			}
			var migrated []string
			var out bytes.Buffer
			r := shutdownRun{
				mode: tc.mode, host: "host-a", stateDir: dir,
				snapshot: func(context.Context) (lease.Snapshot, error) { return shutdownSnapshot(), tc.snapErr },
				migrate: func(ctx context.Context, name, dest string) error {
					migrated = append(migrated, name+"→"+dest)
					if m := marker(); m != tc.marker {
						t.Errorf("migration began with the marker %q, want %q", m, tc.marker)
					}
					if tc.ctxCancelled {
						cancel()
					}
					<-ctx.Done() // a migration that does not end on its own
					return ctx.Err()
				},
				guests: g, out: &out, evacuateFor: 50 * time.Millisecond, stopFor: 50 * time.Millisecond,
			}
			if err := r.run(ctx); err != nil {
				t.Errorf("run: %v\n%s", err, out.String())
			}
			if m := marker(); m != tc.marker {
				t.Errorf("marker %q, want %q", m, tc.marker)
			}
			if want := tc.migrates && tc.snapErr == nil; want != (len(migrated) > 0) {
				t.Errorf("migrations %v, want some: %v", migrated, want)
			} else if want && !slices.Equal(migrated, []string{"ha1→host-b"}) {
				t.Errorf("migrations %v, want ha1→host-b", migrated)
			}
			stopped := slices.Concat(g.shutdowns)
			slices.Sort(stopped)
			if !slices.Equal(stopped, tc.wantStopped) {
				t.Errorf("shut down %v, want %v", stopped, tc.wantStopped)
			}
			// The guest that ignores ACPI is destroyed; no other is.
			if !slices.Equal(g.destroys, []string{"u-plain1"}) {
				t.Errorf("destroyed %v, want [u-plain1]", g.destroys)
			}
			if left, _ := g.Running(ctx); slices.ContainsFunc(left, func(u string) bool { return slices.Contains(tc.wantStopped, u) }) {
				t.Errorf("still running: %v", left)
			}
		})
	}
}

// A marker that cannot be written does not keep the guests running (the
// watchdog must find none), but the run reports it.
func TestShutdownRunMarkerFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(dir, nil, 0o644) // the state dir is a file: no marker
	g := &fakeGuests{running: map[string]bool{"u-ha1": true}}
	var out bytes.Buffer
	r := shutdownRun{
		mode: "failover", host: "host-a", stateDir: dir,
		snapshot: func(context.Context) (lease.Snapshot, error) { return shutdownSnapshot(), nil },
		guests:   g, out: &out, evacuateFor: time.Second, stopFor: time.Second,
	}
	if err := r.run(context.Background()); err == nil || !strings.Contains(err.Error(), "marking the shutdown") {
		t.Errorf("run: %v, want the marker's error", err)
	}
	if !slices.Equal(g.shutdowns, []string{"u-ha1"}) {
		t.Errorf("shut down %v, want [u-ha1]", g.shutdowns)
	}
}

// The unit stops at a package upgrade or by hand too: only a host that is
// going down loses its guests.
func TestIsHostShutdown(t *testing.T) {
	for _, tc := range []struct {
		name, invocation, state string
		err                     error
		want                    bool
	}{
		{name: "by hand", want: true},
		{name: "systemd, shutting down", invocation: "abc", state: "stopping", want: true},
		{name: "systemd, unit restarted", invocation: "abc", state: "running"},
		{name: "systemd, degraded", invocation: "abc", state: "degraded"},
		{name: "systemd unreachable", invocation: "abc", err: errors.New("no bus")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "INVOCATION_ID" {
					return tc.invocation
				}
				return ""
			}
			got, why := isHostShutdown(context.Background(), getenv, func(context.Context) (string, error) { return tc.state, tc.err })
			if got != tc.want || (!got && why == "") {
				t.Errorf("isHostShutdown = %v %q, want %v", got, why, tc.want)
			}
		})
	}
}
