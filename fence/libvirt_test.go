//go:build libvirt

// Integration tests against a real libvirtd (go test -tags libvirt ./fence/).
// They define, start and kill tiny guests of their own (type qemu, 32 MiB,
// no disk) and remove them afterwards; they never touch another domain.
//
// libvirtd is qemu:///system unless VIRTLEASE_LIBVIRT_URI names another
// (qemu+unix:///system?socket=PATH). Without its socket the tests skip, and
// fail when CI=true. Inside a container without systemd, qemu.conf needs
// user/group root, security_driver "none" and cgroup_controllers = [ ]
// (as scripts/lab.sh writes it).

package fence

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// realLibvirt dials the libvirtd under test, or skips.
func realLibvirt(t *testing.T) (*Libvirt, string) {
	t.Helper()
	uri := os.Getenv("VIRTLEASE_LIBVIRT_URI")
	sock, _, err := parseLibvirtURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no libvirtd socket at %s: %v (CI must start libvirtd)", sock, err)
		}
		t.Skipf("no libvirtd socket at %s: start one with: mkdir -p /run/libvirt; virtlogd -d; libvirtd -d", sock)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := DialLibvirt(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, sock
}

// testGuest defines a tiny guest of its own and undefines it at cleanup.
func testGuest(t *testing.T, sock string) (uuid, name string) {
	t.Helper()
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	uuid = uuidString(libvirt.UUID(b))
	name = "virtlease-fence-test-" + uuid[:8]
	xml := fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <uuid>%s</uuid>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <on_crash>destroy</on_crash>
  <devices><graphics type='vnc' port='-1' listen='127.0.0.1'/></devices>
</domain>`, name, uuid)

	lv := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(sock), dialers.WithLocalTimeout(5*time.Second)))
	if err := lv.ConnectToURI(libvirt.QEMUSystem); err != nil {
		t.Fatal(err)
	}
	d, err := lv.DomainDefineXML(xml)
	if err != nil {
		lv.Disconnect()
		t.Fatalf("define test guest: %v", err)
	}
	t.Cleanup(func() {
		_ = lv.DomainDestroy(d)
		if err := lv.DomainUndefine(d); err != nil {
			t.Errorf("undefine test guest %s: %v", name, err)
		}
		lv.Disconnect()
	})
	return uuid, name
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// nextEvent waits for an event of uuid with kind.
func nextEvent(t *testing.T, evs <-chan LifecycleEvent, uuid string, kind EventKind) LifecycleEvent {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e, ok := <-evs:
			if !ok {
				t.Fatalf("event stream closed waiting for %s of %s", kind, uuid)
			}
			if e.UUID == uuid && e.Kind == kind {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event of %s", kind, uuid)
		}
	}
}

// runningGuest returns the guest with uuid from Running, or fails.
func runningGuest(t *testing.T, l *Libvirt, uuid string) Guest {
	t.Helper()
	gs, err := l.Running(ctxFor(t, 5*time.Second), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.UUID == uuid {
			return g
		}
	}
	t.Fatalf("Running() = %+v, lacks %s", gs, uuid)
	return Guest{}
}

// thisHostQEMU finds the QEMU of uuid in /proc, as the fence does.
func thisHostQEMU(t *testing.T, l *Libvirt, uuid string) []QEMU {
	t.Helper()
	all, err := NewProcs("/proc").Find(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var mine []QEMU
	for _, q := range all {
		if q.UUID == uuid {
			mine = append(mine, q)
		}
	}
	return mine
}

func waitInactive(t *testing.T, l *Libvirt, uuid string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		active, job, err := l.State(ctxFor(t, 5*time.Second), uuid)
		if err != nil {
			t.Fatal(err)
		}
		if !active && !job {
			return time.Since(start)
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("%s still active=%v job=%v", uuid, active, job)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLibvirtGuestLifecycle(t *testing.T) {
	l, sock := realLibvirt(t)
	uuid, name := testGuest(t, sock)

	evCtx, stopEvents := context.WithCancel(context.Background())
	defer stopEvents()
	evs, err := l.Events(evCtx)
	if err != nil {
		t.Fatal(err)
	}

	// Defined, not running.
	if active, job, err := l.State(ctxFor(t, 5*time.Second), uuid); err != nil || active || job {
		t.Fatalf("State of a defined guest = %v, %v, %v; want inactive, no job", active, job, err)
	}

	// Start: event, Running with pid and XML, State active.
	start := time.Now()
	if err := l.Start(ctxFor(t, 30*time.Second), uuid); err != nil {
		t.Fatal(err)
	}
	t.Logf("Start took %v", time.Since(start))
	if e := nextEvent(t, evs, uuid, EventStarted); e.Name != name || e.DetailString() != "booted" {
		t.Errorf("started event = %v", e)
	}
	g := runningGuest(t, l, uuid)
	if g.Name != name || g.PID == 0 || !strings.Contains(g.XML, uuid) {
		t.Errorf("Running guest = {%s %s pid %d, %d bytes of XML}", g.UUID, g.Name, g.PID, len(g.XML))
	}
	if active, job, err := l.State(ctxFor(t, 5*time.Second), uuid); err != nil || !active || job {
		t.Errorf("State of a running guest = %v, %v, %v; want active, no job", active, job, err)
	}

	// Starting it again: libvirt's own words come through.
	err = l.Start(ctxFor(t, 5*time.Second), uuid)
	if err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Start: %v, want libvirt's 'already running'", err)
	}
	var lerr libvirt.Error
	if !errors.As(err, &lerr) {
		t.Errorf("second Start: %v does not wrap libvirt.Error", err)
	}

	// The fence: Find finds the guest's QEMU, KillQEMU kills it.
	procs := thisHostQEMU(t, l, uuid)
	if len(procs) != 1 || procs[0].PID != g.PID || procs[0].Name != name {
		t.Fatalf("FindQEMU for %s = %+v, want pid %d", uuid, procs, g.PID)
	}
	start = time.Now()
	if s := NewProcs("/proc").Kill(ctxFor(t, 3*time.Second), procs); len(s) != 0 {
		t.Fatalf("KillQEMU survivors: %+v", s)
	}
	t.Logf("KillQEMU: QEMU pid %d dead in %v", g.PID, time.Since(start))
	e := nextEvent(t, evs, uuid, EventStopped)
	t.Logf("libvirt saw the kill as %v after %v", e, time.Since(start))
	t.Logf("libvirt reported it inactive %v later", waitInactive(t, l, uuid))
	if err := l.Destroy(ctxFor(t, 5*time.Second), uuid); err != nil {
		t.Errorf("Destroy of a killed guest: %v, want nil", err)
	}
	if q := thisHostQEMU(t, l, uuid); len(q) != 0 {
		t.Errorf("FindQEMU after the kill: %+v", q)
	}

	// libvirt's own destroy.
	if err := l.Start(ctxFor(t, 30*time.Second), uuid); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, evs, uuid, EventStarted)
	start = time.Now()
	if err := l.Destroy(ctxFor(t, 30*time.Second), uuid); err != nil {
		t.Fatal(err)
	}
	t.Logf("libvirt Destroy of a running guest took %v", time.Since(start))
	if e := nextEvent(t, evs, uuid, EventStopped); e.DetailString() != "destroyed" {
		t.Errorf("stopped event = %v, want stopped/destroyed", e)
	}
	if active, _, err := l.State(ctxFor(t, 5*time.Second), uuid); err != nil || active {
		t.Errorf("State after Destroy = %v, %v", active, err)
	}
	if err := l.Destroy(ctxFor(t, 5*time.Second), uuid); err != nil {
		t.Errorf("Destroy of an inactive guest: %v, want nil", err)
	}

	// The stream closes when its context ends.
	stopEvents()
	for range evs {
	}
}

// TestLibvirtStoppedQEMU compares the fence's SIGKILL with libvirt's destroy
// on a QEMU that ignores SIGTERM (SIGSTOPped, as in the lab's fault tests).
func TestLibvirtStoppedQEMU(t *testing.T) {
	l, sock := realLibvirt(t)
	uuid, _ := testGuest(t, sock)

	stoppedGuest := func() Guest {
		if err := l.Start(ctxFor(t, 30*time.Second), uuid); err != nil {
			t.Fatal(err)
		}
		g := runningGuest(t, l, uuid)
		if g.PID == 0 {
			t.Fatal("no pid for the test guest")
		}
		// Our own guest's QEMU, found through libvirt's pid file.
		if err := syscall.Kill(g.PID, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		return g
	}

	g := stoppedGuest()
	procs := thisHostQEMU(t, l, uuid)
	start := time.Now()
	if s := NewProcs("/proc").Kill(ctxFor(t, 3*time.Second), procs); len(s) != 0 {
		t.Fatalf("KillQEMU survivors: %+v", s)
	}
	t.Logf("KillQEMU of a SIGSTOPped QEMU (pid %d): dead in %v", g.PID, time.Since(start))
	t.Logf("libvirt reported it inactive %v later", waitInactive(t, l, uuid))

	if testing.Short() {
		t.Skip("-short: skipping libvirt's destroy of a stopped QEMU (~10 s)")
	}
	g = stoppedGuest()
	start = time.Now()
	destroyed := make(chan error, 1)
	go func() { destroyed <- l.Destroy(ctxFor(t, 30*time.Second), uuid) }()
	// While libvirt waits for the QEMU to die it holds the domain's lock:
	// calls about that domain wait (their own deadline ends them) and must
	// not disturb the destroy in flight.
	time.Sleep(time.Second)
	for _, c := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"State", func(ctx context.Context) error {
			active, job, err := l.State(ctx, uuid)
			if err == nil {
				t.Logf("State during libvirt's destroy: active=%v job=%v", active, job)
			}
			return err
		}},
		{"Running", func(ctx context.Context) error { _, err := l.Running(ctx, false); return err }},
	} {
		callStart := time.Now()
		err := c.call(ctxFor(t, 2*time.Second))
		took := time.Since(callStart)
		t.Logf("%s during libvirt's destroy of a stopped QEMU: %v after %v", c.name, err, took)
		if took > 3*time.Second {
			t.Errorf("%s overran its 2 s deadline: %v", c.name, took)
		}
	}
	if err := <-destroyed; err != nil {
		t.Fatal(err)
	}
	t.Logf("libvirt Destroy of a SIGSTOPped QEMU (pid %d) took %v", g.PID, time.Since(start))
}

func TestLibvirtUnknownDomain(t *testing.T) {
	l, _ := realLibvirt(t)
	const unknown = "00000000-0000-4000-8000-00000000dead"
	if active, job, err := l.State(ctxFor(t, 5*time.Second), unknown); err != nil || active || job {
		t.Errorf("State(unknown) = %v, %v, %v; want inactive, no job, no error", active, job, err)
	}
	if err := l.Destroy(ctxFor(t, 5*time.Second), unknown); err != nil {
		t.Errorf("Destroy(unknown) = %v, want nil", err)
	}
	if err := l.Start(ctxFor(t, 5*time.Second), unknown); !errors.Is(err, ErrNoDomain) {
		t.Errorf("Start(unknown) = %v, want ErrNoDomain", err)
	}
}
