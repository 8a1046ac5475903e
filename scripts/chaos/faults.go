package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// fault is one injected fault: applied at Start, reverted at End.
type fault struct {
	Cycle  int
	Kind   string
	Host   string // the host it touched ("" for an etcd fault)
	Member int    // the etcd member (etcd faults), -1 otherwise
	Hold   time.Duration
	Delay  time.Duration // slow link: latency per chunk
	Start  time.Time
	End    time.Time
	Note   string
	Err    string
}

func (f *fault) target() string {
	if f.Host != "" {
		return f.Host
	}
	if f.Member >= 0 {
		return "etcd#" + strconv.Itoa(f.Member)
	}
	return "-"
}

func (f *fault) String() string {
	s := fmt.Sprintf("%-16s %-7s hold %5.1fs", f.Kind, f.target(), f.Hold.Seconds())
	if f.Delay > 0 {
		s += fmt.Sprintf(" delay %.1fs", f.Delay.Seconds())
	}
	if f.Note != "" {
		s += " (" + f.Note + ")"
	}
	return s
}

// hostFault: the fault acts on one host (its link, daemons or power).
func (f *fault) hostFault() bool { return f.Host != "" }

// partition: the host loses (or mostly loses) etcd; its watchdog must fence.
func (f *fault) partition() bool {
	return f.Kind == "freeze-short" || f.Kind == "freeze-long" || f.Kind == "slow-link"
}

// faultKinds with their weights.
var faultKinds = []struct {
	kind   string
	weight int
}{
	{"freeze-short", 12},
	{"freeze-long", 12},
	{"slow-link", 10},
	{"watchdog-kill", 8},
	{"watchdog-stop", 8},
	{"libvirtd-kill", 8},
	{"libvirtd-stop", 7},
	{"etcd-leader-kill", 9},
	{"etcd-leader-stop", 8},
	{"etcd-member-restart", 6},
	{"power-loss", 10},
	{"crash-all", 5},
	{"qemu-kill", 5},
	{"mig-watchdog-stop", 6},
	{"mig-libvirtd-restart", 6},
}

// drawFault draws the next fault from the seed's generator.
func (c *campaign) drawFault(rng *rand.Rand, cycle int) *fault {
	total := 0
	for _, k := range faultKinds {
		total += k.weight
	}
	x := rng.IntN(total)
	kind := ""
	for _, k := range faultKinds {
		if x < k.weight {
			kind = k.kind
			break
		}
		x -= k.weight
	}
	if c.onlyKinds != nil && !c.onlyKinds[kind] {
		return c.drawFault(rng, cycle)
	}
	ttl := c.lab.ttl
	u := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	f := &fault{Cycle: cycle, Kind: kind, Member: -1}
	if !strings.HasPrefix(kind, "etcd-") && !isMigFault(kind) {
		f.Host = c.lab.hosts[rng.IntN(len(c.lab.hosts))]
	}
	switch kind {
	case "freeze-short":
		f.Hold = u(500*time.Millisecond, ttl-500*time.Millisecond)
	case "freeze-long":
		f.Hold = u(ttl+time.Second, ttl+4*time.Second)
	case "slow-link":
		f.Delay = u(500*time.Millisecond, 3*time.Second).Round(100 * time.Millisecond)
		f.Hold = u(2*time.Second, ttl+3*time.Second)
	case "watchdog-kill":
		f.Hold = u(300*time.Millisecond, ttl+4*time.Second)
	case "watchdog-stop":
		f.Hold = u(300*time.Millisecond, ttl+2*time.Second)
	case "libvirtd-kill":
		f.Hold = u(300*time.Millisecond, 5*time.Second)
	case "libvirtd-stop":
		f.Hold = u(300*time.Millisecond, 6*time.Second)
	case "etcd-leader-kill", "etcd-leader-stop":
		f.Hold = u(500*time.Millisecond, 6*time.Second)
	case "etcd-member-restart":
		f.Member = rng.IntN(c.lab.members)
		f.Hold = u(0, 2*time.Second)
	case "power-loss":
		f.Hold = u(time.Second, ttl+4*time.Second)
	case "qemu-kill":
		f.Hold = 0
	case "mig-watchdog-stop":
		// back before the stand-in watchdog device fires (ttl − 2 ×
		// renew − 1 s): a restart, not a reset
		f.Hold = u(200*time.Millisecond, 1500*time.Millisecond)
	case "mig-libvirtd-restart":
		f.Hold = u(200*time.Millisecond, 3*time.Second)
	case "crash-all":
		// back before the stand-in watchdog device fires: a crash of
		// every daemon and guest, not a reboot
		f.Hold = u(300*time.Millisecond, time.Second)
	}
	return f
}

// inject applies f, holds it, reverts it. Errors of the lab commands are
// recorded on f (the settle step repairs what is left).
func (c *campaign) inject(f *fault) {
	l := c.lab
	fail := func(err error) {
		if err != nil {
			f.Err = strings.TrimSpace(f.Err + "; " + err.Error())
			c.event("fault %s: %v", f.Kind, err)
		}
	}
	hold := func() { time.Sleep(f.Hold) }
	f.Start = time.Now()
	switch f.Kind {
	case "mig-watchdog-stop", "mig-libvirtd-restart":
		c.injectMigration(f, fail)
	case "freeze-short", "freeze-long":
		c.event("FAULT %s: freeze %s's proxies for %s", f.Kind, f.Host, f.Hold)
		fail(l.mustSh(30*time.Second, "freeze", f.Host))
		hold()
		fail(l.mustSh(30*time.Second, "thaw", f.Host))
	case "slow-link":
		c.event("FAULT %s: cut %s's proxies, heal them with %s per chunk, for %s", f.Kind, f.Host, f.Delay, f.Hold)
		fail(l.mustSh(30*time.Second, "cut", f.Host))
		fail(l.mustSh(60*time.Second, "heal", f.Host, f.Delay.String()))
		hold()
		fail(l.mustSh(60*time.Second, "heal", f.Host))
	case "watchdog-kill":
		pid := l.watchdogPID(f.Host)
		c.event("FAULT %s: SIGKILL %s's watchdog (pid %d), back after %s", f.Kind, f.Host, pid, f.Hold)
		if pid == 0 {
			f.Note = "no watchdog running"
		}
		fail(signal([]int{pid}, syscall.SIGKILL))
		hold()
		fail(c.boot(f.Host))
	case "watchdog-stop":
		pid := l.watchdogPID(f.Host)
		c.event("FAULT %s: SIGSTOP %s's watchdog (pid %d) for %s", f.Kind, f.Host, pid, f.Hold)
		if pid == 0 {
			f.Note = "no watchdog running"
		}
		fail(signal([]int{pid}, syscall.SIGSTOP))
		hold()
		if procAlive(pid) {
			fail(signal([]int{pid}, syscall.SIGCONT))
		} else {
			f.Note = "host reset while stopped"
		}
		fail(c.boot(f.Host))
	case "libvirtd-kill":
		pids := l.libvirtdPIDs(f.Host)
		c.event("FAULT %s: SIGKILL %s's libvirtd %v, restart after %s", f.Kind, f.Host, pids, f.Hold)
		fail(signal(pids, syscall.SIGKILL))
		hold()
		fail(c.boot(f.Host))
	case "libvirtd-stop":
		pids := l.libvirtdPIDs(f.Host)
		c.event("FAULT %s: SIGSTOP %s's libvirtd %v for %s", f.Kind, f.Host, pids, f.Hold)
		fail(signal(pids, syscall.SIGSTOP))
		hold()
		fail(signal(pids, syscall.SIGCONT))
	case "etcd-leader-kill", "etcd-leader-stop":
		r := l.sh(15*time.Second, "etcd-leader")
		m, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
		if r.Err != nil || err != nil {
			m = 0
			f.Note = "leader unknown, member 0"
		}
		f.Member = m
		if f.Kind == "etcd-leader-kill" {
			c.event("FAULT %s: SIGKILL etcd member %d (leader), start it again after %s", f.Kind, m, f.Hold)
			fail(l.mustSh(15*time.Second, "etcd-kill", strconv.Itoa(m)))
			hold()
			fail(c.etcdStart(m))
		} else {
			c.event("FAULT %s: SIGSTOP etcd member %d (leader) for %s", f.Kind, m, f.Hold)
			fail(l.mustSh(15*time.Second, "etcd-stop", strconv.Itoa(m)))
			hold()
			fail(l.mustSh(15*time.Second, "etcd-cont", strconv.Itoa(m)))
		}
	case "etcd-member-restart":
		c.event("FAULT %s: SIGKILL etcd member %d, start it again after %s", f.Kind, f.Member, f.Hold)
		fail(l.mustSh(15*time.Second, "etcd-kill", strconv.Itoa(f.Member)))
		hold()
		fail(c.etcdStart(f.Member))
	case "qemu-kill":
		// a guest crashes (its QEMU dies, libvirtd sees it go)
		qs := l.hostComm(f.Host, "qemu")
		if len(qs) == 0 {
			f.Note = "no guest to crash"
			c.event("FAULT %s: %s runs no guest", f.Kind, f.Host)
			break
		}
		q := qs[c.faultRng.IntN(len(qs))]
		f.Note = "pid " + strconv.Itoa(q)
		c.event("FAULT %s: SIGKILL QEMU pid %d on %s (a guest crash)", f.Kind, q, f.Host)
		fail(signal([]int{q}, syscall.SIGKILL))
	case "power-loss", "crash-all":
		// libvirtd first, so that no hook runs for the dying guests (a
		// power loss runs none), then the guests, then the watchdog. A
		// power loss then takes the rest (virtlogd) and the host comes
		// back with an empty /run (lab.sh boot --cold); after crash-all
		// it comes back as it was (restart-libvirtd + start-watchdog).
		ld := l.libvirtdPIDs(f.Host)
		qs := l.hostComm(f.Host, "qemu")
		wd := l.watchdogPID(f.Host)
		c.event("FAULT %s: SIGKILL %s's libvirtd %v, QEMUs %v, watchdog %d; back after %s", f.Kind, f.Host, ld, qs, wd, f.Hold)
		fail(signal(ld, syscall.SIGKILL))
		fail(signal(qs, syscall.SIGKILL))
		fail(signal([]int{wd}, syscall.SIGKILL))
		if f.Kind == "power-loss" {
			time.Sleep(50 * time.Millisecond)
			fail(signal(l.hostPIDs(f.Host), syscall.SIGKILL))
		}
		hold()
		fail(c.boot(f.Host))
	}
	f.End = time.Now()
	c.event("fault %s on %s reverted", f.Kind, f.target())
}

// boot brings a host's daemons back (lab.sh boot), retrying: the stand-in
// hardware watchdog may still reset the host while it comes up. A host
// with nothing left running (a reset, a power loss) boots cold: its /run
// is emptied, as a reboot does.
func (c *campaign) boot(h string) error {
	var err error
	for i := 0; i < 4; i++ {
		args := []string{"boot", h}
		if len(c.lab.hostPIDs(h)) == 0 {
			args = append(args, "--cold")
			time.Sleep(200 * time.Millisecond) // the killed processes' last hooks
		}
		c.event("lab.sh %s", strings.Join(args, " "))
		if err = c.lab.mustSh(90*time.Second, args...); err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return err
}

func (c *campaign) etcdStart(m int) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = c.lab.mustSh(60*time.Second, "etcd-start", strconv.Itoa(m)); err == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return err
}
