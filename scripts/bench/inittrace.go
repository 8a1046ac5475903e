package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"time"
)

type initPkg struct {
	Pkg     string  `json:"pkg"`
	ClockMS float64 `json:"clock_ms"` // median over runs
	Bytes   int64   `json:"bytes"`
	Allocs  int64   `json:"allocs"`
}

type initResult struct {
	Runs         int       `json:"runs"`
	Argv         []string  `json:"argv"`
	Packages     int       `json:"packages"`
	InitClockMS  float64   `json:"init_clock_ms"` // median of the sum of every package's init
	InitDoneMS   float64   `json:"init_done_ms"`  // median time from runtime start to the last init's end
	InitBytes    int64     `json:"init_bytes"`    // median of the sum
	InitAllocs   int64     `json:"init_allocs"`   // median of the sum
	ProcessWall  Stats     `json:"process_wall"`  // fork+exec+run+exit of the whole command
	Top          []initPkg `json:"top"`           // by median clock
	BinarySizeMB float64   `json:"binary_size_mb"`
}

var initLine = regexp.MustCompile(`^init (\S+) @([0-9.]+) ms, ([0-9.]+) ms clock, ([0-9]+) bytes, ([0-9]+) allocs`)

// cmdInitTrace runs a Go binary N times with GODEBUG=inittrace=1 and
// reports what its package initialisers cost before main runs.
func cmdInitTrace(args []string) error {
	fs := flag.NewFlagSet("inittrace", flag.ExitOnError)
	n := fs.Int("n", 30, "runs")
	out := fs.String("out", "-", "JSON result file")
	top := fs.Int("top", 12, "packages to list")
	fs.Parse(args)
	argv := fs.Args()
	if len(argv) == 0 {
		return fmt.Errorf("inittrace: want -- BINARY ARGS…")
	}
	clocks := map[string][]float64{}
	bytesBy, allocsBy := map[string]int64{}, map[string]int64{}
	var sums, dones []float64
	var sumBytes, sumAllocs []float64
	var wall []time.Duration
	npkg := 0
	for i := 0; i < *n; i++ {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(hookEnv, "GODEBUG=inittrace=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%v: %v: %s", argv, err, stderr.String())
		}
		wall = append(wall, time.Since(t0))
		var sum, done float64
		var sb, sa int64
		npkg = 0
		for _, line := range splitLines(stderr.String()) {
			m := initLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			at, _ := strconv.ParseFloat(m[2], 64)
			c, _ := strconv.ParseFloat(m[3], 64)
			b, _ := strconv.ParseInt(m[4], 10, 64)
			a, _ := strconv.ParseInt(m[5], 10, 64)
			clocks[m[1]] = append(clocks[m[1]], c)
			bytesBy[m[1]], allocsBy[m[1]] = b, a
			sum += c
			sb += b
			sa += a
			done = max(done, at+c)
			npkg++
		}
		sums, dones = append(sums, sum), append(dones, done)
		sumBytes, sumAllocs = append(sumBytes, float64(sb)), append(sumAllocs, float64(sa))
	}
	res := initResult{Runs: *n, Argv: argv, Packages: npkg, InitClockMS: median(sums), InitDoneMS: median(dones),
		InitBytes: int64(median(sumBytes)), InitAllocs: int64(median(sumAllocs)), ProcessWall: summarize(wall)}
	for p, c := range clocks {
		res.Top = append(res.Top, initPkg{Pkg: p, ClockMS: median(c), Bytes: bytesBy[p], Allocs: allocsBy[p]})
	}
	slices.SortFunc(res.Top, func(a, b initPkg) int {
		if a.ClockMS != b.ClockMS {
			if a.ClockMS > b.ClockMS {
				return -1
			}
			return 1
		}
		return int(b.Bytes - a.Bytes)
	})
	res.Top = res.Top[:min(*top, len(res.Top))]
	if st, err := os.Stat(argv[0]); err == nil {
		res.BinarySizeMB = float64(st.Size()) / (1 << 20)
	}
	fmt.Fprintf(os.Stderr, "inittrace: %d packages, init %.2f ms (done at %.2f ms), %d allocs; process %v\n",
		res.Packages, res.InitClockMS, res.InitDoneMS, res.InitAllocs, res.ProcessWall)
	return writeJSON(*out, res)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}
