package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

type cycleResult struct {
	Label   string `json:"label"`
	URI     string `json:"uri"`
	Start   Stats  `json:"start"`
	Destroy Stats  `json:"destroy"`
	Cycle   Stats  `json:"cycle"`
	// CycleMS is every measured cycle (start + destroy), for confidence
	// intervals of differences between configurations.
	CycleMS []float64 `json:"cycle_ms"`
}

type cyclesResult struct {
	Iterations int           `json:"iterations"`
	Warmup     int           `json:"warmup"`
	Domain     string        `json:"domain"`
	Configs    []cycleResult `json:"configs"`
}

// cmdCycle times `virsh start` and `virsh destroy` of one domain on several
// lab hosts (one per configuration), round-robin, so that background load
// falls on every configuration alike.
func cmdCycle(args []string) error {
	fs := flag.NewFlagSet("cycle", flag.ExitOnError)
	n := fs.Int("n", 30, "measured cycles per configuration")
	warm := fs.Int("warmup", 2, "unmeasured cycles first")
	dom := fs.String("dom", "vm1", "domain to start and destroy")
	out := fs.String("out", "-", "JSON result file")
	var hosts multiFlag
	fs.Var(&hosts, "host", "LABEL=URI (repeatable)")
	fs.Parse(args)
	var res []cycleResult
	for _, h := range hosts {
		label, uri, ok := strings.Cut(h, "=")
		if !ok {
			return fmt.Errorf("-host %q: want LABEL=URI", h)
		}
		res = append(res, cycleResult{Label: label, URI: uri})
	}
	starts := make([][]time.Duration, len(res))
	destroys := make([][]time.Duration, len(res))
	cycles := make([][]time.Duration, len(res))
	for it := 0; it < *warm+*n; it++ {
		for i, r := range res {
			ds, err := virsh(r.URI, "start", *dom)
			if err != nil {
				return fmt.Errorf("%s, cycle %d: %w", r.Label, it, err)
			}
			dd, err := virsh(r.URI, "destroy", *dom)
			if err != nil {
				return fmt.Errorf("%s, cycle %d: %w", r.Label, it, err)
			}
			if it >= *warm {
				starts[i] = append(starts[i], ds)
				destroys[i] = append(destroys[i], dd)
				cycles[i] = append(cycles[i], ds+dd)
			}
		}
	}
	for i := range res {
		res[i].Start, res[i].Destroy, res[i].Cycle = summarize(starts[i]), summarize(destroys[i]), summarize(cycles[i])
		for _, d := range cycles[i] {
			res[i].CycleMS = append(res[i].CycleMS, float64(d.Microseconds())/1000)
		}
		fmt.Fprintf(os.Stderr, "cycle: %-10s start %v | destroy %v\n", res[i].Label, res[i].Start, res[i].Destroy)
	}
	return writeJSON(*out, cyclesResult{Iterations: *n, Warmup: *warm, Domain: *dom, Configs: res})
}

func virsh(uri string, args ...string) (time.Duration, error) {
	cmd := exec.Command("virsh", append([]string{"-q", "-c", uri}, args...)...)
	var outb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &outb
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("virsh %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(outb.String()))
	}
	return d, nil
}
