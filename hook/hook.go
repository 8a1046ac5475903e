// Package hook is virtlease's libvirt QEMU hook: libvirt runs it as
// /etc/libvirt/hooks/qemu NAME OP SUBOP EXTRA with the domain XML on stdin,
// and waits for it. It claims the domain and its writable disks in etcd on
// prepare, refuses the start when another host holds them, and releases what
// is this host's when the guest stops.
//
// Contract with libvirt, per operation (see Run):
//   - prepare begin fails closed: anything uncertain (no live session, etcd
//     unreachable, bad XML, bad config) refuses the start;
//   - reconnect begin fails open: only a key held by another host fails it
//     (libvirt then kills the guest, which is right); anything else exits 0,
//     because failing there kills healthy guests and fencing is the
//     watchdog's job;
//   - stopped/release end never fail: the QEMU is gone already;
//   - restore begin fails closed, like prepare: a saved state is restored
//     only when nobody started the guest elsewhere since (restore.go).
//
// The hook never writes to stdout (libvirt reads stdout as a new XML for
// migrate and restore), never calls back into libvirt (libvirtd is waiting
// for us: a deadlock), and never outlives its deadline.
package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// Exit codes, for libvirt and scripts.
const (
	ExitOK          = 0
	ExitRefused     = 1 // another host holds it, or this host cannot vouch for itself
	ExitUsage       = 2 // bad arguments, XML or config
	ExitUnavailable = 3 // etcd did not answer in time
)

// Error is a hook failure with the exit code it maps to.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Code returns the exit code for err: 0 for nil, the code of an *Error, and
// by kind otherwise.
func Code(err error) int {
	var he *Error
	var held *lease.HeldError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &he):
		return he.Code
	case errors.As(err, &held), errors.Is(err, lease.ErrNoLiveSession), errors.Is(err, lease.ErrNoSession):
		return ExitRefused
	case errors.Is(err, lease.ErrUnavailable):
		return ExitUnavailable
	}
	return ExitRefused
}

// Claims is what the hook needs of the lease store.
type Claims interface {
	Claim(ctx context.Context, h lease.Holder, c lease.Claim) (lease.ClaimResult, error)
	Release(ctx context.Context, h lease.Holder, uuid string, disks []string, intent *lease.Intent) (int, error)
	Holding(ctx context.Context, uuid string) (*lease.Record, error)
	RecordMigration(ctx context.Context, h lease.Holder, uuid, name string, disks []string) (string, error)
	HandOff(ctx context.Context, src lease.Holder, uuid, name string, disks []string) (bool, error)
	DropMigration(ctx context.Context, h lease.Holder, uuid string) error
	LastRun(ctx context.Context, uuid string) (*lease.Run, error)
}

// Config is the part of virtlease's configuration the hook uses.
type Config struct {
	Host string
	// Margin is the watchdog's fence margin: the hook refuses a start
	// once the session is within Margin of its deadline, because the
	// watchdog may be fencing by then.
	Margin time.Duration
	// StateDir holds the session file and the per-domain markers
	// (default /run/virtlease: a tmpfs, so nothing survives a reboot).
	StateDir string
	// RunsDir keeps, per domain, the run this host's last start of it
	// recorded in etcd (default /var/lib/virtlease/runs: it must survive
	// a reboot, as a saved state does). "" keeps none: every restore of a
	// domain etcd has a record of is refused.
	RunsDir string
	// SaveDir is where libvirt keeps managed saves, NAME.save (default
	// /var/lib/libvirt/qemu/save); "" skips the check that no start but a
	// restore leaves one behind.
	SaveDir string
}

// Hook runs one libvirt hook call. The zero value is not usable: set every
// field.
type Hook struct {
	Config Config
	// Connect dials etcd; it is called only by operations that need etcd,
	// so the calls that answer from local state never wait on it.
	Connect func(ctx context.Context) (Claims, error)
	// BootNow and BootID read the boot clock and boot ID (lease.BootNow
	// and lease.BootID in production).
	BootNow func() time.Duration
	BootID  func() (string, error)
}

// maxXML bounds what we read from libvirt; real domain XMLs are a few KiB.
const maxXML = 16 << 20

// Run handles one call. ctx carries the hook's overall deadline. The
// returned error's message is the one line virsh shows; Code gives the exit
// status.
func (h *Hook) Run(ctx context.Context, args []string, stdin io.Reader) error {
	call, err := ParseArgs(args)
	if err != nil {
		return &Error{Code: ExitUsage, Err: err}
	}
	switch {
	case call.Op == "prepare" && call.SubOp == "begin":
		return h.prepare(ctx, stdin)
	case call.Op == "started" && call.SubOp == "begin":
		return h.started(stdin)
	case (call.Op == "stopped" || call.Op == "release") && call.SubOp == "end":
		return h.release(ctx, call, stdin)
	case call.Op == "reconnect" && call.SubOp == "begin":
		return h.reconnect(ctx, stdin)
	case call.Op == "migrate" && call.SubOp == "begin":
		return h.migrate(ctx, stdin)
	case call.Op == "restore" && call.SubOp == "begin":
		return h.restore(ctx, stdin)
	}
	return nil // attach, … need nothing from us
}

func readDomain(stdin io.Reader) (Domain, error) {
	d, _, err := readDomainXML(stdin)
	return d, err
}

// readDomainXML is readDomain that also returns the XML as read.
func readDomainXML(stdin io.Reader) (Domain, []byte, error) {
	b, err := io.ReadAll(io.LimitReader(stdin, maxXML+1))
	if err != nil {
		return Domain{}, nil, fmt.Errorf("reading the domain XML from stdin: %w", err)
	}
	if len(b) > maxXML {
		return Domain{}, nil, fmt.Errorf("domain XML on stdin is larger than %d MiB", maxXML>>20)
	}
	d, err := ParseDomain(b)
	return d, b, err
}

// maxRecordedXML bounds the XML kept with an HA intent in etcd.
const maxRecordedXML = 64 << 10

// passwdAttr matches graphics passwords, which must never reach etcd.
// Compiled on first use, not at package init: every hook call starts this
// binary, and only an HA prepare needs it.
var passwdAttr = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`\s(passwd|passwdValidTo)=("[^"]*"|'[^']*')`)
})

// recordableXML is the domain XML to keep with an HA intent, for hosts
// that lack the domain (ha.define_missing): without passwords (secrets are
// only referenced by UUID in a domain XML), and not at all when too large.
func recordableXML(b []byte) string {
	if len(b) > maxRecordedXML {
		return ""
	}
	return passwdAttr().ReplaceAllString(string(b), "")
}

// session reads the session file and checks that this host may start
// guests now.
func (h *Hook) session() (lease.Session, error) {
	s, err := lease.ReadSession(filepath.Join(h.Config.StateDir, "session"))
	if err != nil {
		return s, err
	}
	boot, err := h.BootID()
	if err != nil {
		return s, err
	}
	if err := s.Live(h.BootNow(), boot, h.Config.Margin); err != nil {
		return s, err
	}
	if s.Host != h.Config.Host {
		return s, fmt.Errorf("%w (the session file names host %q, the config %q)", lease.ErrNoLiveSession, s.Host, h.Config.Host)
	}
	return s, nil
}

func (h *Hook) prepare(ctx context.Context, stdin io.Reader) error {
	dom, raw, err := readDomainXML(stdin)
	if err != nil {
		return &Error{Code: ExitUsage, Err: err}
	}
	if dom.Mode == ModeOff {
		return h.checkUnprotected(ctx, dom)
	}
	restore := h.takeRestoring(dom.UUID)
	refused := h.marker("refused", dom.UUID)
	s, err := h.session()
	if err != nil {
		writeMarker(refused, err.Error())
		return fmt.Errorf("cannot start %s: %w", dom.Name, err)
	}
	if _, err := os.Stat(filepath.Join(h.Config.StateDir, "shutdown")); err == nil {
		writeMarker(refused, "shutting down")
		return &Error{Code: ExitRefused, Err: fmt.Errorf("host %s is shutting down; refusing to start %s here", h.Config.Host, dom.Name)}
	}
	claims, err := h.Connect(ctx)
	if err != nil {
		writeMarker(refused, err.Error())
		return &Error{Code: ExitUsage, Err: err}
	}
	c := lease.Claim{UUID: dom.UUID, Name: dom.Name, Disks: dom.DiskIDs(), Start: true, Restore: restore}
	if from, ok := h.incoming(dom.UUID); ok {
		// An incoming live migration: the source keeps its keys until
		// its QEMU is gone and it hands them over. Only this prepare,
		// the one right after the migrate hook, may use the marker: it
		// becomes "migrated" (for release and reconcile), so no later
		// plain start can claim as incoming (found by the model,
		// docs/model: code-incoming-marker-ttl).
		c.IncomingFrom = from
		os.MkdirAll(filepath.Dir(h.marker("migrated", dom.UUID)), 0o755)
		os.Rename(h.marker("incoming", dom.UUID), h.marker("migrated", dom.UUID))
	}
	if restore == nil {
		if err := h.checkNoSavedState(dom); err != nil {
			writeMarker(refused, err.Error())
			return err
		}
	}
	if dom.Mode == ModeHA {
		c.Intent = &lease.Intent{Want: lease.WantRunning, Name: dom.Name, Candidates: dom.Hosts, Since: time.Now().UTC().Truncate(time.Second),
			XML: recordableXML(raw)}
	}
	// The claim must be settled before the watchdog's fence point: a claim
	// acknowledged later may belong to a session that is being fenced.
	fenceIn := time.Duration(s.Deadline) - h.Config.Margin - h.BootNow()
	cctx, cancel := context.WithTimeout(ctx, fenceIn)
	res, err := claims.Claim(cctx, s.Holder(), c)
	cancel()
	if err == nil {
		// The start is recorded in etcd whether or not QEMU runs: keep
		// it before anything else can refuse, or a later restore here
		// would be checked against an older run.
		h.rememberRun(dom.UUID, res.Run)
	}
	if err != nil {
		// Record that nothing is ours, so that the stopped/release calls
		// libvirt makes next answer at once, even with etcd down.
		writeMarker(refused, err.Error())
		if errors.Is(err, lease.ErrUnavailable) {
			return fmt.Errorf("cannot start %s: etcd did not answer, so this host cannot tell whether another runs it: %w", dom.Name, err)
		}
		return err
	}
	// Look at the session again: if the watchdog began to fence (or the
	// session changed) while the claim was in flight, QEMU must not start
	// on the strength of it. The keys are on a session that is going away.
	if s2, err := h.session(); err != nil || s2.Lease != s.Lease {
		if err == nil {
			err = fmt.Errorf("%w (the session changed while the claim was in flight)", lease.ErrNoLiveSession)
		}
		writeMarker(refused, err.Error())
		return fmt.Errorf("cannot start %s: %w", dom.Name, err)
	}
	os.Remove(refused)
	// A kill marker from an earlier run must not make this run's clean
	// stop look like the watchdog's doing.
	os.Remove(h.marker("killed", dom.UUID))
	// Nor may a released marker make this run's release end skip etcd.
	os.Remove(h.marker("released", dom.UUID))
	return nil
}

// checkUnprotected lets an opted-out domain start unless another host holds
// a live claim on it. With etcd unreachable it starts anyway: the operator
// opted this domain out of protection.
func (h *Hook) checkUnprotected(ctx context.Context, dom Domain) error {
	claims, err := h.Connect(ctx)
	if err != nil {
		return nil
	}
	rec, err := claims.Holding(ctx, dom.UUID)
	if err != nil || rec == nil || rec.Host == h.Config.Host {
		return nil
	}
	return &lease.HeldError{Key: "domains/" + dom.UUID, Want: dom.Name, Held: *rec}
}

func (h *Hook) started(stdin io.Reader) error {
	dom, err := readDomain(stdin)
	if err != nil || dom.Mode == ModeOff {
		return nil
	}
	writeMarker(h.marker("started", dom.UUID), "")
	os.Remove(h.marker("stopped", dom.UUID))
	return nil
}

// release deletes this host's keys for the domain. It never fails: the QEMU
// is gone, and keys that stay behind are the watchdog's to clean (they also
// vanish with the session).
func (h *Hook) release(ctx context.Context, call Call, stdin io.Reader) error {
	dom, err := readDomain(stdin)
	if err != nil || dom.Mode == ModeOff {
		return nil
	}
	// A restore that failed before its prepare must not leave its check
	// to the next, fresh start.
	os.Remove(h.marker("restoring", dom.UUID))
	refused := h.marker("refused", dom.UUID)
	if _, err := os.Stat(refused); err == nil {
		// The prepare for this domain was refused: nothing here is ours,
		// but for the record of a refused incoming migration, which must
		// not outlive it.
		if call.Op == "release" {
			os.Remove(refused)
			h.dropIncoming(ctx, dom.UUID)
		}
		return nil
	}
	released := h.marker("released", dom.UUID)
	if _, err := os.Stat(released); err == nil && call.Op == "release" {
		// stopped end, which libvirt calls just before, released or
		// handed over every key: nothing of ours is left in etcd, and a
		// dial and a Txn would only cost libvirtd time.
		os.Remove(released)
		return nil
	}
	started := h.marker("started", dom.UUID)
	s, err := lease.ReadSession(filepath.Join(h.Config.StateDir, "session"))
	if err != nil || s.Host != h.Config.Host || s.State == lease.SessionFencing {
		// Fencing: etcd is out of reach (each call would cost libvirtd a
		// full deadline) and the session's keys go with it anyway.
		return nil
	}
	var intent *lease.Intent
	if dom.Mode == ModeHA && h.cleanStop(s, dom.UUID) {
		intent = &lease.Intent{Want: lease.WantStopped, Name: dom.Name, Candidates: dom.Hosts,
			Reason: lease.StoppedBy(h.Config.Host), Since: time.Now().UTC().Truncate(time.Second)}
	}
	claims, err := h.Connect(ctx)
	if err != nil {
		return nil
	}
	migrated := h.marker("migrated", dom.UUID)
	_, err = os.Stat(migrated)
	wasMigrated := err == nil
	// done: every key of ours is released or handed over. After stopped
	// end, release end then answers locally; not on a migration's
	// destination, whose release end drops the migrated marker.
	done := func() {
		os.Remove(started)
		if call.Op == "stopped" && !wasMigrated {
			writeMarker(released, "")
		}
	}
	if wasMigrated {
		// This host was a migration's destination: a failed migration
		// leaves a record of ours to drop (a finished one left none).
		if err := claims.DropMigration(ctx, s.Holder(), dom.UUID); err == nil && call.Op == "release" {
			os.Remove(migrated)
		}
	}
	// A migration's source: its QEMU is gone, the destination runs the
	// guest. Hand the keys over in one Txn, never freeing them; not a
	// clean stop, so the HA intent stays as it is.
	if handed, err := claims.HandOff(ctx, s.Holder(), dom.UUID, dom.Name, dom.DiskIDs()); err != nil || handed {
		if handed {
			done()
		}
		return nil
	}
	if _, err := claims.Release(ctx, s.Holder(), dom.UUID, dom.DiskIDs(), intent); err == nil {
		done()
		if intent != nil {
			// The hook cannot tell a destroy from a QEMU that died on its
			// own; libvirt's shutoff reason can, once this call is over.
			// The watchdog looks and, for a crash, sets this very intent
			// back to running (lease.Store.MarkCrashed).
			writeMarker(h.marker("stopped", dom.UUID), intent.Since.Format(time.RFC3339))
		}
	}
	return nil
}

// migrate runs on the destination of a live migration, before its prepare:
// it records the migration in etcd on this host's session, which lets this
// host's prepare accept a domain the source holds, and keeps every other
// host out until the hand-off. It fails closed, like prepare.
func (h *Hook) migrate(ctx context.Context, stdin io.Reader) error {
	dom, err := readDomain(stdin)
	if err != nil {
		return &Error{Code: ExitUsage, Err: err}
	}
	if dom.Mode == ModeOff {
		return nil
	}
	s, err := h.session()
	if err != nil {
		return fmt.Errorf("cannot migrate %s here: %w", dom.Name, err)
	}
	claims, err := h.Connect(ctx)
	if err != nil {
		return &Error{Code: ExitUsage, Err: err}
	}
	from, err := claims.RecordMigration(ctx, s.Holder(), dom.UUID, dom.Name, dom.DiskIDs())
	if err != nil {
		if errors.Is(err, lease.ErrUnavailable) {
			return fmt.Errorf("cannot migrate %s here: etcd did not answer: %w", dom.Name, err)
		}
		return fmt.Errorf("cannot migrate %s here: %w", dom.Name, err)
	}
	writeMarker(h.marker("incoming", dom.UUID), from)
	return nil
}

// cleanStop tells a stop the operator or the guest asked for from one the
// watchdog caused: only the former may set an HA domain's intent to
// stopped. A stop is clean when the guest really ran (started marker), the
// session is live (not fencing, not stopped, not past its deadline: a
// libvirtd that comes back after a crash of the whole host reports its
// dead guests as stopped), and the watchdog left no kill marker.
func (h *Hook) cleanStop(s lease.Session, uuid string) bool {
	boot, err := h.BootID()
	if err != nil || s.Live(h.BootNow(), boot, h.Config.Margin) != nil {
		return false
	}
	if _, err := os.Stat(h.marker("started", uuid)); err != nil {
		return false
	}
	if _, err := os.Stat(h.marker("killed", uuid)); err == nil {
		return false
	}
	// The host is shutting down with ha.on_shutdown: failover: the stops
	// libvirt-guests makes now are not the operator's will for the guest.
	if b, err := os.ReadFile(filepath.Join(h.Config.StateDir, "shutdown")); err == nil && strings.TrimSpace(string(b)) == "failover" {
		return false
	}
	return true
}

func (h *Hook) reconnect(ctx context.Context, stdin io.Reader) error {
	dom, err := readDomain(stdin)
	if err != nil || dom.Mode == ModeOff {
		return nil
	}
	s, err := h.session()
	if err != nil {
		return nil
	}
	claims, err := h.Connect(ctx)
	if err != nil {
		return nil
	}
	_, err = claims.Claim(ctx, s.Holder(), lease.Claim{UUID: dom.UUID, Name: dom.Name, Disks: dom.DiskIDs()})
	var held *lease.HeldError
	if errors.As(err, &held) {
		// libvirt kills the guest when reconnect fails: that is the point.
		where := held.Held.Host
		if where == "" {
			where = "another host"
		}
		return &Error{Code: ExitRefused, Err: fmt.Errorf("guest %s runs here, but etcd says %s holds it (%s): libvirt will stop it here", dom.Name, where, held.Key)}
	}
	return nil
}

// incomingTTL bounds how long after its migrate hook an incoming marker
// counts: libvirt runs the destination's prepare right after migrate, so an
// older marker is a leftover of a failed migration, and a later plain start
// must not claim as "incoming" and ride on the source's keys.
const incomingTTL = 60 * time.Second

// incoming returns the source host of a live migration into this host that
// is starting now.
func (h *Hook) incoming(uuid string) (string, bool) {
	p := h.marker("incoming", uuid)
	st, err := os.Stat(p)
	if err != nil || time.Since(st.ModTime()) > incomingTTL {
		return "", false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// dropIncoming deletes this host's migration record for uuid, if any, and
// the marker, once the migration's start was refused.
func (h *Hook) dropIncoming(ctx context.Context, uuid string) {
	p := h.marker("migrated", uuid)
	if _, err := os.Stat(p); err != nil {
		return
	}
	s, err := lease.ReadSession(filepath.Join(h.Config.StateDir, "session"))
	if err != nil || s.Host != h.Config.Host {
		return
	}
	claims, err := h.Connect(ctx)
	if err != nil {
		return
	}
	if err := claims.DropMigration(ctx, s.Holder(), uuid); err == nil {
		os.Remove(p)
	}
}

func (h *Hook) marker(kind, uuid string) string {
	return filepath.Join(h.Config.StateDir, kind, uuid)
}

// writeMarker leaves a small file; failing to is not worth failing the call
// over (the markers only make later calls faster or more precise).
func writeMarker(path, content string) {
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, []byte(content+"\n"), 0o644)
}
