package main

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// violation is one thing the checker proves went wrong.
type violation struct {
	Key   string // dedup key
	Kind  string // overlap, refusal, leak, ha, false-fence, hook-block, reset
	At    time.Time
	Hosts []string
	Msg   string
}

// checkInput is everything the checks look at: what the sampler saw, what
// the workload did, which faults were injected, what etcd said.
type checkInput struct {
	spans  []span
	pairs  []together
	ops    []op
	faults []*fault
	resets []hostEvent // stand-in watchdog resets
	stalls []stall     // times the machine did not run the sampler
	period time.Duration
	hist   *history // nil: refusals are not checked
	now    time.Time
	final  bool

	ttl, hookTimeout time.Duration
	touchTail        time.Duration // how long after a host fault ends its effects may still show
	migrationTail    time.Duration // how long after virsh migrate returns both QEMUs may be seen
	domains          map[string]*domain
}

// hostEvent is something that happened to a host at a time.
type hostEvent struct {
	Host string
	At   time.Time
	Text string
}

// opEnd is when an op ended, or, for one still running, a time far enough
// ahead that it covers anything it may still do.
func (in *checkInput) opEnd(o op) time.Time {
	if !o.Done {
		return in.now.Add(time.Hour)
	}
	return o.End
}

// migrationWindow reports whether a migration of uuid between hosts a and b
// (either direction) covers [from, to].
func (in *checkInput) migrationWindow(uuid, a, b string, from, to time.Time) bool {
	for _, o := range in.ops {
		if o.Kind != "migrate" || o.Dom.UUID != uuid || o.Start.IsZero() {
			continue
		}
		if !(o.Host == a && o.Dest == b || o.Host == b && o.Dest == a) {
			continue
		}
		if !from.Before(o.Start) && !to.After(in.opEnd(o).Add(in.migrationTail)) {
			return true
		}
	}
	return false
}

// abortedIncoming reports whether p is the destination QEMU of a live
// migration of its UUID to its host that failed: libvirt started it
// (paused, -incoming) during the migration and never resumed it; it stays
// until its libvirtd reaps it, later still when that libvirtd was down.
func (in *checkInput) abortedIncoming(p proc, first time.Time) bool {
	for _, o := range in.ops {
		if o.Kind == "migrate" && o.Done && o.Class != "ok" && o.Dom.UUID == p.UUID && o.Dest == p.Host &&
			!first.Before(o.Start) && !first.After(o.End) {
			return true
		}
	}
	return false
}

// checkOverlaps: no UUID on two hosts at once outside a live migration's
// window between exactly those hosts (or an aborted migration's paused
// destination); no disk used by two domains at once.
func (in *checkInput) checkOverlaps() []violation {
	first := map[proc]time.Time{}
	for _, s := range in.spans {
		first[s.proc] = s.First
	}
	var out []violation
	for _, t := range in.pairs {
		if t.Kind == "domain" && t.A.Host != t.B.Host && in.migrationWindow(t.A.UUID, t.A.Host, t.B.Host, t.First, t.Last) {
			continue
		}
		if t.Kind == "domain" && t.A.Host != t.B.Host && (in.abortedIncoming(t.A, first[t.A]) || in.abortedIncoming(t.B, first[t.B])) {
			continue
		}
		name := t.What
		if d := in.domains[t.A.UUID]; d != nil && t.Kind == "domain" {
			name = d.Name + " (" + t.What + ")"
		} else if t.Kind == "disk" {
			name = fmt.Sprintf("%s (%s and %s)", t.What, in.name(t.A.UUID), in.name(t.B.UUID))
		}
		out = append(out, violation{
			Key:   fmt.Sprintf("overlap/%d/%d/%d/%d", t.A.PID, t.A.Start, t.B.PID, t.B.Start),
			Kind:  "overlap",
			At:    t.First,
			Hosts: []string{t.A.Host, t.B.Host},
			Msg: fmt.Sprintf("%s %s ran twice: %s pid %d and %s pid %d seen alive together from %s to %s (%s), outside any live migration between them",
				t.Kind, name, t.A.Host, t.A.PID, t.B.Host, t.B.PID, clock(t.First), clock(t.Last), t.Last.Sub(t.First).Round(time.Millisecond)),
		})
	}
	return out
}

func (in *checkInput) name(uuid string) string {
	if d := in.domains[uuid]; d != nil {
		return d.Name
	}
	return uuid
}

// hostTouched reports whether a fault touched host h in a window that
// meets [t, t2]: from its start to its end plus touchTail.
func (in *checkInput) hostTouched(h string, t time.Time, t2 ...time.Time) *fault {
	late := t
	if len(t2) > 0 {
		late = t2[0]
	}
	for _, f := range in.faults {
		if f.Host != h || f.Start.IsZero() {
			continue
		}
		end := f.End
		if end.IsZero() {
			end = in.now.Add(time.Hour)
		}
		if !late.Before(f.Start) && !t.After(end.Add(in.touchTail)) {
			return f
		}
	}
	for _, r := range in.resets {
		if r.Host == h && !t.Before(r.At.Add(-time.Second)) && !t.After(r.At.Add(in.touchTail)) {
			return &fault{Kind: "reset", Host: h, Start: r.At, End: r.At}
		}
	}
	return nil
}

// explainGone says why a QEMU that disappeared did, or "" when nothing
// explains it. It went after its last scan and before the end of the scan
// that missed it (a scan is dated by its start).
func (in *checkInput) explainGone(s span) string {
	t, late := s.Gone, s.Gone.Add(max(in.period, 100*time.Millisecond))
	for _, o := range in.ops {
		if o.Dom.UUID != s.UUID || o.Start.IsZero() || late.Before(o.Start) || t.After(in.opEnd(o).Add(2*time.Second)) {
			continue
		}
		switch {
		case o.Kind == "stop" && o.Host == s.Host:
			return fmt.Sprintf("op#%d destroy", o.ID)
		case o.Kind == "migrate" && (o.Host == s.Host || o.Dest == s.Host):
			return fmt.Sprintf("op#%d migration", o.ID)
		case o.Kind == "start" && o.Host == s.Host:
			return fmt.Sprintf("op#%d failed start", o.ID)
		}
	}
	if f := in.hostTouched(s.Host, t, late); f != nil {
		return "fault " + f.Kind
	}
	return ""
}

// checkFalseFences: a QEMU that disappeared with no stop, migration or
// fault on its host to explain it was killed by mistake.
func (in *checkInput) checkFalseFences() []violation {
	var out []violation
	for _, s := range in.spans {
		if s.Gone.IsZero() {
			continue
		}
		if !in.final && in.now.Sub(s.Gone) < 3*time.Second {
			continue // an op may not have been recorded yet
		}
		if in.explainGone(s) != "" {
			continue
		}
		out = append(out, violation{
			Key:   fmt.Sprintf("gone/%d/%d", s.PID, s.Start),
			Kind:  "false-fence",
			At:    s.Gone,
			Hosts: []string{s.Host},
			Msg: fmt.Sprintf("%s's QEMU pid %d on %s (running since %s) disappeared at %s with no stop, migration or fault on %s to explain it",
				in.name(s.UUID), s.PID, s.Host, clock(s.First), clock(s.Gone), s.Host),
		})
	}
	return out
}

// checkResets: the stand-in hardware watchdog reset a host no fault touched.
func (in *checkInput) checkResets() []violation {
	var out []violation
	for _, r := range in.resets {
		ok := false
		for _, f := range in.faults {
			end := f.End
			if end.IsZero() {
				end = in.now
			}
			if f.Host == r.Host && !r.At.Before(f.Start) && !r.At.After(end.Add(in.touchTail)) {
				ok = true
			}
		}
		if ok {
			continue
		}
		out = append(out, violation{Key: "reset/" + r.Host + "/" + r.At.String(), Kind: "reset", At: r.At, Hosts: []string{r.Host},
			Msg: fmt.Sprintf("the hardware watchdog reset %s at %s with no fault on that host: %s", r.Host, clock(r.At), r.Text)})
	}
	return out
}

// checkHookBlocking: a virsh start may take at most hook.timeout + 2 s
// unless its host's libvirtd itself was faulted meanwhile.
func (in *checkInput) checkHookBlocking() []violation {
	var out []violation
	limit := in.hookTimeout + 2*time.Second
	for _, o := range in.ops {
		if o.Kind != "start" || !o.Done {
			continue
		}
		took := o.End.Sub(o.Start)
		if took <= limit {
			continue
		}
		// a machine that stalled stalled libvirtd and the hook as well
		stall := stalled(in.stalls, o.Start, o.End, in.period)
		if took-stall <= limit {
			continue
		}
		excused := false
		for _, f := range in.faults {
			if f.Host != o.Host {
				continue
			}
			switch f.Kind {
			case "libvirtd-stop", "libvirtd-kill", "power-loss", "watchdog-kill", "watchdog-stop", "mig-watchdog-stop", "mig-libvirtd-restart":
			default:
				continue // a partition must not block libvirtd: the hook's deadline holds
			}
			end := f.End
			if end.IsZero() {
				end = in.now
			}
			if f.Start.Before(o.End) && end.Add(2*time.Second).After(o.Start) {
				excused = true
			}
		}
		for _, r := range in.resets {
			if r.Host == o.Host && r.At.After(o.Start.Add(-time.Second)) && r.At.Before(o.End) {
				excused = true
			}
		}
		if excused {
			continue
		}
		out = append(out, violation{Key: fmt.Sprintf("hook/%d", o.ID), Kind: "hook-block", At: o.Start, Hosts: []string{o.Host},
			Msg: fmt.Sprintf("virsh start %s on %s took %s (hook.timeout %s + 2 s; the machine stalled %s meanwhile): %s", o.Dom.Name, o.Host,
				took.Round(time.Millisecond), in.hookTimeout, stall.Round(time.Millisecond), o.Msg)})
	}
	return out
}

var (
	reDomainHeld = regexp.MustCompile(`domain (\S+) \(([0-9a-fA-F-]{36})\) is running on host (\S+) since`)
	reDiskHeld   = regexp.MustCompile(`disk (\S+) is in use by domain (\S+) \(([0-9a-fA-F-]{36})\) on host (\S+) since`)
	reMigrating  = regexp.MustCompile(`domain (\S+) \(([0-9a-fA-F-]{36})\) is being migrated from host (\S+) to host (\S+) since`)
	reMigDisk    = regexp.MustCompile(`disk (\S+) belongs to domain ([0-9a-fA-F-]{36}), being migrated from host (\S+) to host (\S+) since`)
	reUnfenced   = regexp.MustCompile(`domain (\S+) \(([0-9a-fA-F-]{36})\) may still run on host (\S+), whose watchdog stopped`)
	reUnfencedD  = regexp.MustCompile(`disk (\S+) may still be in use by domain (\S+) on host (\S+), whose watchdog stopped`)
)

// refusalKind names the reason of a refused start from its message.
func refusalKind(msg string) string {
	switch {
	case reDomainHeld.MatchString(msg):
		return "domain held"
	case reDiskHeld.MatchString(msg):
		return "disk held"
	case reMigrating.MatchString(msg):
		return "migrating"
	case reMigDisk.MatchString(msg):
		return "disk of a migrating domain"
	case reUnfenced.MatchString(msg), reUnfencedD.MatchString(msg):
		return "unfenced"
	case strings.Contains(msg, "no migration of") && strings.Contains(msg, "is recorded"):
		return "incoming marker without a migration record"
	case strings.Contains(msg, "no live virtlease session"), strings.Contains(msg, "session"):
		return "no session"
	case strings.Contains(msg, "etcd did not answer"), strings.Contains(msg, "etcd unavailable"):
		return "etcd unavailable"
	}
	return "other"
}

// checkRefusals: a refusal that names a holder must name one etcd had
// around that moment (the window of the virsh call, ± slack).
func (in *checkInput) checkRefusals() []violation {
	if in.hist == nil {
		return nil
	}
	var out []violation
	for _, o := range in.ops {
		if o.Class != "refused" || !o.Done {
			continue
		}
		// The watch sees a write a few milliseconds after it; while an
		// etcd member is down or stopped it may lag by seconds.
		slack := 3 * time.Second
		for _, f := range in.faults {
			end := f.End
			if end.IsZero() {
				end = in.now
			}
			if f.Host == "" && f.Start.Before(o.End.Add(5*time.Second)) && end.Add(5*time.Second).After(o.Start) {
				slack = 10 * time.Second
			}
		}
		from, to := o.Start.Add(-slack), o.End.Add(slack)
		bad := ""
		if m := reDomainHeld.FindStringSubmatch(o.Msg); m != nil {
			uuid, host := strings.ToLower(m[2]), m[3]
			if !in.hist.matchDuring("/virtlease/domains/"+uuid, true, from, to, func(_ string, v []byte) bool {
				r, ok := decode[record](v)
				return ok && r.Host == host
			}) {
				bad = fmt.Sprintf("says domain %s runs on %s, but etcd's domains/%s never named %s between %s and %s", m[1], host, uuid, host, clock(from), clock(to))
			}
		} else if m := reDiskHeld.FindStringSubmatch(o.Msg); m != nil {
			uuid, host := strings.ToLower(m[3]), m[4]
			if !in.hist.matchDuring("/virtlease/disks/", false, from, to, func(_ string, v []byte) bool {
				r, ok := decode[record](v)
				return ok && r.Host == host && strings.EqualFold(r.UUID, uuid)
			}) {
				bad = fmt.Sprintf("says disk %s is used by %s on %s, but no disks/ key named that holder between %s and %s", m[1], m[2], host, clock(from), clock(to))
			}
		} else if m := reMigDisk.FindStringSubmatch(o.Msg); m != nil {
			uuid, src, dst := strings.ToLower(m[2]), m[3], m[4]
			if !in.hist.matchDuring("/virtlease/migrations/"+uuid, true, from, to, func(_ string, v []byte) bool {
				r, ok := decode[migrationRec](v)
				return ok && r.From == src && r.To == dst
			}) {
				bad = fmt.Sprintf("says disk %s belongs to %s migrating %s→%s, but no such migrations/ record between %s and %s", m[1], uuid, src, dst, clock(from), clock(to))
			}
		} else if m := reMigrating.FindStringSubmatch(o.Msg); m != nil {
			uuid, src, dst := strings.ToLower(m[2]), m[3], m[4]
			if !in.hist.matchDuring("/virtlease/migrations/"+uuid, true, from, to, func(_ string, v []byte) bool {
				r, ok := decode[migrationRec](v)
				return ok && r.From == src && r.To == dst
			}) {
				bad = fmt.Sprintf("says %s is migrating %s→%s, but no such migrations/ record between %s and %s", m[1], src, dst, clock(from), clock(to))
			}
		} else if m := reUnfenced.FindStringSubmatch(o.Msg); m != nil {
			uuid, host := strings.ToLower(m[2]), m[3]
			if !in.hist.matchDuring("/virtlease/unfenced/"+host, true, from, to, func(_ string, v []byte) bool {
				r, ok := decode[unfencedRec](v)
				return ok && slices.ContainsFunc(r.Guests, func(g unfencedGuest) bool { return strings.EqualFold(g.UUID, uuid) })
			}) {
				bad = fmt.Sprintf("says %s may still run on %s (unfenced), but unfenced/%s never listed it between %s and %s", m[1], host, host, clock(from), clock(to))
			}
		}
		if bad == "" {
			continue
		}
		out = append(out, violation{Key: fmt.Sprintf("refusal/%d", o.ID), Kind: "refusal", At: o.Start, Hosts: []string{o.Host},
			Msg: fmt.Sprintf("op#%d start %s on %s was refused with a wrong holder: it %s (message: %s)", o.ID, o.Dom.Name, o.Host, bad, o.Msg)})
	}
	return out
}

// stats is what the final table shows.
type stats struct {
	starts, startOK, refused, already, startErr int
	stops, stopOK                               int
	migrations, migOK                           int
	refusalKinds                                map[string]int
	otherRefusals                               []string        // a few refusals no pattern knows, for the report
	fenceTimes                                  []time.Duration // partition fault start → the host's last guest gone
	restartTimes                                []time.Duration // host fault start → HA guest running elsewhere
	haRestarts                                  int             // HA guests started by no operation of ours
	lost                                        int             // QEMUs gone because of a fault
	haStopped                                   []string        // HA guests lost to a fault whose intent became "stopped"
	liveResets                                  []string        // resets of a host whose watchdog process was not faulted
}

// explainedStart reports whether an op of ours explains a QEMU of uuid
// appearing on host at t.
func (in *checkInput) explainedStart(uuid, host string, t time.Time) bool {
	for _, o := range in.ops {
		if o.Dom.UUID != uuid || o.Start.IsZero() || t.Before(o.Start) || t.After(in.opEnd(o).Add(2*time.Second)) {
			continue
		}
		if o.Kind == "start" && o.Host == host || o.Kind == "migrate" && o.Dest == host {
			return true
		}
	}
	return false
}

func (in *checkInput) stats() stats {
	st := stats{refusalKinds: map[string]int{}}
	for _, o := range in.ops {
		if !o.Done {
			continue
		}
		switch o.Kind {
		case "start":
			st.starts++
			switch o.Class {
			case "ok":
				st.startOK++
			case "refused":
				st.refused++
				k := refusalKind(o.Msg)
				st.refusalKinds[k]++
				if k == "other" && len(st.otherRefusals) < 3 {
					m := o.Msg
					if i := strings.Index(m, "virtlease: "); i >= 0 {
						m = m[i:]
					}
					st.otherRefusals = append(st.otherRefusals, m)
				}
			case "already":
				st.already++
			default:
				st.startErr++
			}
		case "stop":
			st.stops++
			if o.Class == "ok" {
				st.stopOK++
			}
		case "migrate":
			st.migrations++
			if o.Class == "ok" {
				st.migOK++
			}
		}
	}
	for _, s := range in.spans {
		if d := in.domains[s.UUID]; d != nil && d.HA && !in.explainedStart(s.UUID, s.Host, s.First) {
			st.haRestarts++
		}
	}
	// Each QEMU that went is charged to the latest fault of its host that
	// began before it went (and had not ended touchTail before).
	lostBy := map[*fault][]span{}
	for _, sp := range in.spans {
		if sp.Gone.IsZero() || in.explainGoneByOp(sp) {
			continue
		}
		late := sp.Gone.Add(max(in.period, 100*time.Millisecond))
		var by *fault
		for _, f := range in.faults {
			if !f.hostFault() || f.Host != sp.Host || f.Start.IsZero() || f.Start.After(late) {
				continue
			}
			end := f.End
			if end.IsZero() {
				end = in.now
			}
			if sp.Gone.After(end.Add(in.touchTail)) || sp.First.After(f.Start) {
				continue
			}
			if by == nil || f.Start.After(by.Start) {
				by = f
			}
		}
		if by != nil {
			lostBy[by] = append(lostBy[by], sp)
		}
	}
	for _, f := range in.faults {
		var last time.Time
		for _, s := range lostBy[f] {
			st.lost++
			if s.Gone.After(last) {
				last = s.Gone
			}
			d := in.domains[s.UUID]
			if d == nil || !d.HA {
				continue
			}
			// the guest's next QEMU, if nobody of ours started it
			var next *span
			for j := range in.spans {
				n := &in.spans[j]
				if n.UUID == s.UUID && !n.First.Before(s.Gone) && (next == nil || n.First.Before(next.First)) {
					next = n
				}
			}
			if next != nil && !in.explainedStart(next.UUID, next.Host, next.First) {
				st.restartTimes = append(st.restartTimes, next.First.Sub(f.Start))
			}
			// "stopped on HOST" written for this QEMU's host before
			// the guest ran again, by no destroy of ours
			until := s.Gone.Add(in.touchTail)
			if next != nil && next.First.Before(until) {
				until = next.First
			}
			// (a crash the watchdog turned back into running is fine:
			// the guest ran again)
			if next == nil && in.hist != nil && in.hist.matchDuring("/virtlease/intents/"+s.UUID, true, s.Gone.Add(-time.Second), until, func(_ string, v []byte) bool {
				r, ok := decode[intentRec](v)
				return ok && r.Want == "stopped" && strings.HasSuffix(r.Reason, " "+s.Host)
			}) && !in.stoppedByOp(s.UUID, s.Gone.Add(-time.Second), until) {
				st.haStopped = append(st.haStopped, fmt.Sprintf("%s on %s at %s (%s)", d.Name, s.Host, clock(s.Gone), f.Kind))
			}
		}
		if f.partition() && !last.IsZero() {
			st.fenceTimes = append(st.fenceTimes, last.Sub(f.Start))
		}
	}
	for _, r := range in.resets {
		// the latest fault on that host before the reset; none of them
		// stopped its watchdog process
		var last *fault
		watchdogDown := false
		for _, f := range in.faults {
			end := f.End
			if end.IsZero() {
				end = in.now
			}
			if f.Host != r.Host || r.At.Before(f.Start) || r.At.After(end.Add(in.touchTail)) {
				continue
			}
			switch f.Kind {
			case "watchdog-kill", "watchdog-stop", "power-loss", "crash-all", "mig-watchdog-stop":
				watchdogDown = true
			}
			if last == nil || f.Start.After(last.Start) {
				last = f
			}
		}
		if last != nil && !watchdogDown {
			st.liveResets = append(st.liveResets, fmt.Sprintf("%s at %s (%s, %.1fs after it began)", r.Host, clock(r.At), last.Kind, r.At.Sub(last.Start).Seconds()))
		}
	}
	return st
}

// stoppedByOp: a destroy of uuid of ours ran between from and to.
func (in *checkInput) stoppedByOp(uuid string, from, to time.Time) bool {
	for _, o := range in.ops {
		if o.Dom.UUID == uuid && o.Kind == "stop" && !o.Start.After(to) && !in.opEnd(o).Before(from) {
			return true
		}
	}
	return false
}

func (in *checkInput) explainGoneByOp(s span) bool {
	for _, o := range in.ops {
		if o.Dom.UUID != s.UUID || o.Start.IsZero() || s.Gone.Before(o.Start) || s.Gone.After(in.opEnd(o).Add(2*time.Second)) {
			continue
		}
		if (o.Kind == "stop" || o.Kind == "start") && o.Host == s.Host || o.Kind == "migrate" && (o.Host == s.Host || o.Dest == s.Host) {
			return true
		}
	}
	return false
}

// dist is min/median/p99/max of ds.
func dist(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	r := func(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
	return fmt.Sprintf("%s / %s / %s / %s (n=%d)", r(s[0]), r(q(0.5)), r(q(0.99)), r(s[len(s)-1]), len(s))
}
