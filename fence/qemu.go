package fence

// The OS side of fencing: find this host's QEMU processes in /proc and
// SIGKILL them, without asking libvirtd anything. libvirt's own destroy sends
// SIGTERM and may wait 10 s before it kills, which is too slow for a 3 s
// margin, and a hung libvirtd would not answer at all.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// QEMU is a QEMU process of this host found in /proc.
type QEMU struct {
	PID  int
	UUID string // lower-case, from -uuid
	Name string // from -name guest=NAME; "" when the command line has none
}

// HostFilter decides which processes of a shared PID namespace belong to
// this host. In production one machine is one host and every QEMU in /proc is
// ours; in the lab several libvirt hosts share one PID namespace (each is only
// a mount+UTS namespace), so a /proc scan sees every host's QEMUs.
//
// A process is this host's when either rule holds:
//
//   - its mount namespace is MountNS. The lab sets namespaces = [ ] in
//     qemu.conf, so QEMU stays in libvirtd's (and the watchdog's) mount
//     namespace, and each lab host has its own.
//   - its pid is named in this host's libvirt pid files
//     (RUNDIR/qemu/NAME.pid), the file was written after the process
//     started (a stale file from a crash does not name a reused pid), and the
//     process's -name is that NAME. Production libvirt gives each QEMU a
//     private mount namespace, so this rule is the one that finds them there.
//     RUNDIR/qemu/driver.pid holds libvirtd's own pid and is never read.
//
// A zero HostFilter matches nothing: fencing with it kills nothing.
type HostFilter struct {
	// MountNS is this host's mount namespace as readlink(2) shows
	// /proc/self/ns/mnt ("mnt:[4026531840]"); "" turns the rule off.
	MountNS string
	// PIDFiles maps a pid to the pid file of this host's libvirt that names it.
	PIDFiles map[int]PIDFile
}

// PIDFile is one of libvirt's per-domain pid files.
type PIDFile struct {
	Name    string    // domain name: the file's name without ".pid"
	ModTime time.Time // when QEMU wrote it
}

// ThisHost builds the HostFilter of the host whose libvirt keeps its state in
// runDir ("/run/libvirt" for qemu:///system) and whose mount namespace is the
// caller's own, as procDir ("/proc") shows it. A missing runDir/qemu
// directory is not an error (libvirtd has not run a guest since boot); an
// unreadable /proc/self/ns/mnt is, since the lab rule would then silently
// find nothing.
func ThisHost(procDir, runDir string) (HostFilter, error) {
	ns, err := os.Readlink(filepath.Join(procDir, "self", "ns", "mnt"))
	if err != nil {
		return HostFilter{}, fmt.Errorf("fence: cannot read this host's mount namespace: %w", err)
	}
	f := HostFilter{MountNS: ns, PIDFiles: map[int]PIDFile{}}
	dir := filepath.Join(runDir, "qemu")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("fence: cannot list libvirt's pid files in %s: %w", dir, err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".pid")
		// driver.pid is libvirtd's own pid: never a guest.
		if !ok || name == "" || e.Name() == "driver.pid" || !e.Type().IsRegular() {
			continue
		}
		pid, mtime, err := readPIDFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // removed meanwhile, or being written: not a running guest to trust
		}
		f.PIDFiles[pid] = PIDFile{Name: name, ModTime: mtime}
	}
	return f, nil
}

// readPIDFile returns the pid in a pid file written by QEMU ("1234\n") and
// the file's modification time.
func readPIDFile(path string) (int, time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, time.Time{}, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, time.Time{}, fmt.Errorf("fence: %s does not hold a pid: %q", path, b)
	}
	st, err := os.Stat(path)
	if err != nil {
		return 0, time.Time{}, err
	}
	return pid, st.ModTime(), nil
}

// FindQEMU lists the QEMU processes under procDir ("/proc" in production)
// whose command line has -uuid UUID and that belong to this host by self.
// The result is sorted by pid. Processes that vanish during the scan are
// skipped; only an unreadable procDir is an error. It reads files only and
// never asks libvirtd.
func FindQEMU(procDir string, self HostFilter) ([]QEMU, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("fence: cannot list processes in %s: %w", procDir, err)
	}
	me := os.Getpid()
	var out []QEMU
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 || pid == me {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(procDir, e.Name(), "cmdline"))
		if err != nil {
			continue // gone, or a kernel thread
		}
		uuid, name, ok := parseQEMUCmdline(cmdline)
		if !ok || !self.owns(procDir, pid, name) {
			continue
		}
		out = append(out, QEMU{PID: pid, UUID: uuid, Name: name})
	}
	slices.SortFunc(out, func(a, b QEMU) int { return a.PID - b.PID })
	return out, nil
}

// owns reports whether process pid (whose QEMU -name is name) is this host's.
func (f HostFilter) owns(procDir string, pid int, name string) bool {
	if f.MountNS != "" {
		ns, err := os.Readlink(filepath.Join(procDir, strconv.Itoa(pid), "ns", "mnt"))
		if err == nil && ns == f.MountNS {
			return true
		}
	}
	pf, ok := f.PIDFiles[pid]
	if !ok || pf.Name != name {
		return false
	}
	// A pid file older than its process names a pid that was reused after
	// the guest died without libvirt removing the file (a crash).
	started, err := processStart(procDir, pid)
	if err != nil {
		return false
	}
	return !started.After(pf.ModTime.Add(pidFileSlack))
}

// pidFileSlack absorbs the rounding of a process's start time: /proc/stat's
// btime has whole seconds, the start tick 10 ms.
const pidFileSlack = 2 * time.Second

// userHZ is the unit of /proc/PID/stat's start time: USER_HZ, 100 on every
// Linux architecture Go supports.
const userHZ = 100

// processStart returns the wall-clock time at which pid started, from
// procDir/stat's btime and field 22 of procDir/PID/stat.
func processStart(procDir string, pid int) (time.Time, error) {
	st, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return time.Time{}, err
	}
	// comm (field 2) may hold spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(st, ')')
	if i < 0 {
		return time.Time{}, fmt.Errorf("fence: malformed %s/%d/stat", procDir, pid)
	}
	fields := strings.Fields(string(st[i+1:]))
	// fields[0] is field 3 (state); start time is field 22.
	if len(fields) < 20 {
		return time.Time{}, fmt.Errorf("fence: malformed %s/%d/stat", procDir, pid)
	}
	ticks, err := strconv.ParseInt(fields[19], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("fence: malformed start time in %s/%d/stat: %w", procDir, pid, err)
	}
	boot, err := bootTime(procDir)
	if err != nil {
		return time.Time{}, err
	}
	return boot.Add(time.Duration(ticks) * time.Second / userHZ), nil
}

// bootTime reads btime from procDir/stat.
func bootTime(procDir string) (time.Time, error) {
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return time.Time{}, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("fence: malformed btime in %s/stat: %w", procDir, err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, fmt.Errorf("fence: no btime in %s/stat", procDir)
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

// KillQEMU sends SIGKILL to each process and waits, bounded by ctx, until
// each is gone: exited (a zombie no longer runs guest code nor holds its
// files) or reaped. It returns the processes still alive when ctx ended, in
// the order given; nil means every one is dead.
//
// A pid that no longer runs the same guest (its -uuid differs: the QEMU died
// and the pid was reused) counts as gone and is not signalled. Each process
// is pinned with a pidfd before that check, so the signal cannot reach a
// process that took over the pid afterwards. On kernels without pidfds it
// falls back to kill(2) and polling /proc.
//
// SIGKILL cannot be caught, blocked or ignored and also ends a stopped
// (SIGSTOPped) QEMU, but a process in uninterruptible sleep (D state, stuck
// on storage) dies only when that I/O returns: it is then a survivor.
// Writes a dead QEMU already handed to the kernel (network disks: data
// queued in a socket) may still reach the storage after it died.
func KillQEMU(ctx context.Context, procs []QEMU) (survivors []QEMU) {
	return killQEMU(ctx, "/proc", procs, true)
}

// killPoll is how often KillQEMU looks at ctx, and at /proc without pidfds.
const killPoll = 5 * time.Millisecond

// killQEMU is KillQEMU; usePidfd false tests the fallback for kernels
// without pidfds.
func killQEMU(ctx context.Context, procDir string, procs []QEMU, usePidfd bool) []QEMU {
	type victim struct {
		q     QEMU
		pidfd int // -1: no pidfd, poll /proc
	}
	var waiting []victim
	for _, q := range procs {
		fd, err := -1, error(unix.ENOSYS)
		if usePidfd {
			fd, err = unix.PidfdOpen(q.PID, 0)
		}
		switch {
		case errors.Is(err, unix.ESRCH):
			continue // already gone
		case err != nil:
			fd = -1 // no pidfds here (ENOSYS, seccomp): signal by pid
		}
		if !sameGuest(procDir, q) {
			if fd >= 0 {
				unix.Close(fd)
			}
			continue // exited, perhaps a zombie, or the pid was reused
		}
		if fd >= 0 {
			err = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		} else {
			err = unix.Kill(q.PID, unix.SIGKILL)
		}
		if errors.Is(err, unix.ESRCH) {
			if fd >= 0 {
				unix.Close(fd)
			}
			continue
		}
		// Any other error (EPERM) leaves it alive: it is reported as a survivor.
		waiting = append(waiting, victim{q: q, pidfd: fd})
	}
	defer func() {
		for _, v := range waiting {
			if v.pidfd >= 0 {
				unix.Close(v.pidfd)
			}
		}
	}()

	for {
		// Drop the dead.
		alive := waiting[:0]
		for _, v := range waiting {
			if dead(procDir, v.q.PID, v.pidfd) {
				if v.pidfd >= 0 {
					unix.Close(v.pidfd)
				}
				continue
			}
			alive = append(alive, v)
		}
		waiting = alive
		if len(waiting) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			out := make([]QEMU, len(waiting))
			for i, v := range waiting {
				out[i] = v.q
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

// sameGuest reports whether q.PID still runs q's guest (same -uuid).
func sameGuest(procDir string, q QEMU) bool {
	cmdline, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(q.PID), "cmdline"))
	if err != nil {
		return false
	}
	uuid, _, ok := parseQEMUCmdline(cmdline)
	return ok && uuid == strings.ToLower(q.UUID)
}

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
