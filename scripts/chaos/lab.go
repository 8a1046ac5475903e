package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/virtlease/virtlease/scripts/labconf"
	"github.com/virtlease/virtlease/scripts/procscan"
)

// lab is a running scripts/lab.sh lab, seen from outside: its files, its
// processes (by recorded PID and PID namespace) and lab.sh's commands.
type lab struct {
	root    string
	port    int
	labsh   string   // path of scripts/lab.sh
	hosts   []string // host-a, host-b, …
	members int      // etcd members
	env     []string

	// timings, from host-a's config
	ttl, renew, margin, hookTimeout time.Duration
}

func openLab(root string, port int, labsh string) (*lab, error) {
	l := &lab{root: strings.TrimRight(root, "/"), port: port, labsh: labsh, members: 1}
	b, err := os.ReadFile(filepath.Join(l.root, "lab.env"))
	if err != nil {
		return nil, fmt.Errorf("no lab in %s (scripts/lab.sh start): %w", root, err)
	}
	nhosts := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(v)
		switch k {
		case "PORT":
			if l.port == 0 {
				l.port = n
			} else if n != l.port {
				return nil, fmt.Errorf("the lab in %s runs on port %d, not %d", root, n, l.port)
			}
		case "NHOSTS":
			nhosts = n
		case "ETCD_MEMBERS":
			l.members = n
		}
	}
	if nhosts < 2 {
		return nil, fmt.Errorf("the lab in %s has %d host(s); the campaign needs at least 2", root, nhosts)
	}
	for i := range nhosts {
		l.hosts = append(l.hosts, "host-"+string(rune('a'+i)))
	}
	l.env = append(os.Environ(), "VL_LAB_ROOT="+l.root, "VL_LAB_PORT="+strconv.Itoa(l.port), "VL_LAB_LOCK_WAIT=120")
	if err := l.readTimings(); err != nil {
		return nil, err
	}
	return l, nil
}

// readTimings reads session.ttl, session.renew_interval, fence.margin and
// hook.timeout from host-a's config (lab.sh writes every host's alike).
func (l *lab) readTimings() error {
	l.ttl, l.renew, l.margin, l.hookTimeout = 10*time.Second, time.Second, 3*time.Second, 5*time.Second
	return labconf.Durations(filepath.Join(l.hostDir(l.hosts[0]), "etc-virtlease", "config.yaml"), map[string]*time.Duration{
		"session.ttl": &l.ttl, "session.renew_interval": &l.renew, "fence.margin": &l.margin, "hook.timeout": &l.hookTimeout,
	})
}

func (l *lab) hostDir(h string) string { return filepath.Join(l.root, "hosts", h) }

func (l *lab) uri(h string) string {
	return "qemu+unix:///system?socket=" + filepath.Join(l.hostDir(h), "run", "libvirt", "libvirt-sock")
}

// result is one command run.
type result struct {
	Stdout, Stderr string
	Code           int // -1: did not exit on its own (timeout)
	Start, End     time.Time
	Err            error
}

func (r result) Took() time.Duration { return r.End.Sub(r.Start) }

// msg is the command's error output on one line, libvirt's long hook
// command line shortened.
func (r result) msg() string {
	m := strings.Join(strings.Fields(r.Stderr), " ")
	if i, j := strings.Index(m, "Child process (LC_ALL"), strings.Index(m, "/etc/libvirt/hooks/qemu "); i >= 0 && j > i {
		m = m[:i] + "Child process (… " + m[j:]
	}
	if m == "" && r.Err != nil {
		m = r.Err.Error()
	}
	return m
}

func run(timeout time.Duration, env []string, name string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.WaitDelay = 5 * time.Second
	r := result{Start: time.Now()}
	r.Err = cmd.Run()
	r.End = time.Now()
	r.Stdout, r.Stderr = so.String(), se.String()
	r.Code = -1
	if cmd.ProcessState != nil {
		r.Code = cmd.ProcessState.ExitCode()
	}
	if ctx.Err() != nil {
		r.Code = -1
		r.Err = fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), timeout)
	}
	return r
}

// sh runs a lab.sh command.
func (l *lab) sh(timeout time.Duration, args ...string) result {
	return run(timeout, l.env, l.labsh, args...)
}

// mustSh runs a lab.sh command and returns an error with its output when it fails.
func (l *lab) mustSh(timeout time.Duration, args ...string) error {
	r := l.sh(timeout, args...)
	if r.Err != nil {
		return fmt.Errorf("lab.sh %s: %v: %s", strings.Join(args, " "), r.Err, strings.TrimSpace(r.Stderr))
	}
	return nil
}

func (l *lab) virsh(timeout time.Duration, h string, args ...string) result {
	return run(timeout, l.env, "virsh", append([]string{"-c", l.uri(h)}, args...)...)
}

// pidNS maps each host's recorded PID namespace to the host.
func (l *lab) pidNS() map[string]string {
	m := map[string]string{}
	for _, h := range l.hosts {
		b, err := os.ReadFile(filepath.Join(l.hostDir(h), "pidns"))
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			m[string(bytes.TrimSpace(b))] = h
		}
	}
	return m
}

// pidFile reads a PID file and returns the PID when that process is alive
// and its PID namespace is host's (h == "": any namespace, but its command
// line must name the lab root).
func (l *lab) pidFile(path, h string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !procAlive(pid) {
		return 0
	}
	if h != "" {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		want, _ := os.ReadFile(filepath.Join(l.hostDir(h), "pidns"))
		if err != nil || ns != strings.TrimSpace(string(want)) {
			return 0
		}
		return pid
	}
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if !bytes.Contains(cmd, []byte(l.root+"/")) {
		return 0
	}
	return pid
}

func (l *lab) watchdogPID(h string) int {
	return l.pidFile(filepath.Join(l.hostDir(h), "watchdog.pid"), h)
}

// hostComm lists host h's processes named comm (PID namespace match).
func (l *lab) hostComm(h, comm string) []int {
	ns := ""
	if b, err := os.ReadFile(filepath.Join(l.hostDir(h), "pidns")); err == nil {
		ns = strings.TrimSpace(string(b))
	}
	var out []int
	for _, p := range procscan.InPIDNS("/proc", ns) {
		if p.Comm == comm || (comm == "qemu" && strings.HasPrefix(p.Comm, "qemu-system")) {
			if procAlive(p.PID) {
				out = append(out, p.PID)
			}
		}
	}
	return out
}

func (l *lab) libvirtdPIDs(h string) []int { return l.hostComm(h, "libvirtd") }

// hostPIDs lists every process of host h but its namespace holder.
func (l *lab) hostPIDs(h string) []int {
	ns := ""
	if b, err := os.ReadFile(filepath.Join(l.hostDir(h), "pidns")); err == nil {
		ns = strings.TrimSpace(string(b))
	}
	holder := l.pidFile(filepath.Join(l.hostDir(h), "holder.pid"), h)
	if ns == "" {
		return nil
	}
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == holder {
			continue
		}
		if m, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && m == ns && procAlive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// sessionState is the state field of host h's session file ("" when none).
func (l *lab) sessionState(h string) string {
	b, err := os.ReadFile(filepath.Join(l.hostDir(h), "run", "virtlease", "session"))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.Index(s, `"state":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(`"state":"`):]
	if j := strings.IndexByte(s, '"'); j >= 0 {
		return s[:j]
	}
	return ""
}

// hostHealthy: h's libvirtd and watchdog run (not stopped) and its session is ok.
func (l *lab) hostHealthy(h string) bool {
	w := l.watchdogPID(h)
	if w == 0 || procState(w) == 'T' {
		return false
	}
	ld := l.libvirtdPIDs(h)
	if len(ld) == 0 || procState(ld[0]) == 'T' {
		return false
	}
	return l.sessionState(h) == "ok"
}

func (l *lab) memberPID(m int) int {
	dir := filepath.Join(l.root, "etcd")
	if m > 0 {
		dir += strconv.Itoa(m)
	}
	return l.pidFile(filepath.Join(dir, "etcd.pid"), "")
}

func procAlive(pid int) bool {
	s := procState(pid)
	return s != 0 && s != 'Z' && s != 'X'
}

// procState is the state letter of /proc/PID/stat (0 when gone).
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

func signal(pids []int, sig syscall.Signal) error {
	var errs []error
	for _, p := range pids {
		if p > 0 {
			if err := syscall.Kill(p, sig); err != nil {
				errs = append(errs, fmt.Errorf("kill -%d %d: %w", sig, p, err))
			}
		}
	}
	return errors.Join(errs...)
}

// noDeviceHoldMax is the longest a watchdog may be away (killed, or
// stopped) in a lab without the stand-in device: it must be back, and
// fencing if it cannot renew, before its fence point. The last
// acknowledged renewal was sent at most one renew interval before the
// fault, so the fence point is at least ttl − margin − renew after it; one
// more renew interval is left for the restart.
func (l *lab) noDeviceHoldMax() time.Duration {
	return l.ttl - l.margin - 2*l.renew
}
