// Command chaos is virtlease's fault campaign: on a running lab
// (scripts/lab.sh, best with VL_LAB_ETCD_MEMBERS=3 and VL_LAB_HWDOG=1) it
// runs a random workload — starts of random domains on random hosts, clean
// stops, live migrations, HA and non-HA guests, two domains sharing a disk —
// while it injects one fault per cycle, drawn from the seed: a host's link
// to etcd frozen below or above the TTL, or slowed; its watchdog or libvirtd
// killed or stopped; the etcd leader killed or stopped; an etcd member
// restarted; a host's power lost. A checker that knows nothing of
// virtlease's code watches from outside (a /proc sampler, the operations'
// history, an etcd watch) and fails the run when a guest or a disk ran on
// two hosts at once outside a live migration, a refusal named a host that
// did not hold the guest, keys or HA guests are wrong once all is quiet,
// a guest died on a host no fault touched, or a start blocked libvirtd past
// the hook's deadline. Run it with scripts/chaos.sh.
//
//	chaos --lab-root ROOT [--port P] [--seed N] [--cycles N]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// campaign is one run.
type campaign struct {
	lab       *lab
	seed      uint64
	cycles    int
	domains   []*domain
	byUUID    map[string]*domain
	sampler   *sampler
	cli       *clientv3.Client
	hist      *history
	work      *workload
	onlyKinds map[string]bool
	settleMax time.Duration
	sample    time.Duration
	strict    bool
	// hwdog: the lab's hosts have the stand-in hardware watchdog device.
	// Without it the campaign tests self-fencing alone: a watchdog away
	// past its fence point leaves guests unprotected (not promised), so
	// watchdog-kill and watchdog-stop end before it.
	hwdog    bool
	faultRng *rand.Rand
	out      io.Writer

	mu         sync.Mutex
	t0         time.Time
	faults     []*fault
	events     []event
	logf       *os.File
	violations []violation
	seen       map[string]bool
}

type event struct {
	At   time.Time
	Text string
}

// event logs one line of the campaign's history (kept for excerpts).
func (c *campaign) event(format string, args ...any) {
	e := event{At: time.Now(), Text: fmt.Sprintf(format, args...)}
	c.mu.Lock()
	c.events = append(c.events, e)
	if c.logf != nil {
		fmt.Fprintf(c.logf, "%s %s\n", clock(e.At), e.Text)
	}
	c.mu.Unlock()
}

func (c *campaign) printf(format string, args ...any) {
	fmt.Fprintf(c.out, format, args...)
	c.event("| "+strings.TrimRight(format, "\n"), args...)
}

func main() {
	seed := flag.Uint64("seed", 0, "seed of the faults and the workload (default: from the clock)")
	cycles := flag.Int("cycles", 15, "fault cycles")
	root := flag.String("lab-root", os.Getenv("VL_LAB_ROOT"), "the lab's VL_LAB_ROOT")
	port := flag.Int("port", 0, "the lab's VL_LAB_PORT (default: from ROOT/lab.env)")
	labsh := flag.String("lab-sh", "", "scripts/lab.sh (default: next to this program's source, or ./scripts/lab.sh)")
	logPath := flag.String("log", "", "the campaign's event log (default ROOT/chaos.log)")
	markdown := flag.String("markdown", "", "also write the final table as Markdown to this file")
	sample := flag.Duration("sample", 75*time.Millisecond, "/proc sampling period (50–100 ms)")
	only := flag.String("only", "", "comma-separated fault kinds to draw from (default: all)")
	settleMax := flag.Duration("settle-max", 60*time.Second, "longest wait for the lab to recover after a fault")
	strictResets := flag.Bool("strict-resets", false, "count a hardware watchdog reset of a host whose watchdog process ran (a partition, a libvirtd or etcd fault) as a violation")
	flag.Parse()
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano()%1_000_000_000) + 1
	}
	fmt.Printf("chaos: seed %d (rerun: --seed %d), %d cycles\n", *seed, *seed, *cycles)
	if *root == "" {
		*root = "/var/tmp/virtlease-lab"
	}
	if *labsh == "" {
		*labsh = "scripts/lab.sh"
		if _, err := os.Stat(*labsh); err != nil {
			if exe, err := os.Executable(); err == nil {
				*labsh = filepath.Join(filepath.Dir(exe), "lab.sh")
			}
		}
	}
	l, err := openLab(*root, *port, *labsh)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	c := &campaign{lab: l, seed: *seed, cycles: *cycles, out: os.Stdout, settleMax: *settleMax, sample: *sample, strict: *strictResets, seen: map[string]bool{}}
	if *only != "" {
		c.onlyKinds = map[string]bool{}
		for _, k := range strings.Split(*only, ",") {
			ok := false
			for _, fk := range faultKinds {
				ok = ok || fk.kind == k
			}
			if !ok {
				fmt.Fprintf(os.Stderr, "chaos: --only: unknown fault kind %q\n", k)
				os.Exit(2)
			}
			c.onlyKinds[k] = true
		}
	}
	if *logPath == "" {
		*logPath = filepath.Join(l.root, "chaos.log")
	}
	if c.logf, err = os.Create(*logPath); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	defer c.logf.Close()
	code := c.run(*markdown)
	os.Exit(code)
}

func (c *campaign) run(markdown string) int {
	l := c.lab
	c.t0 = time.Now()
	c.printf("chaos: lab %s, %d hosts, %d etcd member(s); ttl %s, renew %s, margin %s, hook timeout %s; log %s\n",
		l.root, len(l.hosts), l.members, l.ttl, l.renew, l.margin, l.hookTimeout, c.logf.Name())
	if l.members < 3 {
		c.printf("chaos: warning: %d etcd member(s): the etcd faults stop the whole cluster (VL_LAB_ETCD_MEMBERS=3)\n", l.members)
	}
	c.hwdog = fileExists(filepath.Join(l.hostDir(l.hosts[0]), "run", "hwdog.fifo"))
	if !c.hwdog {
		c.printf("chaos: no stand-in hardware watchdog (VL_LAB_HWDOG=0): self-fencing alone; watchdog-kill and watchdog-stop end before the fence point (%s after the kill)\n",
			l.noDeviceHoldMax())
	}
	r := l.sh(15*time.Second, "etcd-endpoints")
	if r.Err != nil {
		c.printf("chaos: lab.sh etcd-endpoints: %v %s\n", r.Err, r.Stderr)
		return 2
	}
	eps := strings.Split(strings.TrimSpace(r.Stdout), ",")
	var err error
	if c.cli, err = dialEtcd(eps); err != nil {
		c.printf("chaos: etcd: %v\n", err)
		return 2
	}
	defer c.cli.Close()
	if c.hist, err = startHistory(c.cli, "/virtlease/"); err != nil {
		c.printf("chaos: %v\n", err)
		return 2
	}
	defer c.hist.stop()
	c.domains = campaignDomains(l.port + 2)
	c.byUUID = map[string]*domain{}
	disks := map[string][]string{}
	for _, d := range c.domains {
		c.byUUID[d.UUID] = d
		disks[d.UUID] = d.Disks
	}
	if err := c.defineDomains(); err != nil {
		c.printf("chaos: %v\n", err)
		return 2
	}
	c.sampler = newSampler(l.pidNS, disks, c.sample)
	c.sampler.start()
	if !c.waitHealthy(30 * time.Second) {
		c.printf("chaos: the lab is not healthy before the first fault: %s\n", c.unhealthy())
		return 2
	}
	c.work = newWorkload(c, c.seed^0x9e3779b97f4a7c15)
	c.work.start()
	time.Sleep(3 * time.Second) // some guests run before the first fault
	rng := rand.New(rand.NewPCG(c.seed, 0x6661756c7473))
	c.faultRng = rng
	c.printf("%-7s %-6s %-50s | %-27s | %s\n", "cycle", "t", "fault", "workload meanwhile", "effect on the faulted host")
	for i := 1; i <= c.cycles; i++ {
		c.cycle(rng, i)
	}
	c.printf("chaos: faults over; quiescing (every fault reverted, workload stopped)\n")
	c.work.stop()
	c.healAll()
	q := c.quiesce()
	c.sampler.waitScans(2)
	c.sampler.stop()
	in := c.checkInput(true)
	c.addViolations(in.all())
	c.addViolations(q)
	if c.strict {
		for _, r := range in.stats().liveResets {
			c.addViolations([]violation{{Key: "live-reset/" + r, Kind: "reset", At: time.Now(), Msg: "hardware watchdog reset of a host whose watchdog process ran: " + r}})
		}
	}
	return c.report(in, markdown)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// cycle runs one fault and the recovery after it, then prints a line.
func (c *campaign) cycle(rng *rand.Rand, i int) {
	f := c.drawFault(rng, i)
	opsBefore := len(c.work.snapshot())
	c.mu.Lock()
	c.faults = append(c.faults, f)
	c.mu.Unlock()
	c.event("cycle %d: %s", i, f)
	c.inject(f)
	settled, note := c.settle(f)
	// let the effects show before the next fault (a short gap, drawn too)
	time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)

	in := c.checkInput(false)
	newV := c.addViolations(in.all())
	ops := c.work.snapshot()[opsBefore:]
	starts, ok, ref, stops, migs := 0, 0, 0, 0, 0
	for _, o := range ops {
		switch o.Kind {
		case "start":
			starts++
			if o.Class == "ok" {
				ok++
			} else if o.Class == "refused" {
				ref++
			}
		case "stop":
			stops++
		case "migrate":
			migs++
		}
	}
	lost, back := c.faultEffect(in, f)
	if note != "" {
		note = " " + note
	}
	viol := ""
	if len(newV) > 0 {
		viol = fmt.Sprintf(" | %d VIOLATION(S)", len(newV))
	}
	c.printf("%-7s %-6s %-50s | start %2d (%2d ok %2d ref) stop %d mig %d | %s, HA back after %s; settled in %.0fs%s%s\n",
		fmt.Sprintf("%d/%d", i, c.cycles), mmss(time.Since(c.t0)), f.String(),
		starts, ok, ref, stops, migs, lost, back, settled.Seconds(), viol, note)
	for _, v := range newV {
		c.printf("        VIOLATION [%s] %s\n", v.Kind, v.Msg)
	}
}

func mmss(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// faultEffect describes what fault f cost: the guests lost on its host and
// how long the HA ones took to come back.
func (c *campaign) faultEffect(in *checkInput, f *fault) (string, string) {
	sub := *in
	sub.faults = []*fault{f}
	st := sub.stats()
	lost := fmt.Sprintf("%d lost", st.lost)
	if len(st.fenceTimes) > 0 {
		lost += fmt.Sprintf(" in %.1fs", st.fenceTimes[0].Seconds())
	}
	var back []string
	for _, d := range st.restartTimes {
		back = append(back, fmt.Sprintf("%.1fs", d.Seconds()))
	}
	if len(back) == 0 {
		return lost, "-"
	}
	return lost, strings.Join(back, " ")
}

// settle waits until the lab has recovered from f: every host healthy
// (watchdog and libvirtd running, session ok), every etcd member running,
// every HA guest that should run running once. It repairs what a fault
// left behind (a host reset after the fault ended).
func (c *campaign) settle(f *fault) (time.Duration, string) {
	start := time.Now()
	repaired := map[string]bool{}
	booted := map[string]time.Time{}
	lastNote := start
	for time.Since(start) < c.settleMax {
		missing := c.haMissing()
		if c.healthy() && len(missing) == 0 {
			return time.Since(start), ""
		}
		if time.Since(lastNote) > 10*time.Second {
			lastNote = time.Now()
			c.event("settle: still waiting after %s: %s; HA guests not running once: %v", time.Since(start).Round(time.Second), c.unhealthy(), missing)
		}
		// The fault is over: a daemon missing now was taken by a reset
		// of the stand-in hardware watchdog. The host reboots.
		for _, h := range c.lab.hosts {
			if (c.lab.watchdogPID(h) == 0 || len(c.lab.libvirtdPIDs(h)) == 0) && time.Since(booted[h]) > 5*time.Second {
				booted[h] = time.Now()
				c.event("settle: %s lost its daemons (a reset?): booting it", h)
				if err := c.boot(h); err != nil {
					c.event("settle: boot %s: %v", h, err)
				}
			}
		}
		if time.Since(start) > 15*time.Second {
			for _, h := range c.lab.hosts {
				if !c.lab.hostHealthy(h) && !repaired[h] {
					repaired[h] = true
					c.event("settle: %s still unhealthy after 15 s (%s): repairing", h, c.unhealthy())
					c.repair(h)
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	n := fmt.Sprintf("[not settled after %s: %s; HA missing %v]", c.settleMax, c.unhealthy(), c.haMissing())
	c.event("settle: %s", n)
	return time.Since(start), n
}

func (c *campaign) healthy() bool {
	for _, h := range c.lab.hosts {
		if !c.lab.hostHealthy(h) {
			return false
		}
	}
	for m := 0; m < c.lab.members; m++ {
		p := c.lab.memberPID(m)
		if p == 0 || procState(p) == 'T' {
			return false
		}
	}
	return true
}

func (c *campaign) unhealthy() string {
	var out []string
	for _, h := range c.lab.hosts {
		if !c.lab.hostHealthy(h) {
			out = append(out, fmt.Sprintf("%s (watchdog %d, libvirtd %v, session %q)", h, c.lab.watchdogPID(h), c.lab.libvirtdPIDs(h), c.lab.sessionState(h)))
		}
	}
	for m := 0; m < c.lab.members; m++ {
		if p := c.lab.memberPID(m); p == 0 || procState(p) == 'T' {
			out = append(out, fmt.Sprintf("etcd member %d", m))
		}
	}
	if len(out) == 0 {
		return "all healthy"
	}
	return strings.Join(out, ", ")
}

func (c *campaign) waitHealthy(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c.healthy() {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}

// haMissing lists the HA guests whose intent is running that do not run
// exactly once (a guest whose disk another domain holds is left out: it
// cannot run).
func (c *campaign) haMissing() []string {
	kv, err := getPrefix(c.cli, "/virtlease/")
	if err != nil {
		return []string{"etcd: " + err.Error()}
	}
	run := c.sampler.running()
	var out []string
	for _, d := range c.domains {
		if !d.HA {
			continue
		}
		in, ok := decode[intentRec](kv["/virtlease/intents/"+d.UUID])
		if !ok || in.Want != "running" {
			continue
		}
		if n := len(run[d.UUID]); n != 1 && !c.diskBlocked(d, run) {
			out = append(out, fmt.Sprintf("%s×%d", d.Name, n))
		}
	}
	return out
}

// diskBlocked: another domain that shares a disk with d runs.
func (c *campaign) diskBlocked(d *domain, run map[string][]string) bool {
	for _, o := range c.domains {
		if o != d && sharedDisk(o.Disks, d.Disks) != "" && len(run[o.UUID]) > 0 {
			return true
		}
	}
	return false
}

// repair brings host h back whatever state a fault left it in.
func (c *campaign) repair(h string) {
	l := c.lab
	l.sh(30*time.Second, "thaw", h)
	if l.sh(60*time.Second, "heal", h).Err != nil {
		c.event("repair %s: heal failed", h)
	}
	if w := l.watchdogPID(h); w != 0 && procState(w) == 'T' {
		signal([]int{w}, 18) // SIGCONT
	}
	for _, p := range l.libvirtdPIDs(h) {
		if procState(p) == 'T' {
			signal([]int{p}, 18)
		}
	}
	if err := c.boot(h); err != nil {
		c.event("repair %s: %v", h, err)
	}
}

// healAll ends every fault: thaws and heals every host's link, resumes and
// starts every daemon and etcd member.
func (c *campaign) healAll() {
	for m := 0; m < c.lab.members; m++ {
		if p := c.lab.memberPID(m); p == 0 {
			c.etcdStart(m)
		} else if procState(p) == 'T' {
			c.lab.sh(15*time.Second, "etcd-cont", strconv.Itoa(m))
		}
	}
	for _, h := range c.lab.hosts {
		if !c.lab.hostHealthy(h) {
			c.repair(h)
		}
	}
}

// quiesce waits TTL + a few seconds after the last fault, then until etcd
// and the hosts agree (or settleMax passes), and returns what still
// disagrees: keys naming a guest that does not run there, a running guest
// without its keys, leftover migration or unfenced records, an HA guest
// whose intent is running that does not run exactly once.
func (c *campaign) quiesce() []violation {
	start := time.Now()
	if !c.waitHealthy(c.settleMax) {
		c.printf("chaos: the lab did not recover: %s\n", c.unhealthy())
	}
	time.Sleep(c.lab.ttl + 3*time.Second)
	// A stop whose hook could not reach etcd leaves its keys to the
	// watchdog's reconcile, which waits 30 s before it deletes them.
	deadline := time.Now().Add(45 * time.Second)
	var problems []violation
	for {
		problems = c.disagreements()
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(problems) == 0 {
		c.printf("chaos: quiescent after %s: etcd's keys match the running guests\n", time.Since(start).Round(time.Second))
	}
	return problems
}

func (c *campaign) disagreements() []violation {
	now := time.Now()
	kv, err := getPrefix(c.cli, "/virtlease/")
	if err != nil {
		return []violation{{Key: "quiesce/etcd", Kind: "leak", At: now, Msg: "cannot read etcd at quiescence: " + err.Error()}}
	}
	run := c.sampler.running()
	var out []violation
	add := func(key, kind, msg string, hosts ...string) {
		out = append(out, violation{Key: "quiesce/" + key, Kind: kind, At: now, Hosts: hosts, Msg: msg})
	}
	held := map[string]string{} // uuid → host, from domains/
	var keys []string
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := kv[k]
		switch {
		case strings.HasPrefix(k, "/virtlease/domains/"), strings.HasPrefix(k, "/virtlease/disks/"):
			r, ok := decode[record](v)
			if !ok {
				add(k, "leak", fmt.Sprintf("key %s: not a record: %q", k, v))
				continue
			}
			uuid := strings.ToLower(r.UUID)
			if strings.HasPrefix(k, "/virtlease/domains/") {
				held[uuid] = r.Host
			}
			if !slices.Contains(run[uuid], r.Host) {
				add(k, "leak", fmt.Sprintf("key %s names %s on %s, which does not run it (it runs on %v)", k, c.name(uuid), r.Host, run[uuid]), r.Host)
			}
		case strings.HasPrefix(k, "/virtlease/migrations/"):
			add(k, "leak", fmt.Sprintf("migration record left: %s = %s", k, v))
		case strings.HasPrefix(k, "/virtlease/unfenced/"):
			add(k, "leak", fmt.Sprintf("unfenced record left though every watchdog is back: %s = %s", k, v))
		}
	}
	for uuid, hosts := range run {
		for _, h := range hosts {
			if held[uuid] != h {
				add("running/"+uuid+"/"+h, "leak", fmt.Sprintf("%s runs on %s but domains/%s names %q", c.name(uuid), h, uuid, held[uuid]), h)
			}
		}
		if len(hosts) > 1 {
			add("twice/"+uuid, "overlap", fmt.Sprintf("%s runs on %v at quiescence", c.name(uuid), hosts), hosts...)
		}
	}
	for _, d := range c.domains {
		if !d.HA {
			continue
		}
		in, ok := decode[intentRec](kv["/virtlease/intents/"+d.UUID])
		if !ok || in.Want != "running" {
			continue
		}
		if n := len(run[d.UUID]); n != 1 && !c.diskBlocked(d, run) {
			add("ha/"+d.UUID, "ha", fmt.Sprintf("HA guest %s: intent running (restarts %d), but it runs on %d hosts %v", d.Name, in.Restarts, n, run[d.UUID]))
		}
	}
	return out
}

func (c *campaign) name(uuid string) string {
	if d := c.byUUID[uuid]; d != nil {
		return d.Name
	}
	return uuid
}

// checkInput gathers what the checks need now.
func (c *campaign) checkInput(final bool) *checkInput {
	spans, pairs := c.sampler.snapshot()
	c.mu.Lock()
	faults := slices.Clone(c.faults)
	c.mu.Unlock()
	return &checkInput{
		spans: spans, pairs: pairs, ops: c.work.snapshot(), faults: faults,
		resets: c.resets(), hist: c.hist, now: time.Now(), final: final,
		stalls: c.sampler.stallList(), period: c.sampler.interval,
		ttl: c.lab.ttl, hookTimeout: c.lab.hookTimeout,
		touchTail:     c.lab.ttl + 10*time.Second,
		migrationTail: time.Second,
		domains:       c.byUUID,
	}
}

func (in *checkInput) all() []violation {
	var out []violation
	out = append(out, in.checkOverlaps()...)
	out = append(out, in.checkRefusals()...)
	out = append(out, in.checkFalseFences()...)
	out = append(out, in.checkHookBlocking()...)
	out = append(out, in.checkResets()...)
	return out
}

// addViolations records the ones not seen before and returns them.
func (c *campaign) addViolations(vs []violation) []violation {
	c.mu.Lock()
	defer c.mu.Unlock()
	var fresh []violation
	for _, v := range vs {
		if c.seen[v.Key] {
			continue
		}
		c.seen[v.Key] = true
		c.violations = append(c.violations, v)
		fresh = append(fresh, v)
		if c.logf != nil {
			fmt.Fprintf(c.logf, "%s VIOLATION %s: %s\n", clock(time.Now()), v.Kind, v.Msg)
		}
	}
	return fresh
}

var reHwdogTime = regexp.MustCompile(`^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) labhwdog: RESET`)

// resets reads the stand-in hardware watchdogs' logs for resets since the
// campaign began.
func (c *campaign) resets() []hostEvent {
	var out []hostEvent
	for _, h := range c.lab.hosts {
		f, err := os.Open(filepath.Join(c.lab.root, "hwdog", h+".log"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			m := reHwdogTime.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			t, err := time.ParseInLocation("2006/01/02 15:04:05.000000", m[1], time.Local)
			if err == nil && t.After(c.t0) {
				out = append(out, hostEvent{Host: h, At: t, Text: sc.Text()})
			}
		}
		f.Close()
	}
	return out
}

// watchdogLines returns the watchdogs' log lines (host-prefixed) between
// from and to, and counts fences since the campaign began.
func (c *campaign) watchdogLines(from, to time.Time) (lines []string, fences map[string]int) {
	fences = map[string]int{}
	for _, h := range c.lab.hosts {
		f, err := os.Open(filepath.Join(c.lab.hostDir(h), "watchdog.log"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s := sc.Text()
			if !strings.HasPrefix(s, "time=") {
				continue
			}
			ts, _, _ := strings.Cut(strings.TrimPrefix(s, "time="), " ")
			t, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || t.Before(c.t0) {
				continue
			}
			if strings.Contains(s, `msg="fencing: killing every guest`) {
				fences[h]++
			}
			if !t.Before(from) && !t.After(to) {
				lines = append(lines, h+": "+s)
			}
		}
		f.Close()
	}
	sort.Slice(lines, func(i, j int) bool { return lineTime(lines[i]).Before(lineTime(lines[j])) })
	return lines, fences
}

func lineTime(s string) time.Time {
	i := strings.Index(s, "time=")
	if i < 0 {
		return time.Time{}
	}
	ts, _, _ := strings.Cut(s[i+5:], " ")
	t, _ := time.Parse(time.RFC3339Nano, ts)
	return t
}

// report prints the table and every violation with the history around it.
func (c *campaign) report(in *checkInput, markdown string) int {
	st := in.stats()
	_, fences := c.watchdogLines(time.Time{}, time.Time{})
	totalFences := 0
	for _, n := range fences {
		totalFences += n
	}
	kinds := map[string]int{}
	for _, f := range in.faults {
		kinds[f.Kind]++
	}
	var kindList []string
	for k, n := range kinds {
		kindList = append(kindList, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kindList)
	var refList []string
	for k, n := range st.refusalKinds {
		refList = append(refList, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(refList)
	spans, _ := c.sampler.snapshot()
	rows := [][2]string{
		{"seed", strconv.FormatUint(c.seed, 10)},
		{"duration", time.Since(c.t0).Round(time.Second).String()},
		{"cycles", strconv.Itoa(c.cycles)},
		{"faults by kind", strings.Join(kindList, ", ")},
		{"timings", fmt.Sprintf("ttl %s, renew %s, margin %s, hook timeout %s; %d hosts, %d etcd members", c.lab.ttl, c.lab.renew, c.lab.margin, c.lab.hookTimeout, len(c.lab.hosts), c.lab.members)},
		{"starts", fmt.Sprintf("%d: %d ok, %d refused, %d already running, %d other errors", st.starts, st.startOK, st.refused, st.already, st.startErr)},
		{"refusals by reason", strings.Join(refList, ", ")},
		{"stops (destroy)", fmt.Sprintf("%d: %d ok", st.stops, st.stopOK)},
		{"live migrations", fmt.Sprintf("%d: %d ok", st.migrations, st.migOK)},
		{"QEMU processes seen", strconv.Itoa(len(spans))},
		{"guests lost to faults", strconv.Itoa(st.lost)},
		{"fences (watchdog logs)", fmt.Sprintf("%d %v", totalFences, fences)},
		{"hardware watchdog resets", fmt.Sprintf("%d (%d of a host whose watchdog process was not faulted)", len(in.resets), len(st.liveResets))},
		{"HA restarts", strconv.Itoa(st.haRestarts)},
		{"fence time (partition → last guest gone) min/median/p99/max", dist(st.fenceTimes)},
		{"HA restart time (host fault → running elsewhere) min/median/p99/max", dist(st.restartTimes)},
		{"sampler", fmt.Sprintf("%d scans every %s, longest gap %s, %d stall(s) > %s", c.sampler.scans, c.sampler.interval, c.sampler.maxGap.Round(time.Millisecond), len(c.sampler.stalls), 4*c.sampler.interval)},
		{"violations", strconv.Itoa(len(c.violations))},
	}
	fmt.Fprintln(c.out)
	w := 0
	for _, r := range rows {
		w = max(w, len([]rune(r[0])))
	}
	for _, r := range rows {
		fmt.Fprintf(c.out, "  %-*s  %s\n", w, r[0], r[1])
	}
	if len(st.liveResets) > 0 {
		fmt.Fprintf(c.out, "\n  finding: the stand-in hardware watchdog reset hosts whose watchdog process was running (the\n  design says a partitioned host whose guests are dead stays up):\n")
		for _, r := range st.liveResets {
			fmt.Fprintf(c.out, "    %s\n", r)
		}
	}
	if len(st.haStopped) > 0 {
		fmt.Fprintf(c.out, "\n  finding: HA guests killed by a fault whose intent became \"stopped\" (not restarted):\n")
		for _, r := range st.haStopped {
			fmt.Fprintf(c.out, "    %s\n", r)
		}
	}
	if len(st.otherRefusals) > 0 {
		fmt.Fprintf(c.out, "\n  refusals of no known kind, e.g.:\n")
		for _, m := range st.otherRefusals {
			fmt.Fprintf(c.out, "    %s\n", m)
		}
	}
	if gaps := c.hist.watchGaps(); len(gaps) > 0 {
		fmt.Fprintf(c.out, "  (etcd watch interrupted %d time(s); refusal checks allow 3 s of slack)\n", len(gaps))
	}
	if markdown != "" {
		var b strings.Builder
		fmt.Fprintf(&b, "| | |\n|---|---|\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "| %s | %s |\n", r[0], strings.ReplaceAll(r[1], "|", "\\|"))
		}
		fmt.Fprintf(&b, "\nmachine: %d CPUs, %s/%s; %s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
		os.WriteFile(markdown, []byte(b.String()), 0o644)
	}
	if len(c.violations) == 0 {
		fmt.Fprintf(c.out, "\nchaos: PASS: seed %d, %d cycles, 0 violations\n", c.seed, c.cycles)
		return 0
	}
	fmt.Fprintf(c.out, "\nchaos: FAIL: %d violation(s), seed %d (rerun: scripts/chaos.sh --cycles %d --seed %d)\n", len(c.violations), c.seed, c.cycles, c.seed)
	for i, v := range c.violations {
		fmt.Fprintf(c.out, "\n--- violation %d/%d [%s] at %s: %s\n", i+1, len(c.violations), v.Kind, clock(v.At), v.Msg)
		if i >= 10 {
			continue // the log has the rest
		}
		from, to := v.At.Add(-8*time.Second), v.At.Add(4*time.Second)
		fmt.Fprintf(c.out, "    campaign log %s – %s:\n", clock(from), clock(to))
		c.mu.Lock()
		n := 0
		for _, e := range c.events {
			if !e.At.Before(from) && !e.At.After(to) && n < 60 {
				fmt.Fprintf(c.out, "      %s %s\n", clock(e.At), e.Text)
				n++
			}
		}
		c.mu.Unlock()
		lines, _ := c.watchdogLines(from, to)
		if len(lines) > 0 {
			fmt.Fprintf(c.out, "    watchdog logs:\n")
			for j, s := range lines {
				if j >= 40 {
					fmt.Fprintf(c.out, "      … %d more\n", len(lines)-j)
					break
				}
				fmt.Fprintf(c.out, "      %s\n", s)
			}
		}
		if v.Kind == "refusal" || v.Kind == "overlap" || v.Kind == "leak" {
			if ds := c.hist.describe("/virtlease/", from, to); len(ds) > 0 {
				fmt.Fprintf(c.out, "    etcd (as watched):\n")
				for j, s := range ds {
					if j >= 30 {
						fmt.Fprintf(c.out, "      … %d more\n", len(ds)-j)
						break
					}
					fmt.Fprintf(c.out, "      %s\n", s)
				}
			}
		}
	}
	return 1
}
