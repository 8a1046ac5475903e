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
//     (libvirt then kills the guest, which is right), unless the guest came
//     in by a live migration the source has not handed over yet; anything
//     else exits 0,
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
	"io/fs"
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
	Check(ctx context.Context, h lease.Holder, c lease.Claim) error
	RecordMigration(ctx context.Context, h lease.Holder, uuid, name string, disks []string) (string, int64, error)
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
	// Warnings, when not nil, gets from Check one line per claimed disk
	// whose ID may not name the same storage on other hosts (a
	// /dev/sdX-style name, a local socket): the claim then protects
	// nothing across hosts, and the operator should know. The libvirt
	// calls write none: libvirt shows the hook's stderr only for a failed
	// call, as the one line of its error.
	Warnings io.Writer
}

// warn writes dom's disk warnings to h.Warnings.
func (h *Hook) warn(dom Domain) {
	if h.Warnings == nil {
		return
	}
	for _, d := range dom.Disks {
		if d.Warning != "" {
			fmt.Fprintf(h.Warnings, "virtlease: warning: domain %s disk %s (%s): %s\n", dom.Name, d.Target, d.ID, d.Warning)
		}
	}
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
	// XML allows whitespace around "=".
	return regexp.MustCompile(`\s+(passwd|passwdValidTo)\s*=\s*("[^"]*"|'[^']*')`)
})

// inlineSecrets matches the places besides graphics passwords where a
// domain XML can carry a secret inline: HTTP cookies and URL queries
// (tokens) of network disks, SMBIOS OEM strings (cloud-init data) and the
// qemu namespace (command-line arguments, environment, overrides).
var inlineSecrets = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`<cookies[\s>]|\squery=|<oemStrings[\s>]|libvirt\.org/schemas/domain/qemu/`)
})

// recordableXML is the domain XML to keep with an HA intent, for hosts
// that lack the domain (ha.define_missing): without graphics passwords
// (libvirt's own secrets are only referenced by UUID in a domain XML), and
// not at all when it is too large or may carry a secret inline
// (inlineSecrets): such a domain cannot be defined elsewhere by
// define_missing, which beats a secret in etcd. It is the XML of the start:
// disks hot-plugged later are not in it.
func recordableXML(b []byte) string {
	if len(b) > maxRecordedXML || inlineSecrets().Match(b) {
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
	// libvirt runs prepare only for a domain that is not running: a started
	// marker is an earlier run's, whose release failed. Left, it would make
	// this run's stop look clean even if QEMU never started.
	os.Remove(h.marker("started", dom.UUID))
	// First of all, before any check that may refuse: take the incoming
	// marker. Only the prepare libvirt runs right after the migrate hook may
	// use it; left behind by a refusal, it let a later plain start claim "as
	// incoming" and run beside the source.
	in, err := h.takeIncoming(dom.UUID)
	if err != nil {
		h.refuse(refused, "incoming", err.Error())
		return &Error{Code: ExitRefused, Err: fmt.Errorf("cannot start %s: %w", dom.Name, err)}
	}
	s, err := h.session()
	if err != nil {
		h.refuse(refused, "no_session", err.Error())
		return fmt.Errorf("cannot start %s: %w", dom.Name, err)
	}
	if _, err := os.Stat(filepath.Join(h.Config.StateDir, "shutdown")); err == nil {
		h.refuse(refused, "shutting_down", "shutting down")
		return &Error{Code: ExitRefused, Err: fmt.Errorf("host %s is shutting down; refusing to start %s here", h.Config.Host, dom.Name)}
	}
	claims, err := h.Connect(ctx)
	if err != nil {
		h.refuse(refused, refusalReason(err), err.Error())
		return connectError("cannot start "+dom.Name, err)
	}
	// A draining host takes no new guests, but incoming migrations go on
	// (lease.Store.SetDrain).
	c := lease.Claim{UUID: dom.UUID, Name: dom.Name, Disks: dom.DiskIDs(), Start: in == nil, Restore: restore}
	if in != nil {
		// An incoming live migration: the source keeps its keys until its
		// QEMU is gone and it hands them over; the claim accepts them only
		// under the very record the migrate hook wrote.
		c.IncomingFrom, c.IncomingRev = in.From, in.Rev
	}
	if restore == nil {
		if err := h.checkNoSavedState(dom); err != nil {
			h.refuse(refused, "saved_state", err.Error())
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
	fenceDue := errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if err == nil {
		// The start is recorded in etcd whether or not QEMU runs: keep
		// it before anything else can refuse, or a later restore here
		// would be checked against an older run.
		h.rememberRun(dom.UUID, res.Run)
	}
	if err != nil {
		// Record that nothing is ours, so that the stopped/release calls
		// libvirt makes next answer at once, even with etcd down. When etcd
		// did not answer, the claim may have landed all the same: then its
		// keys are the watchdog's reconcile to release, as those of any
		// stop whose hook could not reach etcd (waiting on etcd again here
		// would cost libvirtd a deadline per call).
		reason := refusalReason(err)
		if fenceDue {
			reason = "fence_point"
		}
		h.refuse(refused, reason, err.Error())
		if fenceDue {
			return fmt.Errorf("cannot start %s: this host's session reached its fence point (deadline minus fence.margin) before etcd answered the claim: %w (%v)", dom.Name, lease.ErrNoLiveSession, err)
		}
		if errors.Is(err, lease.ErrUnavailable) {
			return fmt.Errorf("cannot start %s: etcd did not answer, so this host cannot tell whether another runs it: %w", dom.Name, err)
		}
		return err
	}
	if c.Intent != nil {
		// Should this start fail before the guest runs, its release puts
		// back the intent the claim replaced (lease.StopFailedStart).
		h.stops().WritePrior(dom.UUID, res.Prior)
	}
	// Look at the session again: if the watchdog began to fence (or the
	// session changed) while the claim was in flight, QEMU must not start
	// on the strength of it. The keys are on a session that is going away.
	// The claim landed, so no refused marker: the release that follows
	// must release (or drop the incoming record) as after any run.
	if s2, err := h.session(); err != nil || s2.Lease != s.Lease {
		if err == nil {
			err = fmt.Errorf("%w (the session changed while the claim was in flight)", lease.ErrNoLiveSession)
		}
		os.Remove(refused)
		return fmt.Errorf("cannot start %s: %w", dom.Name, err)
	}
	os.Remove(refused)
	if in == nil {
		// A plain start: a migrated marker of an earlier incoming run is
		// stale, and would make release and reconcile look for a migration.
		os.Remove(h.marker("migrated", dom.UUID))
	}
	// A kill marker from an earlier run must not make this run's clean
	// stop look like the watchdog's doing.
	os.Remove(h.marker("killed", dom.UUID))
	// Nor may a released marker make this run's release end skip etcd.
	os.Remove(h.marker("released", dom.UUID))
	return nil
}

// connectError is the exit for a failed Connect on a start: 3 when etcd
// did not answer (a login that timed out), 2 for the config's problems
// (TLS files, credentials). what begins the message ("cannot start web1").
func connectError(what string, err error) error {
	if errors.Is(err, lease.ErrUnavailable) {
		return &Error{Code: ExitUnavailable, Err: fmt.Errorf("%s: etcd did not answer, so this host cannot tell whether another runs it: %w", what, err)}
	}
	return &Error{Code: ExitUsage, Err: fmt.Errorf("%s: %w", what, err)}
}

// checkUnprotected lets an opted-out domain (mode="off") start unless
// that would be over another's claim: the domain or one of its writable
// disks held by another host or another domain, a migration of it or of
// one of its disks, or an unfenced record listing it or one of its disks.
// It claims nothing, writes nothing and needs no session. Like every
// start it fails closed: when etcd cannot answer, the start is refused
// (exit 3), because a copied XML with mode="off" would otherwise write a
// protected guest's disk. The decision is the claim's own (lease.Store.Check).
func (h *Hook) checkUnprotected(ctx context.Context, dom Domain) error {
	claims, err := h.Connect(ctx)
	if err != nil {
		return connectError("cannot start "+dom.Name, err)
	}
	c := lease.Claim{UUID: dom.UUID, Name: dom.Name, Disks: dom.DiskIDs(), Start: true, Unprotected: true}
	return startError(dom.Name, claims.Check(ctx, lease.Holder{Host: h.Config.Host}, c))
}

// startError says why a start (or a check of one) was refused.
func startError(name string, err error) error {
	if errors.Is(err, lease.ErrUnavailable) {
		return fmt.Errorf("cannot start %s: etcd did not answer, so this host cannot tell whether another runs it: %w", name, err)
	}
	return err
}

// Check answers "would a start of dom here be allowed now?" with the
// decision prepare would make, and changes nothing: no claim, no intent,
// no marker, no incoming migration consumed.
//
// Outcomes: nil (allowed now; a start may still lose a race); an error
// whose Code is ExitRefused (held elsewhere, no live session, shutting
// down, draining, …), ExitUsage (config) or ExitUnavailable (etcd did not
// answer).
func (h *Hook) Check(ctx context.Context, dom Domain) error {
	h.warn(dom)
	if dom.Mode == ModeOff {
		return h.checkUnprotected(ctx, dom)
	}
	s, err := h.session()
	if err != nil {
		return fmt.Errorf("cannot start %s: %w", dom.Name, err)
	}
	if _, err := os.Stat(filepath.Join(h.Config.StateDir, "shutdown")); err == nil {
		return &Error{Code: ExitRefused, Err: fmt.Errorf("host %s is shutting down; refusing to start %s here", h.Config.Host, dom.Name)}
	}
	claims, err := h.Connect(ctx)
	if err != nil {
		return connectError("cannot start "+dom.Name, err)
	}
	c := lease.Claim{UUID: dom.UUID, Name: dom.Name, Disks: dom.DiskIDs(), Start: true}
	if _, ok := h.savedState(dom); ok {
		// virsh start restores a managed save: judge it as its restore.
		c.Restore = &lease.Restore{Mine: h.lastRun(dom.UUID)}
	}
	return startError(dom.Name, claims.Check(ctx, s.Holder(), c))
}

func (h *Hook) started(stdin io.Reader) error {
	dom, err := readDomain(stdin)
	if err != nil || dom.Mode == ModeOff {
		return nil
	}
	writeMarker(h.marker("started", dom.UUID), "")
	os.Remove(h.marker("stopped", dom.UUID))
	os.Remove(h.marker("prior", dom.UUID))
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
	clean := false
	if dom.Mode == ModeHA {
		switch h.stops().JudgeStop(dom.UUID) {
		case lease.StopClean:
			in := lease.StoppedIntent(lease.Intent{Name: dom.Name, Candidates: dom.Hosts}, h.Config.Host, time.Now())
			intent, clean = &in, true
		case lease.StopFailedStart:
			intent, _ = h.stops().PriorIntent(dom.UUID, dom.Name, h.Config.Host, time.Now())
		}
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
		os.Remove(h.marker("prior", dom.UUID))
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
	if n, err := claims.Release(ctx, s.Holder(), dom.UUID, dom.DiskIDs(), intent); err == nil {
		if clean && n == 0 {
			// Nothing of ours was left to record the stop with: the
			// session expired while the watchdog was away, and only its
			// unfenced record kept the guest from other hosts. The
			// returning watchdog records the stop from the started
			// marker, kept for it (fence: recover).
			return nil
		}
		done()
		if clean {
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
	// The prepare that follows would refuse: record nothing for it.
	if _, err := os.Stat(filepath.Join(h.Config.StateDir, "shutdown")); err == nil {
		return &Error{Code: ExitRefused, Err: fmt.Errorf("host %s is shutting down; refusing to migrate %s here", h.Config.Host, dom.Name)}
	}
	boot, err := h.BootID()
	if err != nil {
		return &Error{Code: ExitRefused, Err: fmt.Errorf("cannot migrate %s here: %w", dom.Name, err)}
	}
	claims, err := h.Connect(ctx)
	if err != nil {
		return connectError("cannot migrate "+dom.Name+" here", err)
	}
	from, rev, err := claims.RecordMigration(ctx, s.Holder(), dom.UUID, dom.Name, dom.DiskIDs())
	if err != nil {
		if errors.Is(err, lease.ErrUnavailable) {
			return fmt.Errorf("cannot migrate %s here: etcd did not answer: %w", dom.Name, err)
		}
		return fmt.Errorf("cannot migrate %s here: %w", dom.Name, err)
	}
	if from == "" {
		// Nobody else holds the domain: the prepare is an ordinary claim.
		os.Remove(h.marker("incoming", dom.UUID))
		return nil
	}
	m := lease.MigrationMarker{From: from, Rev: rev, Boot: boot, At: int64(h.BootNow())}
	if err := lease.WriteMigrationMarker(h.marker("incoming", dom.UUID), m); err != nil {
		// Without the marker the prepare could only refuse; the record,
		// never prepared, would only keep others out until dropped.
		claims.DropMigration(ctx, s.Holder(), dom.UUID)
		return &Error{Code: ExitRefused, Err: fmt.Errorf("cannot migrate %s here: %w", dom.Name, err)}
	}
	return nil
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
	c := lease.Claim{UUID: dom.UUID, Name: dom.Name, Disks: dom.DiskIDs()}
	if m, err := lease.ReadMigrationMarker(h.marker("migrated", dom.UUID)); err == nil && m.From != "" {
		c.IncomingFrom, c.IncomingRev = m.From, m.Rev
	}
	_, err = claims.Claim(ctx, s.Holder(), c)
	if c.IncomingFrom != "" && errors.Is(err, lease.ErrNotIncoming) {
		// The migration is no longer recorded (handed over, or failed):
		// an ordinary guest now.
		c.IncomingFrom, c.IncomingRev = "", 0
		_, err = claims.Claim(ctx, s.Holder(), c)
	}
	var held *lease.HeldError
	if !errors.As(err, &held) || held.Held.Host == "" || held.Held.Host == h.Config.Host {
		// Only "held by another host" fails a reconnect. A drain, a
		// migration record, an unfenced host or another domain of this
		// host are the watchdog's reconcile to judge.
		return nil
	}
	if c.IncomingFrom != "" || h.incomingRecorded(ctx, claims, s.Holder(), c, held.Held.Host) {
		// This guest came in by a live migration that the source has not
		// handed over yet: the source holds the keys, its QEMU is gone
		// or going. Failing here would kill the only copy.
		return nil
	}
	// libvirt kills the guest when reconnect fails: that is the point.
	return &Error{Code: ExitRefused, Err: fmt.Errorf("guest %s runs here, but etcd says %s holds it (%s): libvirt will stop it here", dom.Name, held.Held.Host, held.Key)}
}

// incomingRecorded reports whether etcd records a migration of c from
// source to this host on this host's session (the migrated marker may be
// gone), by claiming as that migration's destination.
func (h *Hook) incomingRecorded(ctx context.Context, claims Claims, hd lease.Holder, c lease.Claim, source string) bool {
	c.IncomingFrom, c.IncomingRev = source, 0
	_, err := claims.Claim(ctx, hd, c)
	return err == nil
}

// incomingTTL bounds how long after its migrate hook an incoming marker
// counts, on the boot clock: libvirt runs the destination's prepare right
// after migrate begin, within milliseconds. A marker that no prepare took
// (libvirt failed between the two hooks) must not let a later plain start
// claim "as incoming" and ride on the source's keys: this bounds that
// window to about the hook's own deadline.
const incomingTTL = 5 * time.Second

// takeIncoming removes this domain's incoming marker and returns it if it
// belongs to a live migration starting now: written on this boot less than
// incomingTTL ago. That one is kept as the migrated marker, for release
// (which drops the record if the start fails), reconnect and the
// watchdog's reconcile. nil: an ordinary start (a stale marker is dropped
// unused; its record, never prepared, is the reconcile's to drop).
//
// Outcomes: nil, nil; the marker, nil; or an error when a marker exists but
// cannot be removed or recorded (the caller refuses the start: a marker
// left behind could serve a later plain start, and without the migrated
// marker the reconcile would kill the guest before the hand-off).
func (h *Hook) takeIncoming(uuid string) (*lease.MigrationMarker, error) {
	p := h.marker("incoming", uuid)
	m, err := lease.ReadMigrationMarker(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the incoming-migration marker: %w", err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing the incoming-migration marker: %w", err)
	}
	boot, err := h.BootID()
	age := h.BootNow() - time.Duration(m.At)
	if err != nil || m.From == "" || m.Boot != boot || age < 0 || age > incomingTTL {
		return nil, nil
	}
	if err := lease.WriteMigrationMarker(h.marker("migrated", uuid), m); err != nil {
		return nil, err
	}
	return &m, nil
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

// marker is the path of a per-domain marker (as lease.StopState.Marker,
// without reading the boot ID).
func (h *Hook) marker(kind, uuid string) string {
	return filepath.Join(h.Config.StateDir, kind, uuid)
}

// stops judges this host's stops (lease.StopState.JudgeStop) from the same
// session file and markers as the watchdog's reconcile.
func (h *Hook) stops() lease.StopState {
	boot, err := h.BootID()
	if err != nil {
		boot = "" // no session file matches: every stop counts as lost
	}
	return lease.StopState{Dir: h.Config.StateDir, Host: h.Config.Host, BootID: boot}
}

// refuse records a refused start: the refused marker (why), and one more
// refusal for reason in StateDir/refusals/REASON, a file that grows by a
// byte per refusal. The hook lives for one call, so the watchdog exports
// these sizes as virtlease_start_refusals_total{reason}; O_APPEND keeps
// concurrent hooks from losing counts, and /run resets them at boot as a
// counter may.
func (h *Hook) refuse(marker, reason, why string) {
	writeMarker(marker, why)
	dir := filepath.Join(h.Config.StateDir, "refusals")
	os.MkdirAll(dir, 0o755)
	f, err := os.OpenFile(filepath.Join(dir, reason), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	f.Write([]byte{'.'})
	f.Close()
}

// refusalReason classifies why etcd refused (or could not answer) a start,
// for the refusal count: etcd_unavailable, no_session, draining, unfenced,
// held (by another host or domain), or other.
func refusalReason(err error) string {
	var held *lease.HeldError
	switch {
	case errors.Is(err, lease.ErrUnavailable):
		return "etcd_unavailable"
	case errors.Is(err, lease.ErrNoLiveSession), errors.Is(err, lease.ErrNoSession):
		return "no_session"
	case errors.As(err, &held) && strings.Contains(held.Key, "/drain/"):
		return "draining"
	case errors.As(err, &held) && strings.Contains(held.Key, "/unfenced/"):
		return "unfenced"
	case errors.As(err, &held):
		return "held"
	}
	return "other"
}

// writeMarker leaves a small file; failing to is not worth failing the call
// over (the markers only make later calls faster or more precise).
func writeMarker(path, content string) {
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, []byte(content+"\n"), 0o644)
}
