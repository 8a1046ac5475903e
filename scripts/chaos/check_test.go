package main

import (
	"strings"
	"testing"
	"time"
)

// The checker on made-up histories: each check must fire on what it is
// for and stay quiet on what is allowed.

var (
	t0   = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	doms = campaignDomains(23792)
)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func dom(name string) *domain {
	for _, d := range doms {
		if d.Name == name {
			return d
		}
	}
	panic(name)
}

func byUUID() map[string]*domain {
	m := map[string]*domain{}
	for _, d := range doms {
		m[d.UUID] = d
	}
	return m
}

func input() *checkInput {
	return &checkInput{now: at(1000), final: true, ttl: 6 * time.Second, hookTimeout: 5 * time.Second,
		touchTail: 16 * time.Second, migrationTail: time.Second, domains: byUUID()}
}

// scans feeds a sampler scans of (name, host, pid) triples, one scan per
// 100 ms from t0.
func scans(t *testing.T, ss ...[]string) *sampler {
	t.Helper()
	disks := map[string][]string{}
	for _, d := range doms {
		disks[d.UUID] = d.Disks
	}
	s := newSampler(nil, disks, 100*time.Millisecond)
	for i, sc := range ss {
		var ps []proc
		for _, e := range sc {
			f := strings.Fields(e) // "vm2 host-a 10"
			var pid int
			for _, c := range f[2] {
				pid = pid*10 + int(c-'0')
			}
			ps = append(ps, proc{PID: pid, Start: uint64(pid), UUID: dom(f[0]).UUID, Host: f[1]})
		}
		s.observe(at(float64(i)/10), time.Millisecond, ps, nil)
	}
	return s
}

func kinds(vs []violation) string {
	var k []string
	for _, v := range vs {
		k = append(k, v.Kind)
	}
	return strings.Join(k, ",")
}

func TestOverlaps(t *testing.T) {
	cases := []struct {
		name  string
		scans [][]string
		ops   []op
		want  string
	}{
		{"one after the other", [][]string{{"vm2 host-a 1"}, {}, {"vm2 host-b 2"}}, nil, ""},
		{"handover between scans", [][]string{{"vm2 host-a 1"}, {"vm2 host-b 2"}}, nil, ""},
		{"same UUID on two hosts", [][]string{{"vm2 host-a 1"}, {"vm2 host-a 1", "vm2 host-b 2"}}, nil, "overlap"},
		{"copied XML on the same disk", [][]string{{"vm1 host-a 1", "vm1-copy host-b 2"}}, nil, "overlap"},
		{"nbd disk under two UUIDs", [][]string{{"vm2 host-a 1", "vm2-ha host-a 2"}}, nil, "overlap"},
		{"inside a live migration", [][]string{{"vm2 host-a 1"}, {"vm2 host-a 1", "vm2 host-b 2"}, {"vm2 host-b 2"}},
			[]op{{ID: 1, Kind: "migrate", Dom: dom("vm2"), Host: "host-a", Dest: "host-b", Start: at(0.05), End: at(0.15), Done: true, Class: "ok"}}, ""},
		{"a migration to another host", [][]string{{"vm2 host-a 1", "vm2 host-b 2"}},
			[]op{{ID: 1, Kind: "migrate", Dom: dom("vm2"), Host: "host-a", Dest: "host-c", Start: at(-1), End: at(1), Done: true, Class: "ok"}}, "overlap"},
		{"outlasting the migration", [][]string{{"vm2 host-a 1", "vm2 host-b 2"}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {"vm2 host-a 1", "vm2 host-b 2"}},
			[]op{{ID: 1, Kind: "migrate", Dom: dom("vm2"), Host: "host-a", Dest: "host-b", Start: at(-1), End: at(0), Done: true, Class: "ok"}}, "overlap"},
		{"migration still running", [][]string{{"ha1 host-a 1", "ha1 host-c 2"}},
			[]op{{ID: 1, Kind: "migrate", Dom: dom("ha1"), Host: "host-c", Dest: "host-a", Start: at(-1)}}, ""},
		{"failed migration's paused destination outlives it", [][]string{{"vm2 host-a 1"}, {"vm2 host-a 1", "vm2 host-c 2"}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {"vm2 host-a 1", "vm2 host-c 2"}},
			[]op{{ID: 1, Kind: "migrate", Dom: dom("vm2"), Host: "host-a", Dest: "host-c", Start: at(0.05), End: at(0.2), Done: true, Class: "error"}}, ""},
		{"a successful migration's destination does not get that leeway", [][]string{{"vm2 host-a 1"}, {"vm2 host-a 1", "vm2 host-c 2"}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {"vm2 host-a 1", "vm2 host-c 2"}},
			[]op{{ID: 1, Kind: "migrate", Dom: dom("vm2"), Host: "host-a", Dest: "host-c", Start: at(0.05), End: at(0.2), Done: true, Class: "ok"}}, "overlap"},
		{"a QEMU started after the failed migration", [][]string{{"vm2 host-a 1"}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {"vm2 host-a 1", "vm2 host-c 2"}},
			[]op{{ID: 1, Kind: "migrate", Dom: dom("vm2"), Host: "host-a", Dest: "host-c", Start: at(0.05), End: at(0.2), Done: true, Class: "error"}}, "overlap"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			s := scans(t, tc.scans...)
			in := input()
			in.spans, in.pairs = s.snapshot()
			in.ops = tc.ops
			if got := kinds(in.checkOverlaps()); got != tc.want {
				t.Errorf("violations %q, want %q: %v", got, tc.want, in.checkOverlaps())
			}
		})
	}
}

func TestFalseFences(t *testing.T) {
	// ha1 runs on host-a from 0 to 1 s, then is gone.
	sc := [][]string{}
	for i := 0; i < 10; i++ {
		sc = append(sc, []string{"ha1 host-a 7"})
	}
	sc = append(sc, []string{})
	cases := []struct {
		name   string
		ops    []op
		faults []*fault
		resets []hostEvent
		want   string
	}{
		{"nothing explains it", nil, nil, nil, "false-fence"},
		{"our destroy", []op{{ID: 1, Kind: "stop", Dom: dom("ha1"), Host: "host-a", Start: at(0.5), End: at(1.1), Done: true, Class: "ok"}}, nil, nil, ""},
		{"a destroy on another host", []op{{ID: 1, Kind: "stop", Dom: dom("ha1"), Host: "host-b", Start: at(0.5), End: at(1.1), Done: true}}, nil, nil, "false-fence"},
		{"a migration away", []op{{ID: 1, Kind: "migrate", Dom: dom("ha1"), Host: "host-a", Dest: "host-b", Start: at(0.2), End: at(0.9), Done: true}}, nil, nil, ""},
		{"a partition of that host", nil, []*fault{{Kind: "freeze-long", Host: "host-a", Member: -1, Start: at(-5), End: at(0.5)}}, nil, ""},
		{"a partition long over", nil, []*fault{{Kind: "freeze-long", Host: "host-a", Member: -1, Start: at(-60), End: at(-50)}}, nil, "false-fence"},
		{"a fault on another host", nil, []*fault{{Kind: "power-loss", Host: "host-b", Member: -1, Start: at(0), End: at(2)}}, nil, "false-fence"},
		{"an etcd leader kill", nil, []*fault{{Kind: "etcd-leader-kill", Member: 1, Start: at(0), End: at(2)}}, nil, "false-fence"},
		{"a reset of that host", nil, nil, []hostEvent{{Host: "host-a", At: at(0.95)}}, ""},
		{"a kill during the scan that missed it", nil, []*fault{{Kind: "qemu-kill", Host: "host-a", Member: -1, Start: at(1.0001), End: at(1.0002)}}, nil, ""},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			s := scans(t, sc...)
			in := input()
			in.spans, in.pairs = s.snapshot()
			in.ops, in.faults, in.resets = tc.ops, tc.faults, tc.resets
			if got := kinds(in.checkFalseFences()); got != tc.want {
				t.Errorf("violations %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHookBlocking(t *testing.T) {
	slow := op{ID: 1, Kind: "start", Dom: dom("vm2"), Host: "host-b", Start: at(0), End: at(9), Done: true, Class: "refused"}
	fast := op{ID: 2, Kind: "start", Dom: dom("vm2"), Host: "host-b", Start: at(0), End: at(6.5), Done: true, Class: "refused"}
	in := input()
	in.ops = []op{slow, fast}
	if got := kinds(in.checkHookBlocking()); got != "hook-block" {
		t.Errorf("a 9 s start with a 5 s hook timeout: %q", got)
	}
	in.faults = []*fault{{Kind: "freeze-long", Host: "host-b", Member: -1, Start: at(-1), End: at(10)}}
	if got := kinds(in.checkHookBlocking()); got != "hook-block" {
		t.Errorf("a partition does not excuse a blocked libvirtd: %q", got)
	}
	in.faults = []*fault{{Kind: "libvirtd-stop", Host: "host-b", Member: -1, Start: at(1), End: at(4)}}
	if got := kinds(in.checkHookBlocking()); got != "" {
		t.Errorf("a stopped libvirtd excuses a slow start: %q", got)
	}
	in.faults, in.period = nil, 100*time.Millisecond
	in.stalls = []stall{{From: at(2), To: at(4.5)}}
	if got := kinds(in.checkHookBlocking()); got != "" {
		t.Errorf("a 9 s start during a 2.5 s stall of the machine: %q", got)
	}
	in.stalls = []stall{{From: at(2), To: at(3)}}
	if got := kinds(in.checkHookBlocking()); got != "hook-block" {
		t.Errorf("a 9 s start during a 1 s stall of the machine: %q", got)
	}
}

func TestRefusals(t *testing.T) {
	uuid := dom("vm2").UUID
	h := &history{keys: map[string][]version{
		"/virtlease/domains/" + uuid: {
			{At: at(0), Val: []byte(`{"host":"host-a","uuid":"` + uuid + `","name":"vm2","lease":"1"}`)},
			{At: at(10)}, // deleted
			{At: at(20), Val: []byte(`{"host":"host-c","uuid":"` + uuid + `","name":"vm2","lease":"2"}`)},
		},
		"/virtlease/disks/nbd%2F127.0.0.1:23792%2Fvm2": {
			{At: at(0), Val: []byte(`{"host":"host-a","uuid":"` + uuid + `","name":"vm2","lease":"1"}`)},
		},
	}}
	msg := func(host string) string {
		return "error: Failed to start domain 'vm2' error: Hook script execution failed: internal error: Child process (… /etc/libvirt/hooks/qemu vm2 prepare begin -) unexpected exit status 1: virtlease: domain vm2 (" +
			uuid + ") is running on host " + host + " since 2026-01-01T12:00:00Z; refusing to start it here"
	}
	disk := "… virtlease: disk nbd/127.0.0.1:23792/vm2 is in use by domain vm2 (" + uuid + ") on host host-a since 2026-01-01T12:00:00Z; refusing to start vm2-ha here"
	cases := []struct {
		name string
		o    op
		want string
	}{
		{"true holder", op{Start: at(5), End: at(5.2), Msg: msg("host-a")}, ""},
		{"wrong holder", op{Start: at(5), End: at(5.2), Msg: msg("host-b")}, "refusal"},
		{"holder just gone", op{Start: at(11), End: at(11.5), Msg: msg("host-a")}, ""},
		{"holder long gone", op{Start: at(15), End: at(15.5), Msg: msg("host-a")}, "refusal"},
		{"the next holder", op{Start: at(25), End: at(25.2), Msg: msg("host-c")}, ""},
		{"disk holder", op{Start: at(5), End: at(5.2), Msg: disk}, ""},
		{"disk holder of another host", op{Start: at(5), End: at(5.2), Msg: strings.Replace(disk, "on host host-a", "on host host-c", 1)}, "refusal"},
		{"a refusal naming nobody", op{Start: at(5), End: at(5.2), Msg: "virtlease: cannot start vm2: no live virtlease session on this host"}, ""},
		{"disk of a migration that was never recorded", op{Start: at(5), End: at(5.2), Msg: "virtlease: disk nbd/127.0.0.1:23792/vm2 belongs to domain " + uuid + ", being migrated from host host-a to host host-b since 2026-01-01T12:00:00Z; refusing to start vm2-ha here"}, "refusal"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			o := tc.o
			o.ID, o.Kind, o.Dom, o.Host, o.Done, o.Class = 1, "start", dom("vm2"), "host-b", true, "refused"
			in := input()
			in.hist, in.ops = h, []op{o}
			if got := kinds(in.checkRefusals()); got != tc.want {
				t.Errorf("violations %q, want %q (%v)", got, tc.want, in.checkRefusals())
			}
		})
	}
}

func TestDist(t *testing.T) {
	if got := dist(nil); got != "-" {
		t.Errorf("dist(nil) = %q", got)
	}
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*100*time.Millisecond)
	}
	if got, want := dist(ds), "0.10s / 5.00s / 9.90s / 10.00s (n=100)"; got != want {
		t.Errorf("dist = %q, want %q", got, want)
	}
}

func TestStatsChargeTheLatestFault(t *testing.T) {
	// ha1 on host-a from 0 to 3 s; host-a partitioned at 0.5 s (its fence
	// at 2.5 s would take the guest), then powered off at 2.9 s: the guest
	// goes with the power loss, after the partition's fence point.
	var sc [][]string
	for i := 0; i < 30; i++ {
		sc = append(sc, []string{"ha1 host-a 7"})
	}
	sc = append(sc, []string{}, []string{}, []string{}, []string{"ha1 host-b 8"})
	s := scans(t, sc...)
	in := input()
	in.spans, in.pairs = s.snapshot()
	freeze := &fault{Kind: "freeze-long", Host: "host-a", Member: -1, Start: at(0.5), End: at(2.8)}
	power := &fault{Kind: "power-loss", Host: "host-a", Member: -1, Start: at(2.9), End: at(5)}
	in.faults = []*fault{freeze, power}
	st := in.stats()
	if st.lost != 1 || len(st.fenceTimes) != 0 {
		t.Errorf("lost %d, fence times %v: want 1 lost to the power loss, no partition fence", st.lost, st.fenceTimes)
	}
	if len(st.restartTimes) != 1 || st.restartTimes[0] != at(3.3).Sub(at(2.9)) {
		t.Errorf("restart times %v, want [400ms] from the power loss", st.restartTimes)
	}
}
