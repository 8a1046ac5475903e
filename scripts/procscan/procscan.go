// Package procscan finds the lab's QEMU processes in /proc, for the
// checkers that watch the product from outside (the e2e tests' no-overlap
// checker, scripts/chaos's sampler): which host, by PID namespace (each lab host has its own /proc), runs
// a QEMU for which UUID. It shares no code with the product on purpose.
package procscan

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Proc is one QEMU process seen in one scan.
type Proc struct {
	PID   int
	Start uint64 // start time in clock ticks since boot (/proc/PID/stat field 22): a reused PID is another process
	UUID  string // lower case
	Host  string
}

// Scan lists the processes whose PID namespace is one of hosts' (the
// target of /proc/PID/ns/pid → host name) and whose command line carries
// "-uuid UUID" (QEMU). Zombies (killed, not reaped yet) are dead; stopped
// processes (SIGSTOP) are alive.
func Scan(procDir string, hosts map[string]string) ([]Proc, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, err
	}
	var out []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := procDir + "/" + e.Name()
		ns, err := os.Readlink(dir + "/ns/pid")
		if err != nil {
			continue
		}
		host, ok := hosts[ns]
		if !ok {
			continue
		}
		cmdline, err := os.ReadFile(dir + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
		i := slices.Index(args, "-uuid")
		if i < 0 || i+1 >= len(args) {
			continue
		}
		state, start, ok := Stat(dir + "/stat")
		if !ok || state == 'Z' || state == 'X' {
			continue
		}
		out = append(out, Proc{PID: pid, Start: start, UUID: strings.ToLower(args[i+1]), Host: host})
	}
	return out, nil
}

// Stat reads a process's state and start time from /proc/PID/stat.
func Stat(path string) (state byte, start uint64, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) S ppid …": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 20 {
		return 0, 0, false
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22 overall
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], start, true
}

// Named is a process and its name (/proc/PID/comm).
type Named struct {
	PID  int
	Comm string
}

// InPIDNS lists the processes under procDir whose PID namespace is ns (the
// target of /proc/PID/ns/pid), in procDir's order, with their comm ("" when
// it cannot be read). An empty ns matches nothing.
func InPIDNS(procDir, ns string) []Named {
	if ns == "" {
		return nil
	}
	entries, _ := os.ReadDir(procDir)
	var out []Named
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := procDir + "/" + e.Name()
		if m, err := os.Readlink(dir + "/ns/pid"); err != nil || m != ns {
			continue
		}
		c, _ := os.ReadFile(dir + "/comm")
		out = append(out, Named{PID: pid, Comm: strings.TrimSpace(string(c))})
	}
	return out
}
