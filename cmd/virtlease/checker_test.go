//go:build e2e

// The no-overlap checker: a sampler that scans /proc every few tens of
// milliseconds for QEMU processes of the lab's hosts and records, per
// process, the samples it was seen alive in. At the end it reports every
// time two hosts ran the same domain (UUID) at once, and every time two
// processes used the same disk at once (vm1 and vm1-copy share a file), except
// inside declared live-migration windows of that domain (where the
// destination's QEMU exists, paused, until the source's is gone).
//
// An overlap is reported only when both processes were seen alive in the
// same scan: that is certain (up to the few milliseconds a scan takes), and
// a stop on one host followed by a start on another within one sampling
// period is not mistaken for one. A shorter overlap between two scans can be
// missed, which is why the sampling period is kept short and its largest gap
// is reported.
package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtlease/virtlease/scripts/procscan"
)

// ckProc is one QEMU process seen in one scan.
type ckProc = procscan.Proc

// ckSpan is one process's life as the checker saw it: alive from scan First
// to scan Last (indices into the sample times).
type ckSpan struct {
	ckProc
	First, Last int
}

// ckWindow is a declared live migration of UUID: the two hosts may run it
// at once between From and To.
type ckWindow struct {
	UUID     string
	From, To time.Time
}

// OverlapChecker samples /proc and checks that no domain or disk was ever in
// use on two hosts (or by two processes) at once.
type OverlapChecker struct {
	hosts    func() map[string]string // PID namespace ("pid:[…]") → host name
	disks    map[string]string        // UUID → disk ID; domains sharing a disk share an ID
	interval time.Duration
	procDir  string

	cancel  context.CancelFunc
	done    chan struct{}
	hostMap map[string]string // the sampler's copy of hosts()
	checked bool              // Check ran

	mu      sync.Mutex
	times   []time.Time        // time of each scan
	scanDur time.Duration      // the longest scan
	spans   map[ckProc]*ckSpan // by process (pid + start time)
	order   []*ckSpan          // spans in order of first sight
	windows []ckWindow         // declared migrations
	errs    []string           // sampler problems
}

// NewOverlapChecker returns a checker (not yet sampling). hosts maps each
// lab host's PID namespace to its name; processes in any other namespace
// (the machine's, another lab's) are ignored. disks maps a domain UUID to
// its disk ID (domains without an entry are only checked by UUID).
func NewOverlapChecker(hosts func() map[string]string, disks map[string]string, interval time.Duration) *OverlapChecker {
	d := map[string]string{}
	for u, id := range disks {
		d[strings.ToLower(u)] = id
	}
	return &OverlapChecker{hosts: hosts, disks: d, interval: interval, procDir: "/proc",
		spans: map[ckProc]*ckSpan{}}
}

// labDisks is the disk of each lab domain (scripts/lab.sh): vm1 and vm1-copy
// use the same qcow2 file.
var labDisks = map[string]string{
	labVM1UUID:     "file:shared/vm1.qcow2",
	labVM1CopyUUID: "file:shared/vm1.qcow2",
	labVM2UUID:     "nbd:vm2",
}

// StartOverlapChecker starts a checker on lab l's hosts, sampling every
// 50 ms until the test ends; the test fails on any overlap outside the
// migration windows declared with Migrating. Call Check to assert earlier.
func StartOverlapChecker(t *testing.T, l *Lab) *OverlapChecker {
	t.Helper()
	c := NewOverlapChecker(l.hostOfPidNS, labDisks, 50*time.Millisecond)
	if len(l.hostOfPidNS()) != len(l.Hosts) {
		t.Fatalf("checker: the PID namespaces of the lab hosts are not all known: %v", l.hostOfPidNS())
	}
	c.Start()
	t.Cleanup(func() {
		if !c.checked {
			c.Check(t)
		}
	})
	return c
}

// Start begins sampling in a goroutine.
func (c *OverlapChecker) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	c.hostMap = c.hosts()
	go func() {
		defer close(c.done)
		tick := time.NewTicker(c.interval)
		defer tick.Stop()
		for {
			// Read every time: cheap, and a host that comes up (or back)
			// with a new namespace is picked up at once.
			if m := c.hosts(); len(m) > 0 {
				c.hostMap = m
			}
			t0 := time.Now()
			procs, err := procscan.Scan(c.procDir, c.hostMap)
			c.observe(t0, time.Since(t0), procs, err)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// Stop ends sampling (after one last scan); it may be called more than once.
func (c *OverlapChecker) Stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
	c.cancel = nil
}

// Migrating declares a live migration of uuid beginning now; call the
// returned function when it has ended (virsh migrate returned). The window
// extends 300 ms past that call: libvirt may reap the source's QEMU just
// after it answers.
func (c *OverlapChecker) Migrating(uuid string) (end func()) {
	from := time.Now()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.windows = append(c.windows, ckWindow{UUID: strings.ToLower(uuid), From: from, To: time.Now().Add(300 * time.Millisecond)})
	}
}

// observe records one scan.
func (c *OverlapChecker) observe(at time.Time, took time.Duration, procs []ckProc, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errs = append(c.errs, err.Error())
		return
	}
	i := len(c.times)
	c.times = append(c.times, at)
	c.scanDur = max(c.scanDur, took)
	for _, p := range procs {
		s := c.spans[p]
		if s == nil {
			s = &ckSpan{ckProc: p, First: i}
			c.spans[p] = s
			c.order = append(c.order, s)
		}
		s.Last = i
	}
}

// ckOverlap is two processes seen alive together.
type ckOverlap struct {
	Kind     string // "domain" (same UUID) or "disk" (same disk, another domain or host)
	What     string // the UUID or disk ID
	A, B     ckSpan
	From, To time.Time // first and last scan that saw both
	Allowed  bool      // inside a declared migration window
}

func (o ckOverlap) String() string {
	allowed := ""
	if o.Allowed {
		allowed = " (inside a declared migration window)"
	}
	return fmt.Sprintf("%s %s in use at once by %s pid %d (%s) and %s pid %d (%s) from %s to %s (%s)%s",
		o.Kind, o.What, o.A.Host, o.A.PID, o.A.UUID, o.B.Host, o.B.PID, o.B.UUID,
		o.From.Format("15:04:05.000"), o.To.Format("15:04:05.000"), o.To.Sub(o.From).Round(time.Millisecond), allowed)
}

// CheckReport is what the checker found.
type CheckReport struct {
	Samples  int
	MaxGap   time.Duration // the longest time between two scans
	MaxScan  time.Duration // the longest scan
	Spans    []ckSpan
	Overlaps []ckOverlap
	Errors   []string // the sampler could not scan /proc
}

// Problems lists what must fail a test: overlaps outside migration windows,
// sampler errors, and a checker that did not sample at all.
func (r CheckReport) Problems() []string {
	var out []string
	for _, e := range r.Errors {
		out = append(out, "checker: scanning /proc: "+e)
	}
	if r.Samples < 2 {
		out = append(out, fmt.Sprintf("checker: only %d scans of /proc: nothing was checked", r.Samples))
	}
	for _, o := range r.Overlaps {
		if !o.Allowed {
			out = append(out, "OVERLAP: "+o.String())
		}
	}
	return out
}

// Report computes the overlaps seen so far (sampling may go on).
func (c *OverlapChecker) Report() CheckReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := CheckReport{Samples: len(c.times), MaxScan: c.scanDur, Errors: slices.Clone(c.errs)}
	for i := 1; i < len(c.times); i++ {
		r.MaxGap = max(r.MaxGap, c.times[i].Sub(c.times[i-1]))
	}
	for _, s := range c.order {
		r.Spans = append(r.Spans, *s)
	}
	for i, a := range c.order {
		for _, b := range c.order[i+1:] {
			if a.PID == b.PID && a.Start == b.Start {
				continue
			}
			lo, hi := max(a.First, b.First), min(a.Last, b.Last)
			if lo > hi {
				continue // never seen alive in the same scan
			}
			o := ckOverlap{A: *a, B: *b, From: c.times[lo], To: c.times[hi]}
			switch {
			case a.UUID == b.UUID:
				o.Kind, o.What = "domain", a.UUID
				// A live migration between two hosts, inside its window.
				o.Allowed = a.Host != b.Host && c.inWindow(a.UUID, o.From, o.To)
			case c.disks[a.UUID] != "" && c.disks[a.UUID] == c.disks[b.UUID]:
				o.Kind, o.What = "disk", c.disks[a.UUID]
			default:
				continue
			}
			r.Overlaps = append(r.Overlaps, o)
		}
	}
	return r
}

func (c *OverlapChecker) inWindow(uuid string, from, to time.Time) bool {
	for _, w := range c.windows {
		if w.UUID == uuid && !from.Before(w.From) && !to.After(w.To) {
			return true
		}
	}
	return false
}

// Check stops sampling and fails t for every problem; it logs a summary.
func (c *OverlapChecker) Check(t *testing.T) CheckReport {
	t.Helper()
	c.Stop()
	c.checked = true
	r := c.Report()
	allowed := 0
	for _, o := range r.Overlaps {
		if o.Allowed {
			allowed++
		}
	}
	perHost := map[string]int{}
	for _, s := range r.Spans {
		perHost[s.Host]++
	}
	t.Logf("checker: %d scans, longest gap %s, longest scan %s; QEMU processes seen per host %v; %d overlap(s) inside migration windows, %d outside",
		r.Samples, r.MaxGap.Round(time.Millisecond), r.MaxScan.Round(time.Millisecond), perHost, allowed, len(r.Overlaps)-allowed)
	for _, p := range r.Problems() {
		t.Error(p)
	}
	return r
}

// ---------------------------------------------------------------- self-tests

// TestE2ECheckerSynthetic feeds the checker made-up scans: it must report
// the same UUID on two hosts, a shared disk used by two domains (on two
// hosts and on one), and an overlap that outlasts its migration window; and
// it must not report sequential runs or an overlap inside a window.
func TestE2ECheckerSynthetic(t *testing.T) {
	const u1, u1c, u2 = labVM1UUID, labVM1CopyUUID, labVM2UUID
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * 50 * time.Millisecond) }
	p := func(pid int, uuid, host string) ckProc {
		return ckProc{PID: pid, Start: uint64(pid) * 7, UUID: uuid, Host: host}
	}
	type scan []ckProc
	cases := []struct {
		name    string
		scans   []scan
		windows []ckWindow
		want    []string // substrings of the problems, in order; none: no problem
	}{
		{"sequential runs on two hosts", []scan{{p(1, u2, "host-a")}, {p(1, u2, "host-a")}, {}, {p(2, u2, "host-b")}}, nil, nil},
		{"handover between two scans", []scan{{p(1, u2, "host-a")}, {p(2, u2, "host-b")}}, nil, nil},
		{"same UUID on two hosts", []scan{{p(1, u2, "host-a")}, {p(1, u2, "host-a"), p(2, u2, "host-b")}, {p(2, u2, "host-b")}},
			nil, []string{"OVERLAP: domain " + u2 + " in use at once by host-a pid 1"}},
		{"shared disk on two hosts", []scan{{}, {p(1, u1, "host-a"), p(2, u1c, "host-b")}}, nil,
			[]string{"OVERLAP: disk file:shared/vm1.qcow2 in use at once by host-a pid 1 (" + u1 + ") and host-b pid 2 (" + u1c + ")"}},
		{"shared disk on one host", []scan{{p(1, u1, "host-a"), p(2, u1c, "host-a")}, {}}, nil, []string{"OVERLAP: disk file:shared/vm1.qcow2"}},
		{"migration inside its window", []scan{{p(1, u2, "host-a")}, {p(1, u2, "host-a"), p(2, u2, "host-b")}, {p(2, u2, "host-b")}},
			[]ckWindow{{UUID: u2, From: at(1), To: at(1)}}, nil},
		{"overlap outlasting the window", []scan{{p(1, u2, "host-a"), p(2, u2, "host-b")}, {p(1, u2, "host-a"), p(2, u2, "host-b")}},
			[]ckWindow{{UUID: u2, From: at(0), To: at(0)}}, []string{"OVERLAP: domain"}},
		{"window of another domain", []scan{{p(1, u2, "host-a"), p(2, u2, "host-b")}, {}},
			[]ckWindow{{UUID: u1, From: at(0), To: at(5)}}, []string{"OVERLAP: domain"}},
		{"pid reused by another start", []scan{{p(1, u2, "host-a")}, {{PID: 1, Start: 99, UUID: u2, Host: "host-a"}}}, nil, nil},
		{"no scans", nil, nil, []string{"only 0 scans"}},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			c := NewOverlapChecker(func() map[string]string { return nil }, labDisks, time.Millisecond)
			for i, s := range tc.scans {
				c.observe(at(i), time.Millisecond, s, nil)
			}
			c.windows = tc.windows
			got := c.Report().Problems()
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d matching %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("problem %q does not contain %q", got[i], tc.want[i])
				}
			}
		})
	}
}

// TestE2ECheckerLive runs the real sampler against real processes: two
// processes carrying "-uuid U" on their command lines, each in its own new
// PID namespace (two fake hosts). Alive together they must be reported;
// one after the other they must not. No lab needed, but root (unshare -p).
func TestE2ECheckerLive(t *testing.T) {
	if os.Geteuid() != 0 {
		labPrereq(t, "needs root (unshare -p)")
	}
	const uuid = "5d0e1a5e-0000-4000-8000-0000000000ff"
	hosts := map[string]string{}
	var mu sync.Mutex
	spawn := func(host string) *os.Process {
		t.Helper()
		// sh stays the process (no exec of sleep): its argv keeps "-uuid".
		// It is unshare's child, PID 1 of the new namespace; killing unshare
		// kills it (--kill-child).
		p, err := os.StartProcess("/usr/bin/unshare", []string{"unshare", "-p", "--fork", "--kill-child", "--", "/bin/sh", "-c", "sleep 30; :", "fakeqemu", "-uuid", uuid},
			&os.ProcAttr{Files: []*os.File{nil, nil, nil}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Kill(); p.Wait() })
		self, _ := os.Readlink("/proc/self/ns/pid")
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			var child int
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.Pid, p.Pid))
			fmt.Sscan(string(b), &child)
			args, _ := labReadCmdline(child)
			ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", child))
			if err == nil && ns != self && slices.Contains(args, "-uuid") {
				mu.Lock()
				hosts[ns] = host
				mu.Unlock()
				return p
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("%s: the fake QEMU did not enter its own PID namespace", host)
		return nil
	}
	hostMap := func() map[string]string {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(hosts)
	}
	seen := func(c *OverlapChecker, host string, alive bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			procs, err := procscan.Scan("/proc", hostMap())
			if err != nil {
				t.Fatal(err)
			}
			found := slices.ContainsFunc(procs, func(p ckProc) bool { return p.Host == host })
			if found == alive {
				time.Sleep(3 * c.interval) // let the sampler see it too
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("%s: fake QEMU alive=%v not seen", host, !alive)
	}

	// One after the other: no overlap.
	c := NewOverlapChecker(hostMap, nil, 20*time.Millisecond)
	a := spawn("fake-a")
	c.Start()
	seen(c, "fake-a", true)
	a.Kill()
	a.Wait()
	seen(c, "fake-a", false)
	spawn("fake-b")
	seen(c, "fake-b", true)
	c.Stop()
	if p := c.Report().Problems(); len(p) != 0 {
		t.Errorf("sequential runs reported: %q", p)
	}

	// Together: an overlap.
	c = NewOverlapChecker(hostMap, nil, 20*time.Millisecond)
	c.Start()
	spawn("fake-c")
	seen(c, "fake-c", true)
	c.Stop()
	r := c.Report()
	if p := r.Problems(); len(p) != 1 || !strings.Contains(p[0], "OVERLAP: domain "+uuid) {
		t.Errorf("two fake hosts running %s together: problems %q, want one overlap", uuid, p)
	}
	t.Logf("live checker: %d scans, longest gap %s, longest scan %s", r.Samples, r.MaxGap, r.MaxScan)
}
