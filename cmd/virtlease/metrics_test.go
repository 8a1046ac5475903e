package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.yaml.in/yaml/v3"

	"github.com/virtlease/virtlease/fence"
)

func TestPromMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "refusals"), 0o755)
	os.WriteFile(filepath.Join(dir, "refusals", "held"), []byte(".."), 0o644) // two refusals, as hook.Hook.refuse counts them
	os.WriteFile(filepath.Join(dir, "refusals", "draining"), []byte("."), 0o644)
	m := newPromMetrics(reg, dir)
	m.SessionLeft(7 * time.Second)
	m.Renewed(3 * time.Millisecond)
	m.RenewFailed()
	m.Fenced()
	m.Killed("no renewal acknowledged in time", 1)
	m.Killed("reconcile: domain vm held elsewhere", 0)
	m.Reconciled("adopt")
	m.GuestsManaged(4)
	m.HARestarted(true)
	m.SessionLeft(-time.Second) // expired: shown as 0, never negative
	m.SessionState("resumed")
	m.SessionState("fencing")
	m.DeviceArmed(true)
	m.HAIntentsFailed(2)
	want := `
# HELP virtlease_fences_total Times this host fenced (killed its guests because its session could expire).
# TYPE virtlease_fences_total counter
virtlease_fences_total 1
# HELP virtlease_guests_managed Running guests libvirt reported at the last reconcile.
# TYPE virtlease_guests_managed gauge
virtlease_guests_managed 4
# HELP virtlease_kill_rounds_total Rounds of guest kills, by reason.
# TYPE virtlease_kill_rounds_total counter
virtlease_kill_rounds_total{reason="fence"} 1
virtlease_kill_rounds_total{reason="reconcile"} 1
# HELP virtlease_kill_survivors_total Guests still alive after a kill round (the hardware watchdog must cover these).
# TYPE virtlease_kill_survivors_total counter
virtlease_kill_survivors_total 1
# HELP virtlease_session_ttl_left_seconds Time until etcd may expire this host's session, dated from the last acknowledged renewal's send time; 0 while fencing or without a session.
# TYPE virtlease_session_ttl_left_seconds gauge
virtlease_session_ttl_left_seconds 0
# HELP virtlease_session_state 1 for this host's session state: held (renewed by etcd), resumed (from the session file, not yet renewed), fencing, none; 0 for the others.
# TYPE virtlease_session_state gauge
virtlease_session_state{state="fencing"} 1
virtlease_session_state{state="held"} 0
virtlease_session_state{state="none"} 0
virtlease_session_state{state="resumed"} 0
# HELP virtlease_hardware_watchdog_armed 1 while the hardware watchdog device (fence.hardware_watchdog) is open and counting, else 0.
# TYPE virtlease_hardware_watchdog_armed gauge
virtlease_hardware_watchdog_armed 1
# HELP virtlease_ha_intents_failed HA intents in the cluster that gave up restarting (want failed), as this host last read them: an operator must look (virtlease status, virtlease ha reset).
# TYPE virtlease_ha_intents_failed gauge
virtlease_ha_intents_failed 2
# HELP virtlease_start_refusals_total Guest starts the hook refused on this host since boot, by reason: held (by another host or domain), draining, unfenced, no_session, fence_point, etcd_unavailable, shutting_down, saved_state, incoming, other.
# TYPE virtlease_start_refusals_total counter
virtlease_start_refusals_total{reason="draining"} 1
virtlease_start_refusals_total{reason="held"} 2
`
	names := []string{"virtlease_fences_total", "virtlease_guests_managed", "virtlease_kill_rounds_total", "virtlease_kill_survivors_total", "virtlease_session_ttl_left_seconds",
		"virtlease_session_state", "virtlease_hardware_watchdog_armed", "virtlease_ha_intents_failed", "virtlease_start_refusals_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var build string
	for _, mf := range mfs {
		if mf.GetName() == "virtlease_build_info" && len(mf.GetMetric()) == 1 && mf.GetMetric()[0].GetGauge().GetValue() == 1 {
			for _, l := range mf.GetMetric()[0].GetLabel() {
				build += l.GetName() + "=" + l.GetValue() + " "
			}
		}
	}
	if !strings.Contains(build, "version="+version+" ") || !strings.Contains(build, "goversion=go") || !strings.Contains(build, "revision=") {
		t.Errorf("virtlease_build_info labels %q, want version, revision, goversion", build)
	}
	if n := testutil.CollectAndCount(m.renewLatency); n != 1 {
		t.Fatalf("renew latency histogram: %d series", n)
	}
}

// The example alert rules hold for two scrapes at least, and use only
// metrics the watchdog exports (a renamed metric would silence a rule).
func TestAlertRules(t *testing.T) {
	data, err := os.ReadFile("../../docs/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr, For string
			}
		}
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := newPromMetrics(reg, t.TempDir())
	m.Killed("fence", 0)
	m.Reconciled("adopt")
	m.HARestarted(false)
	m.Renewed(time.Millisecond)
	m.setTimings(fence.DefaultConfig())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{"virtlease_start_refusals_total": true} // read from the hooks' files at scrape
	for _, mf := range mfs {
		exported[mf.GetName()] = true
	}
	names := regexp.MustCompile(`virtlease_[a-z_]+`)
	rules := 0
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			rules++
			if d, err := time.ParseDuration(r.For); err != nil || d < 30*time.Second {
				t.Errorf("%s: for: %q, want at least 30s (two scrapes at 15s)", r.Alert, r.For)
			}
			for _, n := range names.FindAllString(r.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
				if !exported[n] && !exported[base] {
					t.Errorf("%s uses %s, which the watchdog does not export", r.Alert, n)
				}
			}
		}
	}
	if rules == 0 {
		t.Fatal("no rules parsed")
	}
}
