package main

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPromMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newPromMetrics(reg)
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
`
	names := []string{"virtlease_fences_total", "virtlease_guests_managed", "virtlease_kill_rounds_total", "virtlease_kill_survivors_total", "virtlease_session_ttl_left_seconds"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.renewLatency); n != 1 {
		t.Fatalf("renew latency histogram: %d series", n)
	}
}
