// Command labhwdog stands in for a lab host's hardware watchdog device.
//
// scripts/lab.sh (VL_LAB_HWDOG=1) gives each host a FIFO, /run/hwdog.fifo
// inside the host, as its fence.hardware_watchdog (fence/device.go treats
// a FIFO as the lab's stand-in: a pet is the byte "p", the magic close "V").
// labhwdog reads it like Linux's watchdog core (drivers/watchdog/
// watchdog_dev.c: watchdog_open, watchdog_write, watchdog_release):
//
//   - opening a stopped device starts it (its count begins); opening one
//     that still counts (left by a dead watchdog process) changes nothing;
//   - every write restarts the countdown ("p", and "V" too);
//   - a close right after "V" stops it; any other close (a dead or killed
//     watchdog process, or a stop that keeps the guests) leaves it counting
//     and restarts the countdown, as the kernel pets a device it releases
//     without the magic close ("watchdog did not stop!");
//   - WDIOC_SETTIMEOUT, which Linux also counts as a pet, has no FIFO
//     equivalent: the timeout comes from the host's config, and virtlease
//     sends the ioctl only when the device's timeout differs, which on a
//     real device happens at its first open on a boot, when it has just
//     started;
//   - when the countdown runs out the host is "reset": every process of the
//     host's mount and UTS namespaces is SIGKILLed (libvirtd first, so that
//     no hook runs for the dying guests), except the namespace holder, which
//     stands for the machine itself ("scripts/lab.sh boot HOST" brings the
//     host's daemons back).
//
// The timeout is the one the virtlease watchdog sets on a real device:
// ttl − 2 × renew_interval − 1 s, read from the host's config. No real
// watchdog device is ever opened.
//
//	labhwdog -fifo ROOT/hosts/H/run/hwdog.fifo -host-dir ROOT/hosts/H -config ROOT/hosts/H/etc-virtlease/config.yaml
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/virtlease/virtlease/scripts/labconf"
)

func main() {
	fifo := flag.String("fifo", "", "the FIFO the virtlease watchdog opens as its device")
	hostDir := flag.String("host-dir", "", "the lab host's directory (pidns, holder.pid)")
	config := flag.String("config", "", "the host's virtlease config (session.ttl, session.renew_interval)")
	timeout := flag.Duration("timeout", 0, "device timeout (default: ttl − 2×renew_interval − 1s from -config)")
	flag.Parse()
	if *fifo == "" || *hostDir == "" || (*config == "" && *timeout == 0) || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: labhwdog -fifo PATH -host-dir DIR (-config FILE | -timeout D)")
		os.Exit(2)
	}
	log.SetFlags(log.Ldate | log.Ltime | log.Lmicroseconds)
	if *timeout == 0 {
		t, err := deviceTimeout(*config)
		if err != nil {
			log.Fatalf("labhwdog: %v", err)
		}
		*timeout = t
	}
	if *timeout <= 0 {
		log.Fatalf("labhwdog: device timeout %s: want > 0", *timeout)
	}
	host := filepath.Base(*hostDir)
	d := &device{timeout: *timeout, reset: func(why string) { reset(*hostDir, why) }}
	log.Printf("labhwdog: %s: device %s, timeout %s", host, *fifo, *timeout)
	go d.countdown()
	for {
		// Blocks until a writer (the virtlease watchdog) opens the FIFO.
		f, err := os.OpenFile(*fifo, os.O_RDONLY, 0)
		if err != nil {
			log.Fatalf("labhwdog: %v", err)
		}
		d.opened()
		d.read(f)
		f.Close()
	}
}

// deviceTimeout reads session.ttl and session.renew_interval from a lab
// config (written by lab.sh: "  ttl: 6s" under "session:") and returns
// ttl − 2 × renew − 1 s, as fence.Config.DeviceTimeout does.
func deviceTimeout(path string) (time.Duration, error) {
	ttl, renew := 10*time.Second, time.Second
	if err := labconf.Durations(path, map[string]*time.Duration{"session.ttl": &ttl, "session.renew_interval": &renew}); err != nil {
		return 0, err
	}
	return ttl - 2*renew - time.Second, nil
}

// device is the countdown.
type device struct {
	timeout time.Duration
	reset   func(why string)

	mu      sync.Mutex
	armed   bool
	lastPet time.Time
	magic   bool // the last byte read was "V"
}

func (d *device) opened() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.magic = false
	if d.armed {
		log.Printf("labhwdog: opened while counting: not petted (%s left)", (d.timeout - time.Since(d.lastPet)).Round(time.Millisecond))
		return
	}
	log.Printf("labhwdog: opened: started, timeout %s", d.timeout)
	d.armed, d.lastPet = true, time.Now()
}

// read consumes one open's bytes until the writer closes.
func (d *device) read(r io.Reader) {
	buf := make([]byte, 64)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			d.mu.Lock()
			for _, b := range buf[:n] {
				d.magic = b == 'V'
			}
			// Every write pets, as a Linux watchdog driver does.
			d.lastPet = time.Now()
			d.mu.Unlock()
		}
		if err != nil {
			d.mu.Lock()
			if d.magic && d.armed {
				d.armed = false
				log.Printf("labhwdog: magic close: disarmed")
			} else if d.armed {
				d.lastPet = time.Now()
				log.Printf("labhwdog: closed without the magic close: petted by the release, still counting (%s left)", d.timeout)
			}
			d.mu.Unlock()
			if !errors.Is(err, io.EOF) {
				log.Printf("labhwdog: read: %v", err)
			}
			return
		}
	}
}

func (d *device) countdown() {
	for range time.Tick(20 * time.Millisecond) {
		d.mu.Lock()
		var why string
		if d.armed && time.Since(d.lastPet) > d.timeout {
			why = fmt.Sprintf("not petted for %s (timeout %s)", time.Since(d.lastPet).Round(time.Millisecond), d.timeout)
			d.armed = false
		}
		d.mu.Unlock()
		if why != "" {
			d.reset(why)
		}
	}
}

// reset SIGKILLs every process of the host (its recorded PID namespace: the
// host's QEMUs and its watchdog each have a mount namespace of their own)
// but the namespace holder: libvirtd first, then the rest.
func reset(hostDir, why string) {
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(hostDir, name))
		return strings.TrimSpace(string(b))
	}
	pidns := read("pidns")
	holder, _ := strconv.Atoi(read("holder.pid"))
	self, _ := os.Readlink("/proc/self/ns/pid")
	if pidns == "" || pidns == self {
		log.Printf("labhwdog: RESET wanted (%s) but the host's namespaces are unknown: nothing killed", why)
		return
	}
	var first, rest []int
	for round := 0; round < 5; round++ {
		first, rest = first[:0], rest[:0]
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == holder || pid == os.Getpid() {
				continue
			}
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil || ns != pidns {
				continue
			}
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if strings.TrimSpace(string(comm)) == "libvirtd" {
				first = append(first, pid)
			} else {
				rest = append(rest, pid)
			}
		}
		if len(first)+len(rest) == 0 {
			break
		}
		for _, pid := range first {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, pid := range rest {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if round == 0 {
			log.Printf("labhwdog: RESET: %s: SIGKILLed %d process(es) of the host (libvirtd %v, others %v)", why, len(first)+len(rest), first, rest)
		}
		time.Sleep(20 * time.Millisecond) // anything forked meanwhile goes in the next round
	}
}
