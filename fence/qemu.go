package fence

// The OS side of fencing: find this host's QEMU processes in /proc and
// SIGKILL them, without asking libvirtd anything. libvirt's own destroy sends
// SIGTERM and may wait 10 s before it kills, which is too slow for a 3 s
// margin, and a hung libvirtd would not answer at all.
//
// One machine is one host: every QEMU with -uuid in this /proc is this
// host's guest, whatever mount namespace it runs in (libvirt gives each QEMU
// its own; the watchdog's unit gives it another). Nothing here looks at
// namespaces, pid files or wall-clock times, so a clock step changes nothing.
//
// Reading /proc/PID/cmdline takes that process's mmap_lock and blocks while
// a task stuck in D state (a hung NFS or storage path, which comes with the
// partitions that make us fence) holds it. So no read is on the fence's
// critical path without a bound: reads run in parallel, a read that outlives
// the scan's bound is abandoned and reported, and guests found once stay
// pinned by a pidfd, so later scans and every kill need not read them again.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// QEMU is a QEMU process of this host found in /proc.
type QEMU struct {
	PID  int
	UUID string // lower-case, from -uuid
	Name string // from -name guest=NAME; "" when the command line has none
}

// ErrUnread is wrapped by the error of a scan or a kill that could not read
// some processes' command lines in time: a guest may hide among them.
var ErrUnread = errors.New("command lines unread")

// ScanTimeout bounds the /proc reads of one scan. A healthy scan of a
// thousand processes takes milliseconds; what is still unread then is
// reported, not waited for.
const ScanTimeout = 500 * time.Millisecond

// maxReads is how many command lines are read at once.
const maxReads = 16

// Procs finds this host's QEMU processes in /proc and keeps a pidfd on each
// one it found: a pidfd pins the process, so its pid cannot be reused while
// the pidfd is open, and SIGKILL through it needs no new look at /proc.
// Use NewProcs; the zero value is not usable. Safe for concurrent use.
type Procs struct {
	dir     string                            // "/proc"
	read    func(path string) ([]byte, error) // os.ReadFile
	noPidfd bool                              // tests: the fallback for kernels without pidfds
	timeout time.Duration                     // ScanTimeout
	// scan serializes Find and Close: a scan reuses the pins it saw at its
	// start, so no other may close them meanwhile.
	scan     sync.Mutex
	mu       sync.Mutex
	pins     map[int]pin  // the guests found by the last scan
	inFlight map[int]bool // cmdline reads not back yet: never two on one pid
}

// pin is a guest's QEMU held by a pidfd (-1: no pidfds on this kernel).
type pin struct {
	q  QEMU
	fd int
}

// NewProcs returns a Procs reading procDir ("/proc").
func NewProcs(procDir string) *Procs {
	return &Procs{dir: procDir, read: os.ReadFile, timeout: ScanTimeout, pins: map[int]pin{}, inFlight: map[int]bool{}}
}

// Close drops every pin.
func (p *Procs) Close() {
	p.scan.Lock()
	defer p.scan.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid, pn := range p.pins {
		closeFD(pn.fd)
		delete(p.pins, pid)
	}
}

// Find lists the QEMU processes (command line with -uuid) in /proc, sorted
// by pid, and pins each one.
//
// Outcomes:
//   - every process read: the QEMUs, nil;
//   - some command lines not read within ScanTimeout (or ctx): the QEMUs
//     found, and an error wrapping ErrUnread that names the unread pids (a
//     guest may be among them: the caller must not take the list as all);
//   - procDir unreadable: nil and an error.
//
// Processes that vanish meanwhile are skipped. It never asks libvirtd.
func (p *Procs) Find(ctx context.Context) ([]QEMU, error) {
	p.scan.Lock()
	defer p.scan.Unlock()
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, fmt.Errorf("fence: cannot list processes in %s: %w", p.dir, err)
	}
	me := os.Getpid()
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 && pid != me {
			pids = append(pids, pid)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	found := map[int]pin{}
	var toRead []int
	p.mu.Lock()
	for _, pid := range pids {
		// A pinned guest whose pidfd shows it alive is the same process:
		// its pid cannot have been reused while we hold the pidfd.
		if pn, ok := p.pins[pid]; ok && pn.fd >= 0 && !exitedFD(pn.fd) {
			found[pid] = pn
			continue
		}
		toRead = append(toRead, pid)
	}
	p.mu.Unlock()

	results, unread := p.readAll(ctx, toRead, nil, nil)
	for pid, pn := range results {
		found[pid] = pn
	}

	p.mu.Lock()
	for pid, pn := range p.pins {
		if f, ok := found[pid]; !ok || f.fd != pn.fd {
			closeFD(pn.fd) // gone, or replaced by a new pin
		}
	}
	p.pins = found
	out := make([]QEMU, 0, len(found))
	for _, pn := range found {
		out = append(out, pn.q)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b QEMU) int { return a.PID - b.PID })
	return out, unreadError(unread)
}

// unreadError reports the pids whose command lines were not read, or nil.
func unreadError(pids []int) error {
	if len(pids) == 0 {
		return nil
	}
	slices.Sort(pids)
	return fmt.Errorf("fence: %w: %d process(es) did not show their command line in time (stuck in D state?), pids %v", ErrUnread, len(pids), pids)
}

// readAll reads the command lines of pids in parallel, pinning each QEMU,
// until every read is back or ctx ends. With want non-nil only a QEMU whose
// -uuid is want[pid] counts. With each non-nil, each QEMU is handed to it
// (one call at a time) as soon as its read is back, and is not in found. A read not back when ctx ends is abandoned:
// its goroutine closes what it opened when (if ever) the read returns, and
// no new read of that pid starts meanwhile. unread lists those pids and the
// ones not started.
func (p *Procs) readAll(ctx context.Context, pids []int, want map[int]string, each func(pin)) (found map[int]pin, unread []int) {
	type scan struct {
		mu    sync.Mutex
		over  bool
		found map[int]pin
		done  map[int]bool
	}
	sc := &scan{found: map[int]pin{}, done: map[int]bool{}}
	finished := make(chan struct{}, len(pids))
	slots := make(chan struct{}, maxReads)
	started := 0
	for _, pid := range pids {
		p.mu.Lock()
		busy := p.inFlight[pid]
		if !busy {
			p.inFlight[pid] = true
		}
		p.mu.Unlock()
		if busy {
			continue // an earlier read of it never came back: it would hang too
		}
		started++
		go func() {
			defer func() {
				p.mu.Lock()
				delete(p.inFlight, pid)
				p.mu.Unlock()
				finished <- struct{}{}
			}()
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				return
			}
			pn, ok := p.readOne(pid)
			if ok && want != nil && want[pid] != pn.q.UUID {
				closeFD(pn.fd)
				ok = false
			}
			sc.mu.Lock()
			defer sc.mu.Unlock()
			if sc.over {
				if ok {
					closeFD(pn.fd) // too late: the scan has moved on
				}
				return
			}
			sc.done[pid] = true
			switch {
			case ok && each != nil:
				each(pn)
			case ok:
				sc.found[pid] = pn
			}
		}()
	}
wait:
	for range started {
		select {
		case <-finished:
		case <-ctx.Done():
			break wait
		}
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.over = true
	for _, pid := range pids {
		if !sc.done[pid] {
			unread = append(unread, pid)
		}
	}
	return sc.found, unread
}

// readOne pins pid and reads its command line; ok is false when it is not
// a QEMU with -uuid, or is gone. The pidfd is opened before the read and
// checked after it: a process alive at both ends cannot have handed its pid
// to another, so the command line read is the pinned process's.
func (p *Procs) readOne(pid int) (pin, bool) {
	fd := -1
	if !p.noPidfd {
		var err error
		fd, err = unix.PidfdOpen(pid, 0)
		switch {
		case errors.Is(err, unix.ESRCH):
			return pin{}, false
		case err != nil:
			fd = -1 // no pidfds here (ENOSYS, seccomp): kill by pid after a re-read
		}
	}
	cmdline, err := p.read(filepath.Join(p.dir, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		closeFD(fd)
		return pin{}, false // gone, or a kernel thread
	}
	uuid, name, ok := parseQEMUCmdline(cmdline)
	if !ok || (fd >= 0 && exitedFD(fd)) {
		closeFD(fd)
		return pin{}, false
	}
	return pin{q: QEMU{PID: pid, UUID: uuid, Name: name}, fd: fd}, true
}

func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// exitedFD reports whether the process behind pidfd fd has exited (a
// pidfd becomes readable then, zombie or reaped).
func exitedFD(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// parseQEMUCmdline reads a NUL-separated /proc/PID/cmdline and returns the
// value of its last -uuid (lower-case, dashed) and the guest name from -name.
// Options are accepted with one or two dashes and with the value either as
// the next argument or after '='. ok is false without a well-formed UUID.
func parseQEMUCmdline(cmdline []byte) (uuid, name string, ok bool) {
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	for i := 1; i < len(args); i++ {
		opt, val, hasVal := strings.Cut(args[i], "=")
		if !strings.HasPrefix(opt, "-") {
			continue
		}
		opt = strings.TrimPrefix(opt[1:], "-")
		if opt != "uuid" && opt != "name" {
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				break
			}
			i++
			val = args[i]
		}
		switch opt {
		case "uuid":
			if u, good := canonicalUUID(val); good {
				uuid, ok = u, true
			}
		case "name":
			name = guestName(val)
		}
	}
	return uuid, name, ok
}

// canonicalUUID returns s as a lower-case dashed UUID; it also accepts the
// 32 hex digits without dashes.
func canonicalUUID(s string) (string, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	hex := strings.ReplaceAll(s, "-", "")
	if len(hex) != 32 || (len(s) != 32 && len(s) != 36) {
		return "", false
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false
		}
	}
	if len(s) == 36 && (s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') {
		return "", false
	}
	return hex[0:8] + "-" + hex[8:12] + "-" + hex[12:16] + "-" + hex[16:20] + "-" + hex[20:32], true
}

// guestName extracts the guest name from QEMU's -name value:
// "guest=NAME,debug-threads=on" (libvirt's form) or plain "NAME[,process=…]".
// QEMU escapes a comma inside a value as ",,".
func guestName(v string) string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == ',' {
			if i+1 < len(v) && v[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(v[i])
	}
	parts = append(parts, cur.String())
	for i, p := range parts {
		if n, ok := strings.CutPrefix(p, "guest="); ok {
			return n
		}
		if i == 0 && !strings.Contains(p, "=") {
			return p // the implied first key is guest
		}
	}
	return ""
}

// Kill sends SIGKILL to each process and waits, bounded by ctx, until each
// is gone: exited (a zombie no longer runs guest code nor holds its files)
// or reaped. It returns the processes still alive when ctx ended, in the
// order given; nil means every one is dead.
//
// Every process Find pinned (same pid and -uuid) is signalled first,
// through its pidfd, with no new look at /proc. Then the others are pinned
// and their -uuid checked, in parallel, bounded by ctx: a pid that no longer
// runs the same guest (the QEMU died and the pid was reused) counts as gone
// and is not signalled; one whose command line cannot be read in time is a
// survivor. On kernels without pidfds it signals with kill(2) after the
// check and polls /proc.
//
// SIGKILL cannot be caught, blocked or ignored and also ends a stopped
// (SIGSTOPped) QEMU, but a process in uninterruptible sleep (D state, stuck
// on storage) dies only when that I/O returns: it is then a survivor.
// Writes a dead QEMU already handed to the kernel (network disks: data
// queued in a socket) may still reach the storage after it died.
//
// Outcomes: nil (all dead), or the survivors.
func (p *Procs) Kill(ctx context.Context, procs []QEMU) (survivors []QEMU) {
	type victim struct {
		q     QEMU
		pidfd int // -1: no pidfd, poll /proc
	}
	var waiting []victim
	defer func() {
		for _, v := range waiting {
			closeFD(v.pidfd)
		}
	}()
	signal := func(q QEMU, fd int) {
		var err error
		if fd >= 0 {
			err = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		} else {
			err = unix.Kill(q.PID, unix.SIGKILL)
		}
		if errors.Is(err, unix.ESRCH) {
			closeFD(fd)
			return
		}
		// Any other error (EPERM) leaves it alive: it is reported as a survivor.
		waiting = append(waiting, victim{q: q, pidfd: fd})
	}

	// Pinned: SIGKILL at once, before anything that could wait.
	want, names := map[int]string{}, map[int]string{}
	var check []int
	p.mu.Lock()
	var pinned []victim
	for _, q := range procs {
		q.UUID = strings.ToLower(q.UUID)
		if pn, ok := p.pins[q.PID]; ok && pn.fd >= 0 && pn.q.UUID == q.UUID {
			if fd, err := unix.FcntlInt(uintptr(pn.fd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
				pinned = append(pinned, victim{q: q, pidfd: fd})
				continue
			}
		}
		if _, dup := want[q.PID]; !dup {
			want[q.PID] = q.UUID
			names[q.PID] = q.Name
			check = append(check, q.PID)
		}
	}
	p.mu.Unlock()
	for _, v := range pinned {
		signal(v.q, v.pidfd)
	}

	// The others: pin and check them all at once, each SIGKILLed as soon
	// as its check is back. Each check gets at least ScanTimeout, so that a
	// fence whose context already ended still kills.
	rtimeout := ScanTimeout
	if dl, ok := ctx.Deadline(); ok {
		rtimeout = max(rtimeout, time.Until(dl))
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rtimeout)
	defer cancel()
	_, unread := p.readAll(rctx, check, want, func(pn pin) {
		q := pn.q
		q.Name = names[q.PID]
		signal(q, pn.fd)
	})
	var stuck []QEMU
	for _, q := range procs {
		if slices.Contains(unread, q.PID) {
			stuck = append(stuck, q)
		}
	}

	for {
		// Drop the dead.
		alive := waiting[:0]
		for _, v := range waiting {
			if dead(p.dir, v.q.PID, v.pidfd) {
				closeFD(v.pidfd)
				continue
			}
			alive = append(alive, v)
		}
		waiting = alive
		if len(waiting) == 0 && len(stuck) == 0 {
			return nil
		}
		if len(waiting) == 0 || ctx.Err() != nil {
			left := map[int]bool{}
			for _, q := range stuck {
				left[q.PID] = true
			}
			for _, v := range waiting {
				left[v.q.PID] = true
			}
			var out []QEMU
			for _, q := range procs {
				if left[q.PID] {
					out = append(out, q)
					delete(left, q.PID)
				}
			}
			return out
		}
		// Sleep until one exits (pidfds become readable) or the next look at ctx.
		wait := killPoll
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			wait = max(time.Until(dl), 0)
		}
		var fds []unix.PollFd
		for _, v := range waiting {
			if v.pidfd >= 0 {
				fds = append(fds, unix.PollFd{Fd: int32(v.pidfd), Events: unix.POLLIN})
			}
		}
		if len(fds) == len(waiting) {
			_, _ = unix.Poll(fds, int(wait.Milliseconds())+1)
		} else {
			time.Sleep(wait)
		}
	}
}

// killPoll is how often Kill looks at ctx, and at /proc without pidfds.
const killPoll = 5 * time.Millisecond

// dead reports whether pid has exited: its pidfd is readable, or /proc has no
// such process, or it is a zombie ('Z') or dead ('X').
func dead(procDir string, pid, pidfd int) bool {
	if pidfd >= 0 {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n > 0
	}
	st, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(st, ')')
	if i < 0 || i+2 >= len(st) {
		return false
	}
	state := st[i+2]
	return state == 'Z' || state == 'X'
}
