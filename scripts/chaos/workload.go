package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// domain is one guest the campaign starts, stops and migrates. Every host
// defines it with the same UUID.
type domain struct {
	Name, UUID string
	HA         bool
	Disks      []string // the checker's disk IDs: domains sharing one share it
	Unsafe     bool     // a file disk: live migration needs --unsafe
	XML        string   // defined by the campaign ("" : by lab.sh)
}

const haMeta = `<vl:lease xmlns:vl="https://virtlease.dev/xmlns/1" mode="ha"/>`

// campaignDomains: the lab's three (vm1 and vm1-copy share a qcow2 file,
// vm2 an nbd export every host can open), three diskless HA guests, and an
// HA guest whose disk is vm2's nbd export under another UUID (a copied XML
// that really could write the same disk from two hosts).
func campaignDomains(nbdPort int) []*domain {
	diskless := func(name, uuid string) string {
		return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <uuid>%s</uuid>
  <metadata>%s</metadata>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
  </devices>
</domain>
`, name, uuid, haMeta)
	}
	nbdHA := fmt.Sprintf(`<domain type='qemu'>
  <name>vm2-ha</name>
  <uuid>5d0e1a5e-0000-4000-8000-0000000003c2</uuid>
  <metadata>%s</metadata>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd' name='vm2'><host name='127.0.0.1' port='%d'/></source>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
`, haMeta, nbdPort)
	return []*domain{
		{Name: "vm1", UUID: "5d0e1a5e-0000-4000-8000-000000000001", Disks: []string{"file:vm1.qcow2"}, Unsafe: true},
		{Name: "vm1-copy", UUID: "5d0e1a5e-0000-4000-8000-0000000000c1", Disks: []string{"file:vm1.qcow2"}, Unsafe: true},
		{Name: "vm2", UUID: "5d0e1a5e-0000-4000-8000-000000000002", Disks: []string{"nbd:vm2"}},
		{Name: "ha1", UUID: "5d0e1a5e-0000-4000-8000-000000000301", HA: true, XML: diskless("ha1", "5d0e1a5e-0000-4000-8000-000000000301")},
		{Name: "ha2", UUID: "5d0e1a5e-0000-4000-8000-000000000302", HA: true, XML: diskless("ha2", "5d0e1a5e-0000-4000-8000-000000000302")},
		{Name: "ha3", UUID: "5d0e1a5e-0000-4000-8000-000000000303", HA: true, XML: diskless("ha3", "5d0e1a5e-0000-4000-8000-000000000303")},
		{Name: "vm2-ha", UUID: "5d0e1a5e-0000-4000-8000-0000000003c2", HA: true, Disks: []string{"nbd:vm2"}, XML: nbdHA},
	}
}

// defineDomains defines the campaign's own domains on every host.
func (c *campaign) defineDomains() error {
	dir := filepath.Join(c.lab.root, "chaos-xml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range c.domains {
		if d.XML == "" {
			continue
		}
		f := filepath.Join(dir, d.Name+".xml")
		if err := os.WriteFile(f, []byte(d.XML), 0o644); err != nil {
			return err
		}
		for _, h := range c.lab.hosts {
			if r := c.lab.virsh(time.Minute, h, "define", f); r.Err != nil {
				return fmt.Errorf("%s: virsh define %s: %s", h, f, r.msg())
			}
		}
	}
	return nil
}

// op is one workload operation.
type op struct {
	ID         int
	Kind       string // start, stop, migrate
	Dom        *domain
	Host       string // where virsh ran (the source of a migration)
	Dest       string // a migration's destination
	Start, End time.Time
	Done       bool
	Class      string // ok, refused, already, error, timeout
	Code       int
	Msg        string
}

func (o *op) String() string {
	where := o.Host
	if o.Kind == "migrate" {
		where = o.Host + "→" + o.Dest
	}
	s := fmt.Sprintf("op#%d %s %s on %s", o.ID, o.Kind, o.Dom.Name, where)
	if o.Done {
		s += fmt.Sprintf(": %s in %s", o.Class, o.End.Sub(o.Start).Round(time.Millisecond))
		if o.Class != "ok" && o.Msg != "" {
			s += ": " + o.Msg
		}
	}
	return s
}

// workload runs random operations until stopped: at most maxInFlight at
// once and one at a time per domain.
type workload struct {
	c   *campaign
	rng *rand.Rand

	mu       sync.Mutex
	busy     map[string]bool
	ops      []*op
	inflight int
	wg       sync.WaitGroup
	stopCh   chan struct{}
	loopDone chan struct{}
}

const maxInFlight = 3

func newWorkload(c *campaign, seed uint64) *workload {
	return &workload{c: c, rng: rand.New(rand.NewPCG(seed, 0x776f726b6c6f6164)), busy: map[string]bool{},
		stopCh: make(chan struct{}), loopDone: make(chan struct{})}
}

func (w *workload) start() { go w.loop() }

// stop ends the loop and waits for the operations in flight.
func (w *workload) stop() {
	close(w.stopCh)
	<-w.loopDone
	w.wg.Wait()
}

func (w *workload) loop() {
	defer close(w.loopDone)
	for {
		select {
		case <-w.stopCh:
			return
		case <-time.After(time.Duration(200+w.rng.IntN(700)) * time.Millisecond):
		}
		w.mu.Lock()
		if w.inflight >= maxInFlight {
			w.mu.Unlock()
			continue
		}
		var free []*domain
		for _, d := range w.c.domains {
			if !w.busy[d.UUID] {
				free = append(free, d)
			}
		}
		if len(free) == 0 {
			w.mu.Unlock()
			continue
		}
		d := free[w.rng.IntN(len(free))]
		o := w.pick(d)
		if o == nil {
			w.mu.Unlock()
			continue
		}
		o.ID = len(w.ops) + 1
		w.ops = append(w.ops, o)
		w.busy[d.UUID] = true
		w.inflight++
		w.wg.Add(1)
		w.mu.Unlock()
		go func() {
			defer w.wg.Done()
			w.run(o)
			w.mu.Lock()
			w.busy[d.UUID] = false
			w.inflight--
			w.mu.Unlock()
		}()
	}
}

// pick chooses what to do with d (w.mu held): start it where it does not
// run, or, where it runs, stop it, migrate it, or try to start it on another
// host (which must be refused).
func (w *workload) pick(d *domain) *op {
	hosts := w.c.lab.hosts
	on := w.c.sampler.running()[d.UUID]
	any := hosts[w.rng.IntN(len(hosts))]
	if len(on) == 0 {
		// A second guest on one disk is a refusal to check, too.
		return &op{Kind: "start", Dom: d, Host: any}
	}
	src := on[0]
	others := slices.DeleteFunc(slices.Clone(hosts), func(h string) bool { return h == src })
	other := others[w.rng.IntN(len(others))]
	// HA guests are stopped less often: a fault should find them running.
	stop := 25
	if d.HA {
		stop = 10
	}
	switch x := w.rng.IntN(100); {
	case x < 35:
		return &op{Kind: "start", Dom: d, Host: other}
	case x < 35+stop:
		return &op{Kind: "stop", Dom: d, Host: src}
	case x < 92:
		return &op{Kind: "migrate", Dom: d, Host: src, Dest: other}
	default:
		return &op{Kind: "start", Dom: d, Host: any}
	}
}

func (w *workload) run(o *op) {
	l := w.c.lab
	var r result
	w.mu.Lock()
	o.Start = time.Now()
	w.mu.Unlock()
	switch o.Kind {
	case "start":
		r = l.virsh(90*time.Second, o.Host, "start", o.Dom.Name)
	case "stop":
		r = l.virsh(90*time.Second, o.Host, "destroy", o.Dom.Name)
	case "migrate":
		args := []string{"migrate", "--live"}
		if o.Dom.Unsafe {
			args = append(args, "--unsafe")
		}
		args = append(args, o.Dom.Name, l.uri(o.Dest), "tcp://127.0.0.1")
		r = l.virsh(120*time.Second, o.Host, args...)
	}
	w.mu.Lock()
	o.End, o.Code, o.Msg, o.Done = time.Now(), r.Code, r.msg(), true
	switch {
	case r.Code == 0:
		o.Class = "ok"
	case r.Code < 0:
		o.Class = "timeout"
	case strings.Contains(o.Msg, "Hook script execution failed"):
		o.Class = "refused"
	case strings.Contains(o.Msg, "already active") || strings.Contains(o.Msg, "already running") ||
		strings.Contains(o.Msg, "domain is not running"):
		o.Class = "already"
	default:
		o.Class = "error"
	}
	s := o.String()
	w.mu.Unlock()
	w.c.event("%s", s)
}

// snapshot copies the operations so far.
func (w *workload) snapshot() []op {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]op, len(w.ops))
	for i, o := range w.ops {
		out[i] = *o
	}
	return out
}
