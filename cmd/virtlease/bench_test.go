//go:build bench

// Benchmarks of the hook's work inside one process, for scripts/bench.sh
// (CPU profile of the hook). They need a real etcd:
//
//	VL_BENCH_ETCD=http://127.0.0.1:2379 go test -tags bench -run '^$' -bench Hook -cpuprofile cpu.out ./cmd/virtlease/
//
// Process start-up (runtime and package init) is not in them: see
// GODEBUG=inittrace=1 in scripts/bench.sh.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtlease/virtlease/lease"
)

// benchHook sets up a live session for host "bench-go" under its own prefix
// (a lease, the hosts key, a session file in a temp state dir) and returns
// the config file and state dir runHook needs.
func benchHook(b *testing.B) (cfgPath, stateDir, xml string) {
	b.Helper()
	ep := os.Getenv("VL_BENCH_ETCD")
	if ep == "" {
		b.Skip("VL_BENCH_ETCD (an etcd client URL) is not set")
	}
	xmlPath := os.Getenv("VL_BENCH_XML")
	if xmlPath == "" {
		xmlPath = "../../scripts/bench/domain.xml"
	}
	x, err := os.ReadFile(xmlPath)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	const host, prefix = "bench-go", "/vlbench-go"
	cli, err := lease.Dial(lease.EtcdConfig{Endpoints: []string{ep}, DialTimeout: 2 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	st := lease.NewStore(cli, prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, ttl, err := st.Grant(ctx, 120*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st.Revoke(ctx, id)
	})
	if err := st.Register(ctx, lease.HostRecord{Host: host, Lease: id, Started: time.Now().UTC(), Version: "bench"}); err != nil {
		b.Fatal(err)
	}
	boot, err := lease.BootID()
	if err != nil {
		b.Fatal(err)
	}
	s := lease.Session{Host: host, Lease: id, Boot: boot, Deadline: int64(lease.BootNow() + ttl), State: lease.SessionOK}
	if err := lease.WriteSession(filepath.Join(dir, "session"), s); err != nil {
		b.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf("host: %s\nprefix: %s\netcd:\n  endpoints: [%s]\n", host, prefix, ep)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	return cfgPath, dir, string(x)
}

func noEnv(string) string { return "" }

// BenchmarkHookPrepareRelease is one start and one stop as libvirt calls the
// hook: prepare begin (claim), then release end.
func BenchmarkHookPrepareRelease(b *testing.B) {
	cfg, dir, xml := benchHook(b)
	var stderr strings.Builder
	for b.Loop() {
		for _, op := range [][]string{{"bench1", "prepare", "begin", "-"}, {"bench1", "release", "end", "-"}} {
			if code := runHook(op, strings.NewReader(xml), &stderr, noEnv, cfg, dir); code != 0 {
				b.Fatalf("%v: exit %d: %s", op, code, stderr.String())
			}
		}
	}
}

// BenchmarkHookNoop is a call that needs nothing from etcd (start begin):
// argument parsing and loading the config.
func BenchmarkHookNoop(b *testing.B) {
	cfg, dir, xml := benchHook(b)
	for b.Loop() {
		if code := runHook([]string{"bench1", "start", "begin", "-"}, strings.NewReader(xml), io.Discard, noEnv, cfg, dir); code != 0 {
			b.Fatalf("exit %d", code)
		}
	}
}
