// Command bench is scripts/bench.sh's helper: it runs and times what the
// benchmark measures (hook calls, virsh cycles, a simulated cluster on one
// etcd, a fence, Go init cost) and writes the report. Each subcommand writes
// one JSON result; "report" turns them into one table and docs/benchmarks.md.
//
//	go build -o /tmp/vlbench ./scripts/bench && /tmp/vlbench help
package main

import (
	"fmt"
	"os"
)

func main() {
	cmds := map[string]func([]string) error{
		"hooklat":   cmdHookLat,
		"cycle":     cmdCycle,
		"scale":     cmdScale,
		"fence":     cmdFence,
		"inittrace": cmdInitTrace,
		"report":    cmdReport,
		"reaper":    cmdReaper,
	}
	if len(os.Args) < 2 || cmds[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, `usage: bench COMMAND [FLAGS]   (each takes -h)

  hooklat     time libvirt-style hook calls (prepare, release, …) of several hooks, interleaved
  cycle       time virsh start + destroy on several lab hosts, round-robin
  scale       simulated host sessions and claims on one etcd; etcd requests/s, claim latency, watchdog RSS
  fence       freeze a lab host's etcd proxy, time until its QEMUs are gone
  inittrace   GODEBUG=inittrace=1 of a Go binary, aggregated over runs
  report      one table on stdout and docs/benchmarks.md from the JSON results
  reaper      run a command as a child subreaper that reaps adopted orphans at once`)
		os.Exit(2)
	}
	if err := cmds[os.Args[1]](os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
