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

// hookEnv is the environment libvirtd 9.0 gives its hooks (LC_ALL, PATH, HOME: seen in the lab).
var hookEnv = []string{"LC_ALL=C", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}

type hookSpec struct {
	Label string   `json:"label"`
	Argv  []string `json:"argv"`
	Ops   []string `json:"ops"` // "prepare begin", …
}

type hookResult struct {
	hookSpec
	PerOp map[string]Stats `json:"per_op"`
	Cycle Stats            `json:"cycle"` // all of Ops, one after the other
	// EtcdCalls is etcd's count of handled gRPC calls per cycle, by
	// method, from its /metrics over a separate run of cycles.
	EtcdCalls map[string]float64 `json:"etcd_calls_per_cycle,omitempty"`
}

type hookLatResult struct {
	Iterations int          `json:"iterations"`
	Warmup     int          `json:"warmup"`
	Domain     string       `json:"domain"`
	Hooks      []hookResult `json:"hooks"`
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// cmdHookLat runs each hook as libvirtd does (argv NAME OP SUBOP -, the domain
// XML on stdin, libvirt's reduced environment, cwd /) N times, the hooks
// interleaved so that background load falls on all of them alike, and
// reports the wall time of each call: fork, exec, the hook's own work, exit.
func cmdHookLat(args []string) error {
	fs := flag.NewFlagSet("hooklat", flag.ExitOnError)
	n := fs.Int("n", 500, "measured iterations per hook")
	warm := fs.Int("warmup", 20, "unmeasured iterations first")
	xmlPath := fs.String("xml", "", "domain XML given on stdin")
	name := fs.String("name", "", "domain name (argv[1])")
	out := fs.String("out", "-", "JSON result file")
	metrics := fs.String("metrics", "", "etcd /metrics URL: also count etcd calls per cycle (20 more cycles per hook)")
	var specs multiFlag
	fs.Var(&specs, "hook", "LABEL;OPS;EXE[;ARG…] with OPS like prepare:begin,release:end (repeatable)")
	fs.Parse(args)
	xml, err := os.ReadFile(*xmlPath)
	if err != nil {
		return err
	}
	var hooks []hookSpec
	for _, s := range specs {
		f := strings.Split(s, ";")
		if len(f) < 3 {
			return fmt.Errorf("-hook %q: want LABEL;OPS;EXE[;ARG…]", s)
		}
		h := hookSpec{Label: f[0], Argv: f[2:]}
		for _, op := range strings.Split(f[1], ",") {
			h.Ops = append(h.Ops, strings.ReplaceAll(op, ":", " "))
		}
		hooks = append(hooks, h)
	}
	samples := make([]map[string][]time.Duration, len(hooks))
	cycles := make([][]time.Duration, len(hooks))
	for i := range hooks {
		samples[i] = map[string][]time.Duration{}
	}
	for it := 0; it < *warm+*n; it++ {
		for i, h := range hooks {
			var cycle time.Duration
			for _, op := range h.Ops {
				d, err := runHookOnce(h, *name, op, xml)
				if err != nil {
					return fmt.Errorf("%s, iteration %d: %w", h.Label, it, err)
				}
				cycle += d
				if it >= *warm {
					samples[i][op] = append(samples[i][op], d)
				}
			}
			if it >= *warm {
				cycles[i] = append(cycles[i], cycle)
			}
		}
	}
	res := hookLatResult{Iterations: *n, Warmup: *warm, Domain: *name}
	for i, h := range hooks {
		r := hookResult{hookSpec: h, PerOp: map[string]Stats{}, Cycle: summarize(cycles[i])}
		for op, s := range samples[i] {
			r.PerOp[op] = summarize(s)
		}
		if *metrics != "" {
			if r.EtcdCalls, err = countCalls(h, *name, xml, *metrics, 20); err != nil {
				return err
			}
		}
		res.Hooks = append(res.Hooks, r)
		fmt.Fprintf(os.Stderr, "hooklat: %-28s cycle %v\n", h.Label, r.Cycle)
	}
	return writeJSON(*out, res)
}

func runHookOnce(h hookSpec, name, op string, xml []byte) (time.Duration, error) {
	argv := append(append([]string{}, h.Argv[1:]...), name)
	argv = append(argv, strings.Fields(op)...)
	argv = append(argv, "-")
	cmd := exec.Command(h.Argv[0], argv...)
	cmd.Env = hookEnv
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(xml)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("%s %s: %v: %s", h.Argv[0], strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	if stderr.Len() > 0 {
		return d, fmt.Errorf("%s %s wrote to stderr: %s", h.Argv[0], strings.Join(argv, " "), strings.TrimSpace(stderr.String()))
	}
	return d, nil
}

// countCalls runs n more cycles of h alone and returns etcd's handled gRPC
// calls per cycle, by method (nothing else may use this etcd meanwhile,
// but for the watchdog's steady ~2 calls/s, which are subtracted).
func countCalls(h hookSpec, name string, xml []byte, url string, n int) (map[string]float64, error) {
	idle0, err := scrape(url)
	if err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	idle1, err := scrape(url)
	if err != nil {
		return nil, err
	}
	m0, err := scrape(url)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		for _, op := range h.Ops {
			if _, err := runHookOnce(h, name, op, xml); err != nil {
				return nil, err
			}
		}
	}
	secs := time.Since(t0).Seconds()
	m1, err := scrape(url)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for k, v := range m1 {
		method, ok := strings.CutPrefix(k, "recv:")
		if !ok {
			continue
		}
		background := (idle1[k] - idle0[k]) / 2 * secs
		if c := (v - m0[k] - background) / float64(n); c >= 0.05 {
			out[method] = float64(int(c*10+0.5)) / 10
		}
	}
	return out, nil
}
