//go:build libvirtrestart

package fence

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTmpRestart(t *testing.T) {
	l, _ := realLibvirt(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, err := l.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("/run/libvirtd.pid")
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	syscall.Kill(pid, syscall.SIGTERM)
	start := time.Now()
	for range evs {
	}
	t.Logf("events closed %v after SIGTERM to libvirtd %d", time.Since(start), pid)
	_, _, err = l.State(ctxFor(t, 2*time.Second), "00000000-0000-4000-8000-00000000dead")
	t.Logf("State with libvirtd down: %v", err)
	time.Sleep(500 * time.Millisecond)
	if out, err := exec.Command("libvirtd", "-d").CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	time.Sleep(2 * time.Second)
	a, j, err := l.State(ctxFor(t, 5*time.Second), "00000000-0000-4000-8000-00000000dead")
	t.Logf("State after restart: %v %v %v", a, j, err)
	// a hung libvirtd: SIGSTOP it
	b, _ = os.ReadFile("/run/libvirtd.pid")
	pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	syscall.Kill(pid, syscall.SIGSTOP)
	s := time.Now()
	_, err = l.Running(ctxFor(t, time.Second), false)
	t.Logf("Running with libvirtd SIGSTOPped: %v after %v", err, time.Since(s))
	s = time.Now()
	_, err = l.Events(ctxFor(t, time.Second))
	t.Logf("Events with libvirtd SIGSTOPped: %v after %v", err, time.Since(s))
	s = time.Now()
	_, err = DialLibvirt(ctxFor(t, time.Second), "")
	t.Logf("Dial with libvirtd SIGSTOPped: %v after %v", err, time.Since(s))
	s = time.Now()
	l.Close()
	t.Logf("Close with libvirtd SIGSTOPped: %v", time.Since(s))
	syscall.Kill(pid, syscall.SIGCONT)
}
