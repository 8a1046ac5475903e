package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// cmdReport reads the JSON results of one bench.sh run and prints the table;
// with -md it also writes the whole report (machine, versions, method,
// table, details, what the numbers mean) as Markdown.
func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", "", "results directory of one run")
	md := fs.String("md", "", "write the Markdown report here (docs/benchmarks.md)")
	etcdBin := fs.String("etcd", "etcd", "the etcd binary measured")
	vlBin := fs.String("virtlease", "virtlease", "the virtlease binary measured")
	fs.Parse(args)
	r := &report{dir: *dir, meta: readMeta(filepath.Join(*dir, "meta.env"))}
	r.load()
	r.versions = versions(*etcdBin, *vlBin)
	rows := r.rows()
	fmt.Println(textTable(rows))
	if *md == "" {
		return nil
	}
	return os.WriteFile(*md, []byte(r.markdown(rows)), 0o644)
}

type report struct {
	dir      string
	meta     map[string]string
	versions [][2]string

	hook   *hookLatResult
	cycle  *cyclesResult
	scale  *scaleResult
	fence  *fenceResult
	init   *initResult
	gobech string
	pprof  string
	lockd  string
	fbench string
}

func (r *report) load() {
	opt := func(name string, v any) bool {
		if err := readJSON(filepath.Join(r.dir, name), v); err != nil {
			if !os.IsNotExist(err) {
				fmt.Fprintf(os.Stderr, "report: %s: %v\n", name, err)
			}
			return false
		}
		return true
	}
	text := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(r.dir, name))
		return strings.TrimRight(string(b), "\n")
	}
	if v := new(hookLatResult); opt("hooklat.json", v) {
		r.hook = v
	}
	if v := new(cyclesResult); opt("cycle.json", v) {
		r.cycle = v
	}
	if v := new(scaleResult); opt("scale.json", v) {
		r.scale = v
	}
	if v := new(fenceResult); opt("fence.json", v) {
		r.fence = v
	}
	if v := new(initResult); opt("inittrace.json", v) {
		r.init = v
	}
	r.gobech, r.pprof, r.lockd, r.fbench = text("gobench.txt"), text("pprof.txt"), text("lockd-check.txt"), text("fencebench.txt")
}

func readMeta(path string) map[string]string {
	m := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unknown (" + err.Error() + ")"
	}
	s, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return s
}

func versions(etcdBin, vlBin string) [][2]string {
	etcdV := "unknown"
	if out, err := exec.Command(etcdBin, "--version").Output(); err == nil {
		for _, l := range splitLines(string(out)) {
			if v, ok := strings.CutPrefix(l, "etcd Version: "); ok {
				etcdV = v + " (built from the module proxy: scripts/etcd)"
			}
		}
	}
	return [][2]string{
		{"Go", firstLine("go", "version")},
		{"etcd (server)", etcdV},
		{"etcdctl", firstLine("etcdctl", "version")},
		{"libvirt", firstLine("libvirtd", "--version")},
		{"QEMU", firstLine("qemu-system-x86_64", "--version")},
		{"virtlease", firstLine(vlBin, "version")},
	}
}

// ---------------------------------------------------------------- numbers

func (r *report) hookBy(label string) *hookResult {
	if r.hook == nil {
		return nil
	}
	for i := range r.hook.Hooks {
		if r.hook.Hooks[i].Label == label {
			return &r.hook.Hooks[i]
		}
	}
	return nil
}

func (r *report) cycleBy(label string) *cycleResult {
	if r.cycle == nil {
		return nil
	}
	for i := range r.cycle.Configs {
		if r.cycle.Configs[i].Label == label {
			return &r.cycle.Configs[i]
		}
	}
	return nil
}

// Labels bench.sh gives the hooks and lab hosts.
const (
	hkVirtlease = "virtlease"
	hkCLI       = "virtlease hook (CLI form)"
	hkNoop      = "virtlease, no-op call"
	hkTrue      = "/bin/true"
	hkEmpty     = "empty Go program"
	hkEtcdCli   = "Go program linking the etcd client"
	hkNaive     = "etcdctl txn hook"
	hkSeq       = "virtlease, libvirt's 5 calls per start + destroy"
	hkSeqTrue   = "/bin/true, 5 calls per start + destroy"
	lbVirtlease = "virtlease"
	lbTrue      = "/bin/true hook"
	lbNone      = "no hook"
	lbLockd     = "virtlockd"
)

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

func pp(s Stats) string { return fmt.Sprintf("%s / %s", ms(s.P50), ms(s.P99)) }

func mib(kb int64) string { return fmt.Sprintf("%.1f MiB", float64(kb)/1024) }

func (r *report) hookVerdict() (p99ok, naiveOK, ok bool) {
	vl, nv := r.hookBy(hkVirtlease), r.hookBy(hkNaive)
	if vl == nil || nv == nil {
		return false, false, false
	}
	p99ok = true
	naiveOK = true
	for _, op := range vl.Ops {
		if vl.PerOp[op].P99 > 15 {
			p99ok = false
		}
		if vl.PerOp[op].P99 > nv.PerOp[op].P50 {
			naiveOK = false
		}
	}
	return p99ok, naiveOK, p99ok && naiveOK
}

func (r *report) rows() [][]string {
	rows := [][]string{{"#", "measurement", "virtlease", "compared with", "target", "met"}}
	add := func(c ...string) { rows = append(rows, c) }
	skipped := func(n, what, key string) {
		why := r.meta["skip_"+key]
		if why == "" {
			why = "not run"
		}
		add(n, what, "—", "—", "—", "skipped: "+why)
	}

	// 1. hook latency
	if vl, tr, nv := r.hookBy(hkVirtlease), r.hookBy(hkTrue), r.hookBy(hkNaive); vl != nil && tr != nil && nv != nil {
		add("1a", fmt.Sprintf("hook `prepare begin`, p50 / p99 (%d calls, process start included)", vl.PerOp["prepare begin"].N),
			pp(vl.PerOp["prepare begin"]),
			fmt.Sprintf("/bin/true %s; etcdctl txn hook %s", pp(tr.PerOp["prepare begin"]), pp(nv.PerOp["prepare begin"])),
			"p99 ≤ 15 ms and ≤ etcdctl hook's p50", fmt.Sprintf("≤ 15 ms: %s; ≤ etcdctl p50: %s", yesNo(vl.PerOp["prepare begin"].P99 <= 15), yesNo(vl.PerOp["prepare begin"].P99 <= nv.PerOp["prepare begin"].P50)))
		add("1b", "hook `release end`, p50 / p99", pp(vl.PerOp["release end"]),
			fmt.Sprintf("/bin/true %s; etcdctl txn hook %s", pp(tr.PerOp["release end"]), pp(nv.PerOp["release end"])),
			"p99 ≤ 15 ms and ≤ etcdctl hook's p50", fmt.Sprintf("≤ 15 ms: %s; ≤ etcdctl p50: %s", yesNo(vl.PerOp["release end"].P99 <= 15), yesNo(vl.PerOp["release end"].P99 <= nv.PerOp["release end"].P50)))
		add("1c", "hook prepare + release (one start, one stop), p50 / p99", pp(vl.Cycle),
			fmt.Sprintf("/bin/true %s; etcdctl txn hook %s", pp(tr.Cycle), pp(nv.Cycle)), "—", "—")
	} else {
		skipped("1", "hook latency", "hook")
	}

	// 2. virsh start + destroy
	if vl, tr := r.cycleBy(lbVirtlease), r.cycleBy(lbTrue); vl != nil && tr != nil {
		var others []string
		for _, l := range []string{lbTrue, lbNone, lbLockd} {
			if c := r.cycleBy(l); c != nil {
				others = append(others, fmt.Sprintf("%s %s", l, pp(c.Cycle)))
			}
		}
		add("2a", fmt.Sprintf("`virsh start` + `virsh destroy` in the lab, p50 / p99 (%d cycles each)", vl.Cycle.N), pp(vl.Cycle),
			strings.Join(others, "; "), "—", "—")
		added := vl.Cycle.P50 - tr.Cycle.P50
		cmp := ""
		if lk := r.cycleBy(lbLockd); lk != nil {
			cmp = "virtlockd adds " + addedCI(lk, tr)
		}
		add("2b", "added to start + destroy at p50 (vs the /bin/true hook; 95 % bootstrap interval)", addedCI(vl, tr), cmp, "≤ 20 ms", yesNo(added <= 20))
	} else {
		skipped("2", "virsh start + destroy", "lab")
	}

	// 3. scale
	if s := r.scale; s != nil && len(s.Phases) == 2 {
		a, b := s.Phases[0], s.Phases[1]
		add("3a", fmt.Sprintf("etcd calls/s at steady state, %d host sessions (renewal every %s)", s.Hosts, s.Interval),
			fmt.Sprintf("%.0f/s with no guests, %.0f/s with %dk guests (renewals: %.2f and %.2f per host per interval)",
				a.EtcdTotalPerSec, b.EtcdTotalPerSec, s.Hosts*s.DomainsPerHost/1000, a.RenewalsPerHost, b.RenewalsPerHost),
			"—", "one renewal per host per interval, whatever the number of guests",
			yesNo(within(a.RenewalsPerHost, 1, 0.02) && within(b.RenewalsPerHost, 1, 0.02)))
		add("3b", "claim latency p50 / p99 under that load (one at a time)",
			fmt.Sprintf("%s (no guests), %s (%dk guests)", pp(a.ProbeClaim), pp(b.ProbeClaim), s.Hosts*s.DomainsPerHost/1000),
			fmt.Sprintf("setting up the %dk claims, %d at a time: %s", s.Claims/1000, s.ClaimWorkers, pp(s.ClaimLatency)), "—", "—")
		if s.WatchdogClaims > 0 {
			add("3c", fmt.Sprintf("watchdog RSS, %d guests claimed on its session", s.WatchdogClaims),
				fmt.Sprintf("%s (cluster of %d sessions, no other guests); %s, peak %s (with %dk guests in the cluster)",
					mib(a.WatchdogRSSKB), s.Hosts, mib(b.WatchdogRSSKB), mib(max(b.WatchdogRSSMaxKB, s.WatchdogHWMKB)), s.Hosts*s.DomainsPerHost/1000),
				fmt.Sprintf("%s at start, before any claim", mib(s.WatchdogRSS0KB)),
				"≤ 40 MiB", fmt.Sprintf("small cluster: %s; %dk-guest cluster: %s", yesNo(a.WatchdogRSSKB <= 40<<10), s.Hosts*s.DomainsPerHost/1000, yesNo(max(b.WatchdogRSSMaxKB, s.WatchdogHWMKB) <= 40<<10)))
		}
		for _, rd := range s.Reads {
			what := fmt.Sprintf("each watchdog's periodic read at %dk guests (%d of them HA, %d keys on the reading host's lease): %s",
				s.Hosts*s.DomainsPerHost/1000, s.HADomains, 2*s.DomainsPerHost+1, rd.What)
			if rd.Failed > 0 {
				add("3d", what, fmt.Sprintf("**failed** %d of %d calls: %s", rd.Failed, rd.Calls, rd.Err), "—", "works at any size", "**no**")
				continue
			}
			add("3d", what,
				fmt.Sprintf("%s p50; etcd CPU %.1f ms and %.2f MiB sent per call", ms(rd.Latency.P50), rd.EtcdCPUMS, rd.SentKB/1024),
				fmt.Sprintf("× %d hosts × %.1f/s = %.1f CPU-seconds/s of etcd", s.Hosts, rd.EveryPerSec, rd.EtcdCPUMS/1000*float64(s.Hosts)*rd.EveryPerSec),
				"—", "—")
		}
	} else {
		skipped("3", "scale", "scale")
	}

	// 4. fence
	if f := r.fence; f != nil {
		add("4", fmt.Sprintf("fence %d guests: proxy frozen → every QEMU gone", f.Guests), ms(f.FreezeToAllMS),
			fmt.Sprintf("of which waiting for the fence point %s, killing %s; survivors %d; watchdog RSS %s with them running",
				ms(f.FreezeToFenceMS), ms(f.FenceToAllMS), f.Survivors, mib(f.WatchdogRSSKB)), "—", "—")
	} else {
		skipped("4", "fence 50 guests", "fence")
	}

	// 5. start-up
	if nop, tr, em := r.hookBy(hkNoop), r.hookBy(hkTrue), r.hookBy(hkEmpty); nop != nil && tr != nil && em != nil {
		vs := fmt.Sprintf("/bin/true %s; empty Go program %s", ms(tr.PerOp["prepare begin"].P50), ms(em.Cycle.P50))
		if ec := r.hookBy(hkEtcdCli); ec != nil {
			vs += fmt.Sprintf("; Go program linking only the etcd client %s", ms(ec.Cycle.P50))
		}
		what := fmt.Sprintf("%s p50", ms(nop.Cycle.P50))
		if r.init != nil {
			what += fmt.Sprintf("; package init %.1f ms over %d packages", r.init.InitClockMS, r.init.Packages)
		}
		if ns, ok := benchNs(r.gobech, "BenchmarkHookPrepareRelease"); ok {
			what += fmt.Sprintf("; in-process prepare + release %s", ms(ns/1e6))
		}
		add("5", "hook start-up: a call that needs no etcd (`start begin`)", what, vs, "—", "—")
	} else {
		skipped("5", "hook start-up", "hook")
	}

	// 6. fencebench
	if fb := fbSummary(r.fbench); fb != "" {
		add("6", "fence/takeover over ≥ 10 partitions (scripts/fencebench.sh), min / median / max", fb, "fence bound ttl − margin + 1 s; takeover only after the session deadline (asserted each run)", "—", "—")
	} else if r.fbench != "" {
		add("6", "fence/takeover over ≥ 10 partitions (scripts/fencebench.sh)", "see below", "—", "—", "—")
	} else {
		add("6", "fence/takeover over ≥ 10 partitions", "TODO: scripts/fencebench.sh (another helper's) did not exist at this run", "—", "—", "—")
	}
	return rows
}

var fbLine = regexp.MustCompile(`^(fence \(freeze → QEMU gone\)|takeover \(freeze → other host runs\))\s+min\s+(\S+)\s+median\s+(\S+)\s+max\s+(\S+)`)

// fbSummary picks the fence and takeover lines of fencebench.sh's output.
func fbSummary(text string) string {
	var out []string
	for _, l := range splitLines(text) {
		if m := fbLine.FindStringSubmatch(l); m != nil {
			what := "fence (freeze → QEMU gone)"
			if strings.HasPrefix(m[1], "takeover") {
				what = "takeover (freeze → other host runs it)"
			}
			out = append(out, fmt.Sprintf("%s %s / %s / %s", what, m[2], m[3], m[4]))
		}
	}
	if n := regexp.MustCompile(`^fence benchmark: (\d+) partitions`).FindStringSubmatch(firstOf(text)); n != nil && len(out) > 0 {
		return n[1] + " partitions: " + strings.Join(out, "; ")
	}
	return strings.Join(out, "; ")
}

func firstOf(text string) string {
	l, _, _ := strings.Cut(text, "\n")
	return l
}

// addedCI is how much a's median cycle exceeds b's, with a 95 % bootstrap
// interval (resampling both sets of cycles).
func addedCI(a, b *cycleResult) string {
	d := a.Cycle.P50 - b.Cycle.P50
	lo, hi, ok := bootstrapMedianDiff(a.CycleMS, b.CycleMS)
	if !ok {
		return ms(d)
	}
	return fmt.Sprintf("%s (%s … %s)", ms(d), ms(lo), ms(hi))
}

func bootstrapMedianDiff(a, b []float64) (lo, hi float64, ok bool) {
	if len(a) < 10 || len(b) < 10 {
		return 0, 0, false
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const iters = 4000
	diffs := make([]float64, iters)
	sa, sb := make([]float64, len(a)), make([]float64, len(b))
	for i := range diffs {
		for j := range sa {
			sa[j] = a[rng.IntN(len(a))]
		}
		for j := range sb {
			sb[j] = b[rng.IntN(len(b))]
		}
		diffs[i] = nearestRank(sa, 0.5) - nearestRank(sb, 0.5)
	}
	slices.Sort(diffs)
	return diffs[iters*25/1000], diffs[iters*975/1000], true
}

func nearestRank(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func within(v, want, tol float64) bool { return v >= want-tol && v <= want+tol }

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

func benchNs(text, name string) (float64, bool) {
	for _, l := range splitLines(text) {
		if m := benchLine.FindStringSubmatch(l); m != nil && m[1] == name {
			v, err := strconv.ParseFloat(m[3], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// ---------------------------------------------------------------- output

func textTable(rows [][]string) string {
	w := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			w[i] = max(w[i], len([]rune(c)))
		}
	}
	// the "measurement" and "compared with" columns wrap at 48 runes in the text form
	limit := []int{3, 48, 40, 40, 24, 26}
	var b strings.Builder
	sep := "+"
	for i := range w {
		sep += strings.Repeat("-", min(w[i], limit[i])+2) + "+"
	}
	b.WriteString(sep + "\n")
	for ri, r := range rows {
		cells := make([][]string, len(r))
		n := 1
		for i, c := range r {
			cells[i] = wrap(strings.ReplaceAll(strings.ReplaceAll(c, "**", ""), "`", ""), min(w[i], limit[i]))
			n = max(n, len(cells[i]))
		}
		for l := 0; l < n; l++ {
			b.WriteString("|")
			for i := range r {
				s := ""
				if l < len(cells[i]) {
					s = cells[i][l]
				}
				b.WriteString(" " + s + strings.Repeat(" ", min(w[i], limit[i])-len([]rune(s))) + " |")
			}
			b.WriteString("\n")
		}
		if ri == 0 || ri == len(rows)-1 {
			b.WriteString(sep + "\n")
		}
	}
	return b.String()
}

func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case len([]rune(line))+1+len([]rune(word)) <= width:
			line += " " + word
		default:
			lines = append(lines, line)
			line = word
		}
		for len([]rune(line)) > width {
			rs := []rune(line)
			lines = append(lines, string(rs[:width]))
			line = string(rs[width:])
		}
	}
	return append(lines, line)
}

func mdTable(rows [][]string) string {
	var b strings.Builder
	for i, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
		if i == 0 {
			b.WriteString("|" + strings.Repeat("---|", len(r)) + "\n")
		}
	}
	return b.String()
}

func statsRow(name string, s Stats) []string {
	return []string{name, strconv.Itoa(s.N), ms(s.Min), ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max)}
}

var statsHead = []string{"", "n", "min", "p50", "p90", "p99", "max"}

func meminfo() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range splitLines(string(b)) {
		var kb int64
		if n, _ := fmt.Sscanf(l, "MemTotal: %d kB", &kb); n == 1 {
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range splitLines(string(b)) {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown"
}

func (r *report) markdown(rows [][]string) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	m := r.meta
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	date := m["date"]
	if date == "" {
		date = time.Now().UTC().Format(time.RFC3339)
	}
	p("# Benchmarks\n\n")
	p("Every number on this page comes from one run of `sudo ./scripts/bench.sh` (%s, %s s wall). "+
		"Run it again to refresh the page: it rewrites this file and prints the table below.\n\n", date, m["runtime_s"])
	p("## Machine\n\n")
	p("| | |\n|---|---|\n")
	p("| CPU | %d × %s |\n", runtime.NumCPU(), cpuModel())
	p("| memory | %s |\n", meminfo())
	p("| kernel | Linux %s |\n", strings.TrimSpace(string(kernel)))
	for _, v := range r.versions {
		if v[0] == "virtlease" && m["commit"] != "" {
			v[1] += " (commit " + m["commit"]
			if m["dirty"] != "" {
				v[1] += " with uncommitted changes to " + m["dirty"]
			}
			v[1] += ")"
		}
		p("| %s | %s |\n", v[0], v[1])
	}
	if b := m["baseline"]; b != "" {
		p("| virtlease baseline (VL_BENCH_BASELINE) | %s |\n", b)
	}
	var loads []string
	for _, k := range []string{"start", "part1", "part5", "part3", "part2", "part4", "part6", "end"} {
		if v := m["load_"+k]; v != "" {
			loads = append(loads, strings.Replace(k, "part", "part ", 1)+": "+v)
		}
	}
	p("| load average (1 min) | %s (at the start of each part) |\n", strings.Join(loads, ", "))
	p("\nThe machine is shared: the load average counts other work (other labs and test runs) beside the bench, on %d cores. "+
		"Each comparison is therefore run interleaved (hooks call by call, lab hosts cycle by cycle), so that background load falls on "+
		"every column alike; p99 values carry that noise, p50 values much less. Parts 1 and 5 (etcd, the watchdog and the timed hooks) "+
		"run at nice −10, so that other work disturbs them less; everything else runs at the default priority. "+
		"The bench runs as a child subreaper (`scripts/bench reaper`), so that the QEMUs libvirtd daemonizes are reaped at once, as systemd does on a host: "+
		"this machine's PID 1 reaps orphans only about once a second, and libvirt's destroy waits for the zombie to go.\n\n", runtime.NumCPU())

	p("## Results\n\n")
	p("%s\n", mdTable(rows))
	if r.fbench != "" {
		p("Fence/takeover over partitions (`scripts/fencebench.sh`, run by bench.sh):\n\n```\n%s\n```\n\n", r.fbench)
	}
	p("Targets are reported, not enforced: bench.sh exits 0 when a target is missed.\n\n")

	p("## Method\n\n")
	p("`scripts/bench.sh` builds what it measures (virtlease static with `CGO_ENABLED=0`, etcd from `./scripts/etcd`, " +
		"`scripts/labproxy`, the helper `scripts/bench`), starts its own etcd on a free loopback port with a data directory " +
		"on the root filesystem (fsync on, as in production), its own lab (`scripts/lab.sh`, own root and ports), and stops every process " +
		"it started by PID on exit.\n\n")
	n := 0
	if r.hook != nil {
		n = r.hook.Iterations
	}
	p("1. **Hook latency.** A real `virtlease watchdog` holds a session on that etcd in a private mount namespace with tmpfs on " +
		"`/run/virtlease` and `/etc/virtlease` (`unshare -m`, the config copied in). Inside that namespace (`nsenter -t PID -m`) " +
		"`scripts/bench hooklat` runs each hook as libvirtd does: argv `NAME OP SUBOP -`, the domain XML " +
		"(`scripts/bench/domain.xml`: one rbd disk, one cdrom) on stdin, environment `LC_ALL=C PATH HOME`, cwd `/`. ")
	p("It times fork to exit of every call, %d measured iterations after a warm-up, the hooks interleaved call by call. ", n)
	p("`virtlease` is the binary run through a symlink named `qemu`, exactly as `/etc/libvirt/hooks/qemu` " +
		"(config from `/etc/virtlease/config.yaml`); `virtlease hook (CLI form)` is `virtlease --config CFG hook qemu NAME OP SUBOP -`. " +
		"A prepare claims the domain key and its disk key in one Txn (after one read Txn); a release reads, then deletes them. " +
		"The `etcdctl txn hook` is `scripts/bench/etcdctl-hook.sh`: one `etcdctl txn` per call, compare-create of the domain key " +
		"only, on a host lease kept alive by `etcdctl lease keep-alive` (no disks, no session check: what an operator might write). " +
		"`/bin/true` and an empty static Go program are the floor of any hook; `virtlease, no-op call` is `start begin`, " +
		"which loads the config and needs nothing from etcd. The etcd calls per cycle come from etcd's own " +
		"`grpc_server_handled_total`, over 20 more cycles of each hook alone.\n")
	p("2. **`virsh start` + `virsh destroy`.** One lab (`scripts/lab.sh start 4`) with four hosts that differ only in what guards the start: " +
		"`host-a` the virtlease hook and watchdog; `host-b` a `/bin/true` hook, no watchdog; `host-c` no hook file at all; " +
		"`host-d` a `/bin/true` hook and libvirt's lock manager: `lock_manager = \"lockd\"` in its `qemu.conf`, and in " +
		"`qemu-lockd.conf` `auto_disk_leases = 1`, `require_lease_for_disks = 1`, `file_lockspace_dir` on the lab's shared directory " +
		"(indirect leases: one lock file per disk path, named by its SHA-256), with `virtlockd -d` started in that host and its libvirtd restarted. " +
		"Each host's `vm1` (32 MiB, TCG, one qcow2 disk in the shared directory) is started and destroyed by `virsh` (process start included), " +
		"the four hosts in turn each cycle.\n")
	if s := r.scale; s != nil {
		p("3. **Scale.** `scripts/bench scale` on the same etcd: %d host sessions (lease TTL %s, each registered as `hosts/HOST` like a watchdog), "+
			"each renewed once per %s with `KeepAliveOnce` (lease.Store.Renew, what the watchdog calls) by %d workers over %d clients, the hosts "+
			"spread evenly over the interval. Steady state is measured for %s twice: with no guests, then after every host claimed %d domains "+
			"(domain key + one rbd disk key each, through lease.Store.Claim, %d at a time; %d of them HA, claimed with an intent want=running "+
			"as the hook does for `mode=\"ha\"`): %dk domains, %dk keys. Requests/s are etcd's "+
			"`grpc_server_handled_total` per method (a KeepAliveOnce is one stream) and our own count; claim latency is %d claims + releases "+
			"made one at a time during the renewals. The real watchdog of part 1 (whose host is in the same cluster) gets %d domains claimed "+
			"on its session; its VmRSS is sampled every 0.5 s. Its libvirt URI points at a socket that does not exist, so its reconciler "+
			"does nothing; its HA restarter runs as in production. Finally the two reads a watchdog makes periodically besides its renewal "+
			"(lease.Store.HAView, every renew interval; lease.Store.Held, every reconcile pass, 5 s; for Held, a simulated host holding its %d domains and disks) "+
			"are timed at full size, with etcd's CPU time (/proc) and bytes sent (`etcd_network_client_grpc_sent_bytes_total`) per call.\n",
			s.Hosts, s.TTL, s.Interval, s.Workers, s.Clients, (15 * time.Second).String(), s.DomainsPerHost, s.ClaimWorkers, s.HADomains,
			s.Hosts*s.DomainsPerHost/1000, 2*s.Hosts*s.DomainsPerHost/1000, 600, s.WatchdogClaims, s.DomainsPerHost)
	}
	if f := r.fence; f != nil {
		p("4. **Fence time.** On the lab's `host-a` (virtlease, TTL %s, renew %s, margin %s) %d diskless guests (32 MiB, TCG) are started; "+
			"then its TCP proxy to etcd is frozen (SIGSTOP: a partition that hangs) and `scripts/bench fence` polls /proc every 2 ms "+
			"until every QEMU is gone (exited or zombie). The fence point is the time of the watchdog's `fencing:` log line.\n",
			m["lab_ttl"], m["lab_renew"], m["lab_margin"], f.Guests)
	}
	p("5. **Start-up profile.** `GODEBUG=inittrace=1 virtlease version`, %s runs, median per package; `go test -tags bench -bench Hook "+
		"-cpuprofile` on `cmd/virtlease/bench_test.go`, which calls `runHook` in-process (prepare + release, and the no-op) against the same etcd, "+
		"so the profile shows the hook's own work without process start-up.\n\n", m["init_runs"])

	p("## Details\n\n")
	if r.hook != nil {
		p("### 1. Hook calls\n\n")
		var t [][]string
		t = append(t, append([]string{"hook / call"}, append(statsHead[1:], "etcd calls per cycle")...))
		for _, h := range r.hook.Hooks {
			ops := slices.Clone(h.Ops)
			for _, op := range ops {
				row := statsRow(h.Label+": `"+op+"`", h.PerOp[op])
				t = append(t, append(row, ""))
			}
			if len(ops) > 1 {
				calls := ""
				if len(h.EtcdCalls) > 0 {
					var cs []string
					for k, v := range h.EtcdCalls {
						cs = append(cs, fmt.Sprintf("%s %g", k, v))
					}
					slices.Sort(cs)
					calls = strings.Join(cs, ", ")
				}
				t = append(t, append(statsRow(h.Label+": **cycle**", h.Cycle), calls))
			}
		}
		p("%s\n", mdTable(t))
	}
	if r.cycle != nil {
		p("### 2. `virsh start` + `virsh destroy` (domain `%s`)\n\n", r.cycle.Domain)
		t := [][]string{append([]string{"host"}, statsHead[1:]...)}
		for _, c := range r.cycle.Configs {
			t = append(t, statsRow(c.Label+": start", c.Start), statsRow(c.Label+": destroy", c.Destroy), statsRow(c.Label+": **both**", c.Cycle))
		}
		p("%s\n", mdTable(t))
		if r.lockd != "" {
			p("virtlockd was really in use on host-d: after one start of vm1 there, its lockspace held\n\n```\n%s\n```\n\n", r.lockd)
		}
	}
	if s := r.scale; s != nil {
		p("### 3. Scale\n\n")
		p("Granting and registering %d sessions took %.1f s; the %dk claims took %.0f s (%.0f claims/s, %d failed). "+
			"Over the whole run (claims and the whole-prefix reads included) %d renewals failed their deadline (2 × interval) and %d were sent > 100 ms late; renewal latency %s.\n\n",
			s.Hosts, s.GrantSeconds, s.Claims/1000, s.ClaimSeconds, float64(s.Claims)/s.ClaimSeconds, s.ClaimFailed, s.RenewFailed, s.RenewLate, s.RenewLatency)
		t := [][]string{{"", s.Phases[0].Name, s.Phases[1].Name}}
		if len(s.Phases) == 2 {
			a, bb := s.Phases[0], s.Phases[1]
			t = append(t,
				[]string{"etcd keys", strconv.FormatInt(a.Keys, 10), strconv.FormatInt(bb.Keys, 10)},
				[]string{"renewals/s (own count)", fmt.Sprintf("%.1f", a.RenewalsPerSec), fmt.Sprintf("%.1f", bb.RenewalsPerSec)},
				[]string{"renewals per host per interval", fmt.Sprintf("%.3f", a.RenewalsPerHost), fmt.Sprintf("%.3f", bb.RenewalsPerHost)},
				[]string{"renewals failed / late > 100 ms", fmt.Sprintf("%d / %d", a.RenewFailed, a.RenewLate), fmt.Sprintf("%d / %d", bb.RenewFailed, bb.RenewLate)},
				[]string{"renewal latency p50 / p99 / max", pp(a.RenewLatency) + " / " + ms(a.RenewLatency.Max), pp(bb.RenewLatency) + " / " + ms(bb.RenewLatency.Max)},
				[]string{"etcd calls/s by method", methods(a.EtcdMsgsPerSec), methods(bb.EtcdMsgsPerSec)},
				[]string{"etcd sent to clients", fmt.Sprintf("%.1f MiB/s", a.EtcdSentBytesSec/(1<<20)), fmt.Sprintf("%.1f MiB/s", bb.EtcdSentBytesSec/(1<<20))},
				[]string{"etcd CPU (of one core)", fmt.Sprintf("%.0f %%", a.EtcdCPUPercent), fmt.Sprintf("%.0f %%", bb.EtcdCPUPercent)},
				[]string{"etcd RSS", mib(a.EtcdRSSKB), mib(bb.EtcdRSSKB)},
				[]string{"probe claim p50 / p99 / max", pp(a.ProbeClaim) + " / " + ms(a.ProbeClaim.Max), pp(bb.ProbeClaim) + " / " + ms(bb.ProbeClaim.Max)},
				[]string{"probe release p50 / p99 / max", pp(a.ProbeRelease) + " / " + ms(a.ProbeRelease.Max), pp(bb.ProbeRelease) + " / " + ms(bb.ProbeRelease.Max)},
				[]string{"real watchdog VmRSS (last / max sampled)", mib(a.WatchdogRSSKB) + " / " + mib(a.WatchdogRSSMaxKB), mib(bb.WatchdogRSSKB) + " / " + mib(bb.WatchdogRSSMaxKB)},
			)
		}
		p("%s\n", mdTable(t))
		if len(s.Reads) > 0 {
			t = [][]string{{"periodic read (at the end, every key in place)", "latency p50 / p99", "etcd CPU per call", "sent per call", "per host per second"}}
			for _, rd := range s.Reads {
				if rd.Failed > 0 {
					t = append(t, []string{rd.What, fmt.Sprintf("**failed** %d of %d: `%s`", rd.Failed, rd.Calls, rd.Err), "—", "—", fmt.Sprintf("%.1f", rd.EveryPerSec)})
					continue
				}
				t = append(t, []string{rd.What, pp(rd.Latency), fmt.Sprintf("%.1f ms", rd.EtcdCPUMS), fmt.Sprintf("%.2f MiB", rd.SentKB/1024), fmt.Sprintf("%.1f", rd.EveryPerSec)})
			}
			p("%s\n", mdTable(t))
		}
	}
	if f := r.fence; f != nil {
		p("### 4. Fence\n\n")
		p("| | |\n|---|---|\n")
		p("| guests | %d (average QEMU RSS %s) |\n", f.Guests, mib(f.QEMURSSKB))
		p("| proxy frozen → fence point (watchdog log) | %s |\n", ms(f.FreezeToFenceMS))
		p("| fence point → every QEMU gone | %s |\n", ms(f.FenceToAllMS))
		p("| proxy frozen → first QEMU gone | %s |\n", ms(f.FreezeToFirstMS))
		p("| proxy frozen → every QEMU gone | %s |\n", ms(f.FreezeToAllMS))
		p("| survivors | %d |\n", f.Survivors)
		p("| watchdog VmRSS before the freeze (guests running, reconciled against libvirt) | %s (peak %s) |\n\n", mib(f.WatchdogRSSKB), mib(f.WatchdogHWMKB))
		if f.FenceLogLine != "" {
			p("```\n%s\n```\n\n", f.FenceLogLine)
		}
	}
	p("### 5. Start-up profile\n\n")
	if in := r.init; in != nil {
		p("`%s` with `GODEBUG=inittrace=1`, median of %d runs: %d packages initialised, %.2f ms of init in all "+
			"(%d allocations, %.0f KiB), the last init done %.2f ms after the runtime started. Binary: %.1f MiB. The packages with the most expensive init:\n\n",
			strings.Join(append([]string{filepath.Base(in.Argv[0])}, in.Argv[1:]...), " "), in.Runs, in.Packages, in.InitClockMS, in.InitAllocs, float64(in.InitBytes)/1024, in.InitDoneMS, in.BinarySizeMB)
		t := [][]string{{"package", "init (median)", "bytes", "allocs"}}
		for _, x := range in.Top {
			t = append(t, []string{"`" + x.Pkg + "`", fmt.Sprintf("%.3f ms", x.ClockMS), strconv.FormatInt(x.Bytes, 10), strconv.FormatInt(x.Allocs, 10)})
		}
		p("%s\n", mdTable(t))
	}
	if r.gobech != "" {
		p("In-process benchmark (`runHook`, no process start):\n\n```\n%s\n```\n\n", r.gobech)
	}
	if r.pprof != "" {
		p("CPU profile of those benchmarks (`go tool pprof -top -cum`, first lines):\n\n```\n%s\n```\n\n", r.pprof)
	}

	p("## What the numbers mean\n\n")
	for _, s := range r.meaning() {
		p("- %s\n", s)
	}
	return b.String()
}

func methods(m map[string]float64) string {
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("%s %.1f", k, v))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// meaning states, from the numbers of this run, what they say.
func (r *report) meaning() []string {
	var out []string
	vl, tr, nv, nop, em, ec := r.hookBy(hkVirtlease), r.hookBy(hkTrue), r.hookBy(hkNaive), r.hookBy(hkNoop), r.hookBy(hkEmpty), r.hookBy(hkEtcdCli)
	if vl != nil && tr != nil && nv != nil {
		pr, rl := vl.PerOp["prepare begin"], vl.PerOp["release end"]
		_, _, ok := r.hookVerdict()
		s := fmt.Sprintf("**Hook latency.** A virtlease prepare takes %s at p50 (release %s); the etcdctl hook takes %s (%s), "+
			"%.1f× as long: it forks a shell, sed, head and etcdctl, which dials etcd, each time. ", ms(pr.P50), ms(rl.P50),
			ms(nv.PerOp["prepare begin"].P50), ms(nv.PerOp["release end"].P50), nv.PerOp["prepare begin"].P50/pr.P50)
		if ok {
			s += fmt.Sprintf("The targets are met: p99 %s and %s, both ≤ 15 ms and ≤ the etcdctl hook's p50. ", ms(pr.P99), ms(rl.P99))
		} else {
			s += fmt.Sprintf("The targets (p99 ≤ 15 ms and ≤ the etcdctl hook's p50, per call) are %s: p99 is %s for prepare and %s for release. ",
				"**not all met**", ms(pr.P99), ms(rl.P99))
		}
		if nop != nil && em != nil {
			s += fmt.Sprintf("Of a prepare's %s, %s is start-up alone (a no-op call; an empty Go program takes %s, /bin/true %s)",
				ms(pr.P50), ms(nop.Cycle.P50), ms(em.Cycle.P50), ms(tr.PerOp["prepare begin"].P50))
			if ec != nil {
				s += fmt.Sprintf(", and linking the etcd client alone already costs %s of it", ms(ec.Cycle.P50-em.Cycle.P50))
			}
			s += fmt.Sprintf("; the rest, %s, is dialing etcd and the calls themselves (%s). ", ms(pr.P50-nop.Cycle.P50), callsText(vl.EtcdCalls))
		}
		s += "The p99s move with the machine's background load (compare /bin/true's own p99), more than with virtlease."
		out = append(out, s)
	}
	if vlc, trc := r.cycleBy(lbVirtlease), r.cycleBy(lbTrue); vlc != nil && trc != nil {
		added := vlc.Cycle.P50 - trc.Cycle.P50
		s := fmt.Sprintf("**`virsh start` + `destroy`.** virtlease adds %s at p50 to a start + destroy of %s (target ≤ 20 ms: %s; "+
			"the interval is a 95 %% bootstrap over the %d cycles). ",
			addedCI(vlc, trc), ms(trc.Cycle.P50), strings.ReplaceAll(yesNo(added <= 20), "*", ""), vlc.Cycle.N)
		if lk := r.cycleBy(lbLockd); lk != nil {
			s += fmt.Sprintf("virtlockd adds %s. ", addedCI(lk, trc))
		}
		if sq, st := r.hookBy(hkSeq), r.hookBy(hkSeqTrue); sq != nil && st != nil {
			var per []string
			for _, op := range sq.Ops {
				per = append(per, fmt.Sprintf("`%s` %s", op, ms(sq.PerOp[op].P50)))
			}
			s += fmt.Sprintf("Part 1 accounts for it: the five hook calls libvirt makes per start + destroy take %s with virtlease against %s with /bin/true (p50: %s). ",
				ms(sq.Cycle.P50), ms(st.Cycle.P50), strings.Join(per, ", "))
		}
		if nh := r.cycleBy(lbNone); nh != nil {
			s += fmt.Sprintf("Having a hook at all (/bin/true, run by libvirtd 5 times per cycle) costs %s over no hook file. ", addedCI(trc, nh))
		}
		s += "A guest's own start (QEMU, TCG) dominates either way. virtlockd only guards disks it can lock on a shared filesystem " +
			"(file paths; not rbd/iSCSI through QEMU's own drivers), keeps no record of who runs a domain, and has no fencing: " +
			"a host that loses the shared filesystem keeps its guests running."
		out = append(out, s)
	}
	if s := r.scale; s != nil && len(s.Phases) == 2 {
		a, b := s.Phases[0], s.Phases[1]
		out = append(out, fmt.Sprintf("**Renewals do not grow with guests.** %d sessions cost etcd %.0f renewals/s with no guests and %.0f/s with %dk guests: "+
			"%.2f renewal per host per interval either way, since every key of a host hangs on its one lease. etcd used %.0f %% of one core for them.",
			s.Hosts, a.RenewalsPerSec, b.RenewalsPerSec, s.Hosts*s.DomainsPerHost/1000, b.RenewalsPerHost, a.EtcdCPUPercent))
		if s.RenewFailed > 0 || s.RenewLate > 0 {
			out[len(out)-1] += fmt.Sprintf(" Over the whole run %d renewals missed their 2 s deadline (%d and %d of them in the two steady-state windows) "+
				"and the load generator sent %d renewals more than 100 ms after their slot: all %d simulated hosts run in one process, on the same "+
				"2 cores as etcd, the claim workers of the set-up and whatever else the machine runs, so this shows the load generator starved "+
				"as much as etcd slow; in a real cluster each host renews from its own machine.",
				s.RenewFailed, a.RenewFailed, b.RenewFailed, s.RenewLate, s.Hosts)
		}
		if len(s.Reads) > 0 {
			var parts []string
			worst := 0.0
			for _, rd := range s.Reads {
				if rd.Failed > 0 {
					parts = append(parts, fmt.Sprintf("%s **failed** (%d of %d calls: `%s`)", rd.What, rd.Failed, rd.Calls, rd.Err))
					continue
				}
				cores := rd.EtcdCPUMS / 1000 * float64(s.Hosts) * rd.EveryPerSec
				worst = max(worst, cores)
				parts = append(parts, fmt.Sprintf("%s costs etcd %.1f ms of CPU and %.2f MiB sent per call, %.1f cores at %d hosts (linear extrapolation)",
					rd.What, rd.EtcdCPUMS, rd.SentKB/1024, cores, s.Hosts))
			}
			txt := fmt.Sprintf("**The watchdog's periodic reads.** Besides its renewal every watchdog reads etcd on its own schedule; measured at full size "+
				"(%dk guests, %d of them HA, the reading host holding %d keys): %s.", s.Hosts*s.DomainsPerHost/1000, s.HADomains, 2*s.DomainsPerHost+1, strings.Join(parts, "; "))
			if worst >= 1 {
				txt += " Those reads, not the renewals, bound the cluster size."
			}
			txt += fmt.Sprintf(" With one real watchdog reading as in production, etcd went from %.0f %% CPU (no guests) to %.0f %% (%dk guests), and the simulated hosts' renewal p99 from %s to %s",
				a.EtcdCPUPercent, b.EtcdCPUPercent, s.Hosts*s.DomainsPerHost/1000, ms(a.RenewLatency.P99), ms(b.RenewLatency.P99))
			out = append(out, txt+".")
		}
		cl := fmt.Sprintf("**Claim latency** under the renewals (two Txns: read, then write): p50 %s, p99 %s with no guests; p50 %s, p99 %s with %dk guests.",
			ms(a.ProbeClaim.P50), ms(a.ProbeClaim.P99), ms(b.ProbeClaim.P50), ms(b.ProbeClaim.P99), s.Hosts*s.DomainsPerHost/1000)
		if b.ProbeClaim.P99 > 3*a.ProbeClaim.P99 {
			cl += " The tail at full size comes from the same etcd serving the real watchdog's whole-prefix read every second (above), not from the claims' own work."
		}
		out = append(out, cl)
		if s.WatchdogClaims > 0 {
			big := max(b.WatchdogRSSMaxKB, s.WatchdogHWMKB)
			out = append(out, fmt.Sprintf("**Watchdog memory.** With %d guests claimed the watchdog's RSS is %s in a cluster of %d idle sessions (target ≤ 40 MiB: %s), "+
				"and %s at peak in the %dk-guest cluster (%s).",
				s.WatchdogClaims, mib(a.WatchdogRSSKB), s.Hosts, strings.ReplaceAll(yesNo(a.WatchdogRSSKB <= 40<<10), "*", ""),
				mib(big), s.Hosts*s.DomainsPerHost/1000, strings.ReplaceAll(yesNo(big <= 40<<10), "*", "")))
			if f := r.fence; f != nil && f.WatchdogRSSKB > 0 {
				out[len(out)-1] += fmt.Sprintf(" In the lab, with %d real guests running and reconciled against libvirtd every 5 s, a watchdog's RSS was %s.", f.Guests, mib(f.WatchdogRSSKB))
			}
		}
	}
	if f := r.fence; f != nil {
		out = append(out, fmt.Sprintf("**Fencing.** After the freeze the watchdog waits until deadline − margin (TTL %s − margin %s, counted from its last "+
			"acknowledged renewal, which was up to one renew interval before the freeze): %s here. Killing %d QEMUs then took %s; "+
			"every guest was gone %s after the freeze, well before etcd could expire the lease and another host could start them "+
			"(TTL after the last renewal, ≥ %s after the freeze).", r.meta["lab_ttl"], r.meta["lab_margin"], ms(f.FreezeToFenceMS), f.Guests, ms(f.FenceToAllMS),
			ms(f.FreezeToAllMS), ms(ttlMinusRenew(r.meta["lab_ttl"], r.meta["lab_renew"]))))
		if fb := fbSummary(r.fbench); fb != "" {
			out[len(out)-1] += " scripts/fencebench.sh, one guest per partition: " + fb + "."
		}
	}
	if in := r.init; in != nil && len(in.Top) > 0 {
		s := fmt.Sprintf("**Start-up.** The hook is a %.0f MiB static binary that initialises %d packages (%.1f ms of init under inittrace) before main; ",
			in.BinarySizeMB, in.Packages, in.InitClockMS)
		var top []string
		for _, x := range in.Top[:min(4, len(in.Top))] {
			top = append(top, fmt.Sprintf("`%s` %.2f ms", x.Pkg, x.ClockMS))
		}
		s += "the costliest: " + strings.Join(top, ", ") + ". "
		if ns, ok := benchNs(r.gobech, "BenchmarkHookPrepareRelease"); ok {
			s += fmt.Sprintf("In-process, a prepare + release takes %s (mostly waiting on etcd); ", ms(ns/1e6))
		}
		if ns, ok := benchNs(r.gobech, "BenchmarkHookNoop"); ok {
			s += fmt.Sprintf("loading the config takes %s. ", ms(ns/1e6))
		}
		if pr := pprofShares(r.pprof, 300); pr != "" {
			s += pr + " "
		}
		s += "So a hook call is start-up (runtime, page faults of the binary, package init) plus etcd round trips; the Go code in between is not where the time goes."
		out = append(out, s)
	}
	return out
}

func ttlMinusRenew(ttl, renew string) float64 {
	t, err1 := time.ParseDuration(ttl)
	r, err2 := time.ParseDuration(renew)
	if err1 != nil || err2 != nil {
		return 0
	}
	return float64((t - r).Milliseconds())
}

func callsText(m map[string]float64) string {
	if len(m) == 0 {
		return "etcd's call counts are missing"
	}
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("%g %s", v, k))
	}
	slices.Sort(s)
	return "etcd counted " + strings.Join(s, " and ") + " per prepare + release"
}

var pprofTotal = regexp.MustCompile(`Total samples = ([0-9.]+)(ms|s)`)

// pprofShares summarises a `pprof -top -cum` text of the hook benchmarks
// (ops prepare + release rounds): CPU per round and the biggest parts.
func pprofShares(text string, ops int) string {
	m := pprofTotal.FindStringSubmatch(text)
	if m == nil {
		return ""
	}
	total, _ := strconv.ParseFloat(m[1], 64)
	if m[2] == "s" {
		total *= 1000
	}
	parts := []struct{ label, fn string }{
		{"parsing the domain XML", "hook.ParseDomain"},
		{"etcd Txn calls", "clientv3.(*txn).Commit"},
		{"gRPC connection set-up", "grpc.(*addrConn).resetTransportAndUnlock"},
		{"garbage collection", "runtime.gcBgMarkWorker"},
	}
	var found []string
	for _, p := range parts {
		for _, l := range splitLines(text) {
			f := strings.Fields(l)
			if len(f) < 6 || !strings.HasSuffix(f[len(f)-1], p.fn) && !strings.Contains(strings.Join(f[5:], " "), p.fn) {
				continue
			}
			found = append(found, fmt.Sprintf("%s %s", p.label, f[4]))
			break
		}
	}
	s := fmt.Sprintf("The CPU profile shows %.1f ms of CPU per prepare + release in-process", total/float64(ops))
	if len(found) > 0 {
		s += " (" + strings.Join(found, ", ") + " of the samples)"
	}
	return s + "."
}
