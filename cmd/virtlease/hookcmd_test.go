package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// silentEtcd accepts connections and never answers: the worst etcd for a
// hook, since nothing fails fast.
func silentEtcd(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "http://" + ln.Addr().String()
}

// hookHost is a config file and a state dir with a live session file.
func hookHost(t *testing.T, endpoint string, timeout string) (config, state string) {
	dir := t.TempDir()
	config = filepath.Join(dir, "config.yaml")
	os.WriteFile(config, []byte("host: host-a\netcd:\n  endpoints: ["+endpoint+"]\nhook:\n  timeout: "+timeout+"\n"), 0o644)
	state = filepath.Join(dir, "run")
	boot, err := lease.BootID()
	if err != nil {
		t.Fatal(err)
	}
	err = lease.WriteSession(filepath.Join(state, "session"), lease.Session{Host: "host-a", Lease: 1, Boot: boot,
		Deadline: int64(lease.BootNow() + time.Hour), State: lease.SessionOK})
	if err != nil {
		t.Fatal(err)
	}
	return config, state
}

func domainXML(t *testing.T) []byte {
	b, err := os.ReadFile("../../testdata/domains/nbd.xml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The safety bound: against an etcd that never answers, prepare refuses
// (exit 3) within hook.timeout, and the stopped/release calls libvirt makes
// next answer at once.
func TestHookDeadlineAgainstSilentEtcd(t *testing.T) {
	config, state := hookHost(t, silentEtcd(t), "1s")
	var stderr bytes.Buffer
	start := time.Now()
	code := runHook([]string{"vm-nbd", "prepare", "begin", "-"}, bytes.NewReader(domainXML(t)), &stderr, func(string) string { return "" }, config, state)
	took := time.Since(start)
	if code != 3 {
		t.Fatalf("exit %d, want 3; stderr %q", code, stderr.String())
	}
	if took > time.Second {
		t.Fatalf("prepare took %v, hook.timeout is 1s", took)
	}
	msg := stderr.String()
	if !strings.HasPrefix(msg, "virtlease: cannot start ") || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "etcd") {
		t.Errorf("want one clear line, got %q", msg)
	}
	for _, op := range []string{"stopped", "release"} {
		start := time.Now()
		code := runHook([]string{"vm-nbd", op, "end", "-"}, bytes.NewReader(domainXML(t)), &stderr, func(string) string { return "" }, config, state)
		if code != 0 || time.Since(start) > 100*time.Millisecond {
			t.Errorf("%s end after a refused prepare: exit %d after %v", op, code, time.Since(start))
		}
	}
	t.Logf("refused after %v: %s", took, msg)
}

func TestHookModeBadInput(t *testing.T) {
	good, state := hookHost(t, silentEtcd(t), "1s")
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("session:\n  ttl: 10\n"), 0o644)
	tests := []struct {
		name     string
		args     []string
		config   string
		stdin    string
		wantCode int
		wantMsg  string
	}{
		{"missing args", []string{"vm"}, good, "", 2, "usage: qemu NAME OP SUBOP"},
		{"garbage XML", []string{"vm", "prepare", "begin", "-"}, good, "<<<garbage", 2, "domain XML"},
		{"empty XML", []string{"vm", "prepare", "begin", "-"}, good, "", 2, "domain XML"},
		{"bad config refuses a start", []string{"vm", "prepare", "begin", "-"}, bad, "", 2, "session.ttl"},
		{"unreadable config refuses a start", []string{"vm", "prepare", "begin", "-"}, filepath.Join(dir, "missing.yaml"), "", 2, "missing.yaml"},
		{"bad config refuses a restore", []string{"vm", "restore", "begin", "-"}, bad, "", 2, "session.ttl"},
		{"bad config never kills a running guest", []string{"vm", "reconnect", "begin", "-"}, bad, "", 0, ""},
		{"bad config never fails a stop", []string{"vm", "release", "end", "-"}, bad, "", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := runHook(tc.args, strings.NewReader(tc.stdin), &stderr, func(string) string { return "" }, tc.config, state)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.wantCode, stderr.String())
			}
			msg := stderr.String()
			if tc.wantMsg != "" && !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("stderr %q lacks %q", msg, tc.wantMsg)
			}
			if strings.Count(msg, "\n") > 1 || strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic") {
				t.Errorf("want at most one line, no stack trace: %q", msg)
			}
		})
	}
}

// In hook mode nothing may reach stdout: on restore, libvirt reads it as a
// new XML. A restore fails closed: etcd not answering refuses it (exit 3).
func TestHookModeWritesNothingToStdout(t *testing.T) {
	config, _ := hookHost(t, silentEtcd(t), "1s")
	var stdout, stderr bytes.Buffer
	env := map[string]string{"VIRTLEASE_CONFIG": config}
	code := run([]string{"/etc/libvirt/hooks/qemu", "vm", "restore", "begin", "-"}, bytes.NewReader(domainXML(t)), &stdout, &stderr, func(k string) string { return env[k] })
	if code != 3 || stdout.Len() != 0 || !strings.HasPrefix(stderr.String(), "virtlease: cannot restore vm-nbd: etcd did not answer") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

func TestIsHookName(t *testing.T) {
	for argv0, want := range map[string]bool{
		"/etc/libvirt/hooks/qemu":                 true,
		"qemu":                                    true,
		"/etc/libvirt/hooks/qemu.d/50-virtlease":  true,
		"/usr/local/sbin/virtlease":               false,
		"/etc/libvirt/hooks/qemu-virtlease-chain": false,
	} {
		if got := isHookName(argv0); got != want {
			t.Errorf("isHookName(%q) = %v, want %v", argv0, got, want)
		}
	}
}

// With etcd auth the hook logs in first. Against an etcd that never
// answers, that login must end with the hook's own deadline, not
// etcd.dial_timeout: prepare then refuses through its own path (exit 3,
// the refused marker written), and the release calls that follow answer
// from the marker.
func TestHookLoginEndsWithHookDeadline(t *testing.T) {
	config, state := hookHost(t, silentEtcd(t), "1s")
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	b, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "etcd:\n", "etcd:\n  username: vl\n  password_file: "+pw+"\n  dial_timeout: 30s\n", 1)
	os.WriteFile(config, []byte(cfg), 0o644)
	var stderr bytes.Buffer
	code := runHook([]string{"vm-nbd", "prepare", "begin", "-"}, bytes.NewReader(domainXML(t)), &stderr, func(string) string { return "" }, config, state)
	if code != 3 || !strings.Contains(stderr.String(), "cannot start vm-nbd") {
		t.Fatalf("exit %d, stderr %q: want 3 and prepare's own refusal", code, stderr.String())
	}
	marks, _ := filepath.Glob(filepath.Join(state, "refused", "*"))
	if len(marks) != 1 {
		t.Fatalf("no refused marker: the login outlived the hook's context (stderr %q)", stderr.String())
	}
}
