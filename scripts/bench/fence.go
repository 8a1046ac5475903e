package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type fenceResult struct {
	Guests          int     `json:"guests"`
	Survivors       int     `json:"survivors"`
	FreezeToFenceMS float64 `json:"freeze_to_fence_ms"` // from the watchdog's "fencing:" log line
	FreezeToFirstMS float64 `json:"freeze_to_first_gone_ms"`
	FreezeToAllMS   float64 `json:"freeze_to_all_gone_ms"`
	FenceToAllMS    float64 `json:"fence_to_all_gone_ms"`
	FenceLogLine    string  `json:"fence_log_line"`
	WatchdogRSSKB   int64   `json:"watchdog_rss_kb"` // before the freeze, guests running
	WatchdogHWMKB   int64   `json:"watchdog_hwm_kb"`
	QEMURSSKB       int64   `json:"qemu_rss_avg_kb"`
}

var slogTime = regexp.MustCompile(`^time=(\S+)`)

// cmdFence freezes a lab host's proxy to etcd (SIGSTOP: a partition that
// hangs) and times until every listed QEMU is gone; then thaws the proxy.
func cmdFence(args []string) error {
	fs := flag.NewFlagSet("fence", flag.ExitOnError)
	proxy := fs.Int("proxy", 0, "PID of the host's proxy to etcd")
	pidList := fs.String("pids", "", "comma-separated QEMU PIDs")
	logPath := fs.String("log", "", "the host's watchdog log")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after")
	out := fs.String("out", "-", "JSON result file")
	wdPid := fs.Int("wd-pid", 0, "the host's watchdog (RSS before the freeze)")
	fs.Parse(args)
	var pids []int
	for _, p := range strings.Split(*pidList, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil {
			return fmt.Errorf("-pids: %v", err)
		}
		pids = append(pids, v)
	}
	for _, p := range pids {
		if !alive(p) {
			return fmt.Errorf("QEMU %d is not running before the freeze", p)
		}
	}
	var res fenceResult
	if *wdPid > 0 {
		res.WatchdogRSSKB, res.WatchdogHWMKB, _ = procRSS(*wdPid)
	}
	var qsum int64
	for _, p := range pids {
		r, _, _ := procRSS(p)
		qsum += r
	}
	res.QEMURSSKB = qsum / int64(len(pids))
	var logOff int64
	if st, err := os.Stat(*logPath); err == nil {
		logOff = st.Size()
	}
	if err := syscall.Kill(*proxy, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("freezing proxy %d: %v", *proxy, err)
	}
	t0 := time.Now()
	defer syscall.Kill(*proxy, syscall.SIGCONT)
	gone := map[int]time.Duration{}
	for len(gone) < len(pids) && time.Since(t0) < *timeout {
		for _, p := range pids {
			if _, ok := gone[p]; !ok && !alive(p) {
				gone[p] = time.Since(t0)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	syscall.Kill(*proxy, syscall.SIGCONT)
	res.Guests, res.Survivors = len(pids), len(pids)-len(gone)
	first, last := time.Duration(-1), time.Duration(0)
	for _, d := range gone {
		if first < 0 || d < first {
			first = d
		}
		last = max(last, d)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	res.FreezeToFirstMS, res.FreezeToAllMS = ms(first), ms(last)
	time.Sleep(200 * time.Millisecond) // let the log line reach the file
	if b, err := os.ReadFile(*logPath); err == nil && int64(len(b)) >= logOff {
		for _, line := range splitLines(string(b[logOff:])) {
			if !strings.Contains(line, "fencing: killing every guest") {
				continue
			}
			res.FenceLogLine = line
			if m := slogTime.FindStringSubmatch(line); m != nil {
				if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
					res.FreezeToFenceMS = ms(t.Sub(t0))
					res.FenceToAllMS = ms(t0.Add(last).Sub(t))
				}
			}
			break
		}
	}
	fmt.Fprintf(os.Stderr, "fence: %d guests, freeze→fence %.0f ms, fence→all gone %.0f ms, freeze→all gone %.0f ms, survivors %d\n",
		res.Guests, res.FreezeToFenceMS, res.FenceToAllMS, res.FreezeToAllMS, res.Survivors)
	if err := writeJSON(*out, res); err != nil {
		return err
	}
	if res.Survivors > 0 {
		return fmt.Errorf("%d QEMUs still running %v after the freeze", res.Survivors, *timeout)
	}
	return nil
}

// alive: the process exists and is neither a zombie nor dead.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	st := s[i+2]
	return st != 'Z' && st != 'X'
}
