package main

import (
	"slices"
	"strings"
	"syscall"
	"time"
)

// Migration faults: the fault runs a live migration of its own (recorded as
// a workload operation, so the checker knows its window) and strikes one
// side of it while it is in flight:
//   - mig-watchdog-stop: the watchdog of the destination (two draws in
//     three) or the source stops cleanly (SIGTERM, as a package upgrade or
//     `systemctl restart` does: with guests running it keeps its session
//     and marks it stopped) and comes back after Hold;
//   - mig-libvirtd-restart: libvirtd of the destination or the source
//     restarts (SIGTERM, then started again after Hold).
//
// Afterwards, if the migration failed and the guest still runs on the
// source, the fault starts it on the destination as an operator who saw
// "migration failed" would: that start must be refused (a refused
// migration once left an incoming marker and record behind, and such a
// start ran the guest on both hosts).

// migFaultKinds are the kinds handled here.
var migFaultKinds = []string{"mig-watchdog-stop", "mig-libvirtd-restart"}

func isMigFault(kind string) bool { return slices.Contains(migFaultKinds, kind) }

// reserveRunning picks a domain that runs on exactly one host and that no
// operation is busy with, and marks it busy; nil when there is none.
func (w *workload) reserveRunning() (*domain, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	on := w.c.sampler.running()
	var free []*domain
	for _, d := range w.c.domains {
		if !w.busy[d.UUID] && len(on[d.UUID]) == 1 {
			free = append(free, d)
		}
	}
	if len(free) == 0 {
		return nil, ""
	}
	d := free[w.c.faultRng.IntN(len(free))]
	w.busy[d.UUID] = true
	return d, on[d.UUID][0]
}

// unreserve ends reserveRunning's claim on d.
func (w *workload) unreserve(d *domain) {
	w.mu.Lock()
	w.busy[d.UUID] = false
	w.mu.Unlock()
}

// runOwn records o as a workload operation and runs it (the caller holds
// o.Dom busy).
func (w *workload) runOwn(o *op) *op {
	w.mu.Lock()
	o.ID = len(w.ops) + 1
	w.ops = append(w.ops, o)
	w.mu.Unlock()
	w.run(o)
	return o
}

// injectMigration applies a migration fault (see migFaultKinds).
func (c *campaign) injectMigration(f *fault, fail func(error)) {
	l, rng := c.lab, c.faultRng
	d, src := c.work.reserveRunning()
	if d == nil {
		f.Note = "no guest to migrate"
		c.event("FAULT %s: no running guest free to migrate", f.Kind)
		return
	}
	defer c.work.unreserve(d)
	others := slices.DeleteFunc(slices.Clone(l.hosts), func(h string) bool { return h == src })
	dst := others[rng.IntN(len(others))]
	side := dst
	if rng.IntN(3) == 0 {
		side = src
	}
	f.Host = side
	// Strike anywhere in the migration (about 2 s in the lab), from its
	// first hook on.
	delay := time.Duration(rng.Int64N(int64(2500 * time.Millisecond)))
	role := "destination"
	if side == src {
		role = "source"
	}
	f.Note = d.Name + " " + src + "→" + dst + ", " + role + " after " + delay.Round(time.Millisecond).String()
	done := make(chan *op, 1)
	go func() { done <- c.work.runOwn(&op{Kind: "migrate", Dom: d, Host: src, Dest: dst}) }()
	time.Sleep(delay)
	switch f.Kind {
	case "mig-watchdog-stop":
		c.event("FAULT %s: migrating %s %s→%s; stop %s's watchdog (SIGTERM, the %s) for %s", f.Kind, d.Name, src, dst, side, role, f.Hold)
		fail(l.mustSh(30*time.Second, "stop-watchdog", side))
		time.Sleep(f.Hold)
		// as systemd restarts it: at once (lab.sh boot looks at every
		// daemon first, and the stand-in device would fire meanwhile)
		if err := l.mustSh(60*time.Second, "start-watchdog", side); err != nil {
			fail(c.boot(side))
		}
	case "mig-libvirtd-restart":
		c.event("FAULT %s: migrating %s %s→%s; restart %s's libvirtd (the %s), down for %s", f.Kind, d.Name, src, dst, side, role, f.Hold)
		fail(signal(l.libvirtdPIDs(side), syscall.SIGTERM))
		time.Sleep(f.Hold)
		fail(c.boot(side))
	}
	m := <-done
	on := c.sampler.running()[d.UUID]
	if m.Class == "ok" || !slices.Equal(on, []string{src}) {
		return
	}
	// The migration failed and the guest runs on the source only: the
	// operator's start on the destination must be refused.
	s := c.work.runOwn(&op{Kind: "start", Dom: d, Host: dst})
	if s.Class == "ok" {
		f.Note += "; start on " + dst + " after the failed migration SUCCEEDED"
		c.event("fault %s: %s started on %s although %s runs it", f.Kind, d.Name, dst, src)
		return
	}
	f.Note += "; start on " + dst + " " + s.Class
	if s.Class != "refused" {
		f.Note += " (" + strings.TrimSpace(s.Msg) + ")"
	}
}
