package fence

// This is the only file of package fence that talks to libvirtd.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// DefaultLibvirtURI is the libvirt connection DialLibvirt uses for "".
const DefaultLibvirtURI = "qemu:///system"

// libvirtRunDir is where libvirt's system daemons keep their sockets and
// the QEMU driver its pid files (run/libvirt/qemu), whichever daemon runs it.
const libvirtRunDir = "/run/libvirt"

// systemSockets are the sockets of the daemons that may run the QEMU driver
// for qemu:///system, in the order libvirt's own client ("auto" mode) tries
// them: the modular virtqemud first, the monolithic libvirtd second. A
// modular host need not run virtproxyd, so libvirt-sock may well be absent.
func systemSockets(dir string) []string {
	return []string{filepath.Join(dir, "virtqemud-sock"), filepath.Join(dir, "libvirt-sock")}
}

// daemonName names the daemon behind a socket, for messages that tell the
// operator which one to start.
func daemonName(sock string) string {
	switch filepath.Base(sock) {
	case "virtqemud-sock":
		return "virtqemud"
	case "libvirt-sock":
		return "libvirtd"
	}
	return "the libvirt daemon"
}

// closeGrace bounds the polite goodbye (ConnectClose) to libvirtd before a
// connection's socket is closed anyway.
const closeGrace = time.Second

// jobProbe is how long State waits for libvirtd's job lock on an inactive
// domain before it concludes that a job holds it.
const jobProbe = 500 * time.Millisecond

// ErrNoDomain means libvirtd on this host has no domain with that UUID.
var ErrNoDomain = errors.New("fence: no such domain on this host")

// ErrLibvirtClosed is returned by every call after Libvirt.Close.
var ErrLibvirtClosed = errors.New("fence: libvirt connection closed")

// Guest is a running guest on this host.
type Guest struct {
	UUID string // lower-case
	Name string
	PID  int    // QEMU pid, 0 when unknown
	XML  string // live domain XML (for its disk claims), "" when not asked for
}

// Libvirt talks to this host's libvirtd over its RPC socket
// (github.com/digitalocean/go-libvirt: pure Go, no cgo).
//
// Every method that talks to libvirtd takes a context and returns when it
// ends, even when libvirtd hangs. go-libvirt's calls take no context, so each
// call runs on a connection of its own (taken from a few idle ones, or
// dialled): a call that outlives its context closes that connection, which
// ends the call without disturbing any other. A call only ever waits as long
// as its context allows: give each one a deadline. A libvirtd that restarts
// costs nothing but a new dial.
//
// libvirtd itself blocks every call that touches a domain (lookup, listing)
// while it destroys that domain's QEMU, up to ~12 s for a QEMU that ignores
// SIGTERM: so the fence kills with KillQEMU, not with Destroy.
//
// A Libvirt is safe for concurrent use.
type Libvirt struct {
	sockets []string // the daemon sockets to try, in order (systemSockets or the one asked for)
	remote  string   // the URI asked of libvirtd: qemu:///system
	runDir  string   // libvirt's state directory: pid files in runDir/qemu
	procDir string   // "/proc"
	log     *slog.Logger

	mu     sync.Mutex
	socket string               // the socket last dialled: named in errors; a change is logged
	logged bool                 // socket was logged
	idle   []*lvConn            // connected, not in use
	all    map[*lvConn]struct{} // every open connection, busy, idle or events
	closed bool
}

// maxIdleConns is how many connections wait for the next call.
const maxIdleConns = 2

// DialLibvirt connects to libvirtd, bounded by ctx. uri is "qemu:///system"
// ("" means the same), which is virtqemud's /run/libvirt/virtqemud-sock when
// it exists, else libvirtd's /run/libvirt/libvirt-sock (picked again at
// every dial, so a host switched between the two is followed), or
// "qemu+unix:///system?socket=PATH" for a libvirtd listening on PATH (a lab
// host). libvirt's pid files are looked for in the socket's directory
// (/run/libvirt/qemu/NAME.pid).
func DialLibvirt(ctx context.Context, uri string) (*Libvirt, error) {
	l, err := NewLibvirt(uri)
	if err != nil {
		return nil, err
	}
	c, err := l.dial(ctx)
	if err != nil {
		return nil, err
	}
	l.all[c] = struct{}{}
	l.idle = append(l.idle, c)
	return l, nil
}

// NewLibvirt is DialLibvirt without the first connection: every call dials
// when it needs to. The watchdog starts before libvirtd (so that guests
// libvirt autostarts find a session), so it cannot wait for one.
func NewLibvirt(uri string) (*Libvirt, error) {
	socks, remote, err := parseLibvirtURI(uri)
	if err != nil {
		return nil, err
	}
	return &Libvirt{
		sockets: socks,
		remote:  remote,
		runDir:  filepath.Dir(socks[0]),
		procDir: "/proc",
		log:     slog.New(slog.DiscardHandler),
		socket:  socks[len(socks)-1],
		all:     map[*lvConn]struct{}{},
	}, nil
}

// SetLogger makes l log which daemon it talks to (once, and whenever that
// changes). Call it before l is used.
func (l *Libvirt) SetLogger(log *slog.Logger) { l.log = log }

// pickSocket returns the socket to dial now: the first of l.sockets that
// exists (the one asked for, as is, when the URI named one).
//
// Outcomes:
//   - the socket, logged when it differs from the last one dialled;
//   - an error naming every path tried when none exists.
func (l *Libvirt) pickSocket() (string, error) {
	pick := ""
	if len(l.sockets) == 1 {
		pick = l.sockets[0] // asked for: dialling it tells what is wrong
	} else {
		for _, s := range l.sockets {
			if _, err := os.Stat(s); err == nil {
				pick = s
				break
			}
		}
	}
	if pick == "" {
		var tried []string
		for _, s := range l.sockets {
			tried = append(tried, s+" ("+daemonName(s)+")")
		}
		return "", fmt.Errorf("fence: no libvirt daemon runs QEMU on this host: neither %s exists (start virtqemud or libvirtd)", strings.Join(tried, " nor "))
	}
	l.mu.Lock()
	changed := pick != l.socket || !l.logged
	l.socket, l.logged = pick, true
	l.mu.Unlock()
	if changed {
		l.log.Info("libvirt: talking to "+daemonName(pick), "socket", pick)
	}
	return pick, nil
}

// LibvirtRunDir returns libvirt's state directory for uri (as DialLibvirt
// accepts it): "/run/libvirt" for qemu:///system, the socket's directory for
// qemu+unix:///system?socket=PATH. Its qemu/ holds the pid files Running
// reads; no libvirtd needs to answer.
func LibvirtRunDir(uri string) (string, error) {
	socks, _, err := parseLibvirtURI(uri)
	if err != nil {
		return "", err
	}
	return filepath.Dir(socks[0]), nil
}

// RunDir is LibvirtRunDir of the URI l was dialled with.
func (l *Libvirt) RunDir() string { return l.runDir }

// parseLibvirtURI returns the sockets to try, in order, and the URI to open
// on them. Unknown parameters are refused: a misspelt socket= would otherwise
// silently talk to another host's libvirtd.
func parseLibvirtURI(uri string) (socks []string, remote string, err error) {
	if uri == "" {
		uri = DefaultLibvirtURI
	}
	bad := func(why string) error {
		return fmt.Errorf("fence: unsupported libvirt URI %q (%s): want qemu:///system or qemu+unix:///system?socket=PATH", uri, why)
	}
	u, err := url.Parse(uri)
	if err != nil {
		return nil, "", bad(err.Error())
	}
	if u.Scheme != "qemu" && u.Scheme != "qemu+unix" {
		return nil, "", bad("only the local qemu driver over a unix socket")
	}
	if u.Host != "" || u.User != nil {
		return nil, "", bad("remote hosts are not supported")
	}
	if u.Path != "/system" {
		return nil, "", bad("only the system instance")
	}
	socks = systemSockets(libvirtRunDir)
	for k, v := range u.Query() {
		if k != "socket" || len(v) != 1 || v[0] == "" {
			return nil, "", bad("unknown or empty parameter " + k)
		}
		if !filepath.IsAbs(v[0]) {
			return nil, "", bad("socket must be an absolute path")
		}
		socks = []string{filepath.Clean(v[0])}
	}
	return socks, DefaultLibvirtURI, nil
}

// lvConn is one connection to libvirtd.
type lvConn struct {
	lv   *libvirt.Libvirt
	dial *lvDialer
	// busy is set when a call returns while one of its requests still
	// waits for libvirtd's answer: the connection is then not reused.
	busy atomic.Bool
}

// lvDialer dials libvirtd's socket for go-libvirt and keeps the net.Conn, so
// that a hung call can be ended by closing it (go-libvirt's Disconnect makes
// an RPC first, which a hung libvirtd never answers).
type lvDialer struct {
	ctx  context.Context // bounds the dial only
	path string

	mu      sync.Mutex
	conn    net.Conn
	aborted bool
}

func (d *lvDialer) Dial() (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(d.ctx, "unix", d.path)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.aborted {
		c.Close()
		return nil, net.ErrClosed
	}
	d.conn = c
	return c, nil
}

// abort closes the socket: every call in flight on it returns
// go-libvirt's ErrInterrupted at once.
func (d *lvDialer) abort() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.aborted = true
	if d.conn != nil {
		d.conn.Close()
	}
}

// close says goodbye to libvirtd (bounded by closeGrace), then closes the socket.
func (c *lvConn) close() {
	done := make(chan struct{})
	go func() {
		_ = c.lv.ConnectClose()
		close(done)
	}()
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	c.dial.abort()
}

// dial opens a new connection, bounded by ctx.
func (l *Libvirt) dial(ctx context.Context) (*lvConn, error) {
	sock, err := l.pickSocket()
	if err != nil {
		return nil, err
	}
	d := &lvDialer{ctx: ctx, path: sock}
	lv := libvirt.NewWithDialer(d)
	done := make(chan error, 1)
	go func() { done <- lv.ConnectToURI(libvirt.ConnectURI(l.remote)) }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("fence: cannot connect to %s at %s (is %s running?): %w", daemonName(sock), sock, daemonName(sock), err)
		}
		return &lvConn{lv: lv, dial: d}, nil
	case <-ctx.Done():
		// go-libvirt's handshake goroutine ends once it sees the closed socket.
		d.abort()
		return nil, fmt.Errorf("fence: %s at %s did not complete the connection in time: %w", daemonName(sock), sock, ctx.Err())
	}
}

// acquire returns an idle connection, or dials one, bounded by ctx. The
// caller owns it until release or discard.
func (l *Libvirt) acquire(ctx context.Context) (*lvConn, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrLibvirtClosed
	}
	for len(l.idle) > 0 {
		c := l.idle[len(l.idle)-1]
		l.idle = l.idle[:len(l.idle)-1]
		if c.lv.IsConnected() {
			l.mu.Unlock()
			return c, nil
		}
		delete(l.all, c) // libvirtd went away (restart): dial afresh
		go c.close()
	}
	l.mu.Unlock()
	// Dial without holding mu: other callers must not wait past their own
	// contexts for this one.
	c, err := l.dial(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		go c.close()
		return nil, ErrLibvirtClosed
	}
	l.all[c] = struct{}{}
	return c, nil
}

// release gives back a connection whose call has returned.
func (l *Libvirt) release(c *lvConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed && !c.busy.Load() && c.lv.IsConnected() && len(l.idle) < maxIdleConns {
		l.idle = append(l.idle, c)
		return
	}
	delete(l.all, c) // a nil map after Close: a no-op
	if c.busy.Load() {
		c.dial.abort() // ends the request still waiting
		return
	}
	go c.close()
}

// discard forgets c and closes its socket at once: a call still waiting on
// it returns go-libvirt's ErrInterrupted.
func (l *Libvirt) discard(c *lvConn) {
	l.mu.Lock()
	delete(l.all, c)
	l.mu.Unlock()
	c.dial.abort()
}

// call runs fn on a connection of its own and returns when fn does or ctx
// ends, whichever comes first. On ctx's end the connection is closed, which
// makes fn return soon after; fn must not set its caller's variables before
// it has all its results, or the caller must not read them after an error.
func (l *Libvirt) call(ctx context.Context, fn func(*lvConn) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fence: not calling libvirtd: %w", err)
	}
	c, err := l.acquire(ctx)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- fn(c) }()
	select {
	case err := <-done:
		l.release(c)
		return err
	case <-ctx.Done():
		l.discard(c)
		return fmt.Errorf("fence: %s at %s did not answer in time, call abandoned: %w", daemonName(c.dial.path), c.dial.path, ctx.Err())
	}
}

// Close ends every connection to libvirtd, event streams included: calls in
// flight fail, calls after it return ErrLibvirtClosed. It takes at most about
// a second, whatever libvirtd does.
func (l *Libvirt) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	conns := make([]*lvConn, 0, len(l.all))
	for c := range l.all {
		conns = append(conns, c)
	}
	l.idle, l.all = nil, nil
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(c.close)
	}
	wg.Wait()
	return nil
}

// Running lists the active domains of this host. PID comes from libvirt's
// pid file RUNDIR/qemu/NAME.pid, kept only when /proc/PID/cmdline has the
// domain's -uuid (else 0). XML is the live XML (DomainGetXMLDesc) when
// withXML; a domain that stops between the listing and its XML is left out.
func (l *Libvirt) Running(ctx context.Context, withXML bool) ([]Guest, error) {
	type found struct {
		dom libvirt.Domain
		xml string
	}
	var doms []found
	err := l.call(ctx, func(c *lvConn) error {
		lv := c.lv
		ds, _, err := lv.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
		if err != nil {
			return fmt.Errorf("fence: libvirt could not list running domains: %w", err)
		}
		out := make([]found, 0, len(ds))
		for _, d := range ds {
			f := found{dom: d}
			if withXML {
				f.xml, err = lv.DomainGetXMLDesc(d, 0)
				if libvirt.IsNotFound(err) || isNotRunning(err) {
					continue
				}
				if err != nil {
					return fmt.Errorf("fence: libvirt could not give the XML of %s (%s): %w", d.Name, uuidString(d.UUID), err)
				}
			}
			out = append(out, f)
		}
		doms = out
		return nil
	})
	if err != nil {
		return nil, err
	}
	guests := make([]Guest, 0, len(doms))
	for _, f := range doms {
		g := Guest{UUID: uuidString(f.dom.UUID), Name: f.dom.Name, XML: f.xml}
		g.PID = l.guestPID(g.Name, g.UUID)
		guests = append(guests, g)
	}
	return guests, nil
}

// guestPID reads libvirt's pid file of domain name and checks that the
// process is that domain's QEMU; 0 when not.
func (l *Libvirt) guestPID(name, uuid string) int {
	b, err := os.ReadFile(filepath.Join(l.runDir, "qemu", name+".pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	cmdline, err := os.ReadFile(filepath.Join(l.procDir, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return 0
	}
	if u, _, ok := parseQEMUCmdline(cmdline); !ok || u != uuid {
		return 0
	}
	return pid
}

// State reports whether the domain with this UUID is active here and
// whether libvirt has a job on it: the reconcile deletes a key of this
// host's only for a domain that is inactive with no job (a start, restore or
// incoming migration in progress is active, or holds a job). A domain libvirt
// does not know is inactive with no job, and no error.
//
// For an active domain hasJob is libvirt's control state (JOB or OCCUPIED,
// virDomainGetControlInfo), which waits for no job. libvirt reports no job
// of an inactive domain except by making the caller wait for its job lock,
// so State asks for its job info and takes "still waiting after 500 ms" (or
// libvirt's "cannot acquire state change lock") as a job.
//
// While libvirt destroys the domain's QEMU it holds the domain's lock and
// State (like Running) waits: ~12 s for a QEMU that ignores SIGTERM. A QEMU
// killed by KillQEMU stays active here until libvirt notices, about a second
// later (measured 1.2–1.8 s with libvirt 9.0).
func (l *Libvirt) State(ctx context.Context, uuid string) (active bool, hasJob bool, err error) {
	id, err := parseUUID(uuid)
	if err != nil {
		return false, false, err
	}
	type result struct{ active, job bool }
	var res result
	err = l.call(ctx, func(c *lvConn) error {
		lv := c.lv
		d, err := lv.DomainLookupByUUID(id)
		if libvirt.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fence: libvirt could not look up domain %s: %w", uuid, err)
		}
		n, err := lv.DomainIsActive(d)
		if libvirt.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fence: libvirt could not tell whether %s (%s) is active: %w", d.Name, uuid, err)
		}
		if n != 0 {
			st, _, _, err := lv.DomainGetControlInfo(d, 0)
			switch {
			case err == nil:
				res = result{active: true, job: st == uint32(libvirt.DomainControlJob) || st == uint32(libvirt.DomainControlOccupied)}
				return nil
			case libvirt.IsNotFound(err) || isNotRunning(err):
				// Stopped meanwhile: fall through to the inactive case.
			default:
				return fmt.Errorf("fence: libvirt could not give the control state of %s (%s): %w", d.Name, uuid, err)
			}
		}
		job, err := inactiveJob(c, d)
		if err != nil {
			return fmt.Errorf("fence: libvirt could not tell whether %s (%s) has a job: %w", d.Name, uuid, err)
		}
		res = result{job: job}
		return nil
	})
	if err != nil {
		return false, false, err
	}
	return res.active, res.job, nil
}

// inactiveJob asks for the job info of an inactive domain. libvirt first
// takes the domain's job lock: with no job it soon says "domain is not
// running"; with one it makes the caller wait (up to 30 s in libvirt 9). The
// helper goroutine left waiting ends when libvirtd answers or the connection
// closes, which the caller's release does at once.
func inactiveJob(c *lvConn, d libvirt.Domain) (bool, error) {
	type reply struct {
		typ int32
		err error
	}
	ch := make(chan reply, 1)
	go func() {
		typ, _, _, _, _, _, _, _, _, _, _, _, err := c.lv.DomainGetJobInfo(d)
		ch <- reply{typ, err}
	}()
	t := time.NewTimer(jobProbe)
	defer t.Stop()
	select {
	case r := <-ch:
		switch {
		case r.err == nil:
			return r.typ != int32(libvirt.DomainJobNone), nil
		case libvirt.IsNotFound(r.err) || isNotRunning(r.err):
			return false, nil
		case isLibvirtError(r.err, libvirt.ErrOperationTimeout):
			return true, nil // "cannot acquire state change lock"
		default:
			return false, r.err
		}
	case <-t.C:
		c.busy.Store(true)
		return true, nil
	}
}

// Destroy stops the domain at once (virDomainDestroyFlags: SIGTERM, then
// SIGKILL after about 10 s). A domain that is not running, or unknown here,
// is not an error. The fence SIGKILLs QEMU itself first (KillQEMU) and calls
// this to let libvirt tidy up.
func (l *Libvirt) Destroy(ctx context.Context, uuid string) error {
	id, err := parseUUID(uuid)
	if err != nil {
		return err
	}
	return l.call(ctx, func(c *lvConn) error {
		lv := c.lv
		d, err := lv.DomainLookupByUUID(id)
		if libvirt.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fence: libvirt could not look up domain %s to destroy it: %w", uuid, err)
		}
		err = lv.DomainDestroyFlags(d, libvirt.DomainDestroyDefault)
		if err == nil || libvirt.IsNotFound(err) || isNotRunning(err) {
			return nil
		}
		return fmt.Errorf("fence: libvirt could not destroy %s (%s): %w", d.Name, uuid, err)
	})
}

// Crashed tells whether libvirt says the domain with this UUID is shut off
// because its QEMU died without being asked to: shutoff reason "crashed"
// (no SHUTDOWN event before the monitor closed: a SIGKILL, a QEMU abort,
// a guest panic with on_crash=destroy, or QEMU found dead when libvirtd
// came back) or "failed". A destroy, a guest's own shutdown, a migration
// or a domain that runs or is unknown is not a crash.
func (l *Libvirt) Crashed(ctx context.Context, uuid string) (bool, error) {
	id, err := parseUUID(uuid)
	if err != nil {
		return false, err
	}
	var crashed bool
	err = l.call(ctx, func(c *lvConn) error {
		d, err := c.lv.DomainLookupByUUID(id)
		if libvirt.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fence: libvirt could not look up domain %s: %w", uuid, err)
		}
		state, reason, err := c.lv.DomainGetState(d, 0)
		if libvirt.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fence: libvirt could not give the state of %s (%s): %w", d.Name, uuid, err)
		}
		r := libvirt.DomainShutoffReason(reason)
		crashed = libvirt.DomainState(state) == libvirt.DomainShutoff &&
			(r == libvirt.DomainShutoffCrashed || r == libvirt.DomainShutoffFailed)
		return nil
	})
	return crashed, err
}

// Start starts the defined domain with this UUID (virDomainCreate), as an
// HA restart does. libvirt's error, which carries the hook's refusal (another
// host holds the domain), is wrapped unchanged; an unknown UUID gives
// ErrNoDomain.
func (l *Libvirt) Start(ctx context.Context, uuid string) error {
	id, err := parseUUID(uuid)
	if err != nil {
		return err
	}
	return l.call(ctx, func(c *lvConn) error {
		lv := c.lv
		d, err := lv.DomainLookupByUUID(id)
		if libvirt.IsNotFound(err) {
			return fmt.Errorf("fence: cannot start domain %s: %w", uuid, ErrNoDomain)
		}
		if err != nil {
			return fmt.Errorf("fence: libvirt could not look up domain %s to start it: %w", uuid, err)
		}
		if err := lv.DomainCreate(d); err != nil {
			return fmt.Errorf("fence: libvirt could not start %s (%s): %w", d.Name, uuid, err)
		}
		return nil
	})
}

// Define defines a persistent domain from its XML on this host (HA restart
// with ha.define_missing, for a host that lacks the domain).
func (l *Libvirt) Define(ctx context.Context, xml string) error {
	return l.call(ctx, func(c *lvConn) error {
		if _, err := c.lv.DomainDefineXML(xml); err != nil {
			return fmt.Errorf("fence: libvirt could not define the domain: %w", err)
		}
		return nil
	})
}

// EventKind is libvirt's lifecycle event type (virDomainEventType).
type EventKind int32

// The lifecycle events libvirt sends.
const (
	EventDefined     EventKind = EventKind(libvirt.DomainEventDefined)
	EventUndefined   EventKind = EventKind(libvirt.DomainEventUndefined)
	EventStarted     EventKind = EventKind(libvirt.DomainEventStarted)
	EventSuspended   EventKind = EventKind(libvirt.DomainEventSuspended)
	EventResumed     EventKind = EventKind(libvirt.DomainEventResumed)
	EventStopped     EventKind = EventKind(libvirt.DomainEventStopped)
	EventShutdown    EventKind = EventKind(libvirt.DomainEventShutdown)
	EventPMSuspended EventKind = EventKind(libvirt.DomainEventPmsuspended)
	EventCrashed     EventKind = EventKind(libvirt.DomainEventCrashed)
)

func (k EventKind) String() string {
	names := [...]string{"defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown", "pmsuspended", "crashed"}
	if k >= 0 && int(k) < len(names) {
		return names[k]
	}
	return "event-" + strconv.Itoa(int(k))
}

// LifecycleEvent is one libvirt lifecycle event of a domain of this host.
type LifecycleEvent struct {
	UUID string // lower-case
	Name string
	Kind EventKind
	// Detail is libvirt's detail for Kind, as DetailString names it: for
	// EventStopped 0 shutdown, 1 destroyed, 2 crashed, 3 migrated, 4 saved,
	// 5 failed, 6 from snapshot; for EventStarted 0 booted, 1 migrated,
	// 2 restored, 3 from snapshot, 4 wakeup.
	Detail int32
}

// DetailString names Detail for the started and stopped events.
func (e LifecycleEvent) DetailString() string {
	var names []string
	switch e.Kind {
	case EventStarted:
		names = []string{"booted", "migrated", "restored", "from-snapshot", "wakeup", "recreated"}
	case EventStopped:
		names = []string{"shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from-snapshot", "recreated"}
	}
	if e.Detail >= 0 && int(e.Detail) < len(names) {
		return names[e.Detail]
	}
	return strconv.Itoa(int(e.Detail))
}

func (e LifecycleEvent) String() string {
	return fmt.Sprintf("%s (%s) %s/%s", e.Name, e.UUID, e.Kind, e.DetailString())
}

// Events streams libvirt's lifecycle events (started, stopped, …) of every
// domain of this host, on a connection of its own; setting it up is bounded
// by ctx. The channel closes when ctx ends or that connection drops (libvirtd
// stopped or restarted, Close): subscribe again, and reconcile, since events
// may have been missed in between.
func (l *Libvirt) Events(ctx context.Context) (<-chan LifecycleEvent, error) {
	c, err := l.dial(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		go c.close()
		return nil, ErrLibvirtClosed
	}
	l.all[c] = struct{}{}
	l.mu.Unlock()
	forget := func() {
		l.mu.Lock()
		delete(l.all, c) // a nil map after Close: a no-op
		l.mu.Unlock()
		c.close()
	}

	// go-libvirt's stream goroutine lives until stop; it sends to src without
	// watching its context, so src is drained until it closes.
	streamCtx, stop := context.WithCancel(context.Background())
	type subscribed struct {
		src <-chan libvirt.DomainEventLifecycleMsg
		err error
	}
	done := make(chan subscribed, 1)
	go func() {
		src, err := c.lv.LifecycleEvents(streamCtx)
		done <- subscribed{src, err}
	}()
	var src <-chan libvirt.DomainEventLifecycleMsg
	select {
	case s := <-done:
		if s.err != nil {
			stop()
			go forget()
			return nil, fmt.Errorf("fence: %s at %s refused lifecycle events: %w", daemonName(c.dial.path), c.dial.path, s.err)
		}
		src = s.src
	case <-ctx.Done():
		stop()
		c.dial.abort()
		go func() {
			if s := <-done; s.err == nil {
				for range s.src {
				}
			}
			forget()
		}()
		return nil, fmt.Errorf("fence: %s at %s did not subscribe to events in time: %w", daemonName(c.dial.path), c.dial.path, ctx.Err())
	}

	out := make(chan LifecycleEvent, 16)
	go func() {
		// Close out first, then tidy up (which may take closeGrace).
		defer func() {
			stop()
			for range src {
			}
			forget()
		}()
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-src:
				if !ok {
					return // connection dropped
				}
				ev := LifecycleEvent{UUID: uuidString(m.Dom.UUID), Name: m.Dom.Name, Kind: EventKind(m.Event), Detail: m.Detail}
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// isNotRunning reports libvirt's "domain is not running" (VIR_ERR_OPERATION_INVALID).
func isNotRunning(err error) bool {
	return isLibvirtError(err, libvirt.ErrOperationInvalid)
}

func isLibvirtError(err error, code libvirt.ErrorNumber) bool {
	var e libvirt.Error
	return errors.As(err, &e) && e.Code == uint32(code)
}

// uuidString formats a libvirt UUID lower-case with dashes.
func uuidString(u libvirt.UUID) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// parseUUID parses a dashed (or undashed) UUID.
func parseUUID(s string) (libvirt.UUID, error) {
	var u libvirt.UUID
	c, ok := canonicalUUID(s)
	if !ok {
		return u, fmt.Errorf("fence: %q is not a domain UUID", s)
	}
	hex := strings.ReplaceAll(c, "-", "")
	for i := range u {
		b, err := strconv.ParseUint(hex[2*i:2*i+2], 16, 8)
		if err != nil {
			return u, fmt.Errorf("fence: %q is not a domain UUID", s)
		}
		u[i] = byte(b)
	}
	return u, nil
}
