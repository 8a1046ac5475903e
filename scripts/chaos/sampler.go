package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/virtlease/virtlease/scripts/procscan"
)

// proc is one QEMU process of a lab host seen in a scan of /proc.
type proc = procscan.Proc

// span is one QEMU process's life as the sampler saw it.
type span struct {
	proc
	First, Last time.Time // first and last scan that saw it alive
	Gone        time.Time // first scan that did not see it (zero: alive at the last scan)
}

// together is two processes seen alive in the same scans.
type together struct {
	Kind        string // "domain": same UUID; "disk": same disk, two UUIDs
	What        string // the UUID or the disk
	A, B        proc
	First, Last time.Time
}

func (t together) String() string {
	return fmt.Sprintf("%s %s in use at once by %s pid %d (%s) and %s pid %d (%s) from %s to %s (%s)",
		t.Kind, t.What, t.A.Host, t.A.PID, t.A.UUID, t.B.Host, t.B.PID, t.B.UUID,
		clock(t.First), clock(t.Last), t.Last.Sub(t.First).Round(time.Millisecond))
}

// sampler scans /proc every interval for the lab hosts' QEMU processes,
// keeps each process's span, and records every pair of processes seen
// alive together on one UUID or one disk. It knows nothing of virtlease.
type sampler struct {
	hosts    func() map[string]string // PID namespace → host
	disks    map[string][]string      // UUID → disk IDs
	interval time.Duration
	procDir  string

	mu       sync.Mutex
	scans    int
	last     time.Time
	maxGap   time.Duration
	maxScan  time.Duration
	spans    map[proc]*span
	order    []*span
	current  []proc
	pairs    map[[2]proc]*together
	pairList []*together
	errs     []string
	stalls   []stall // gaps between scans much longer than the period

	cancel context.CancelFunc
	done   chan struct{}
}

func newSampler(hosts func() map[string]string, disks map[string][]string, interval time.Duration) *sampler {
	return &sampler{hosts: hosts, disks: disks, interval: interval, procDir: "/proc",
		spans: map[proc]*span{}, pairs: map[[2]proc]*together{}}
}

func (s *sampler) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.interval)
		defer t.Stop()
		for {
			t0 := time.Now()
			procs, err := procscan.Scan(s.procDir, s.hosts())
			s.observe(t0, time.Since(t0), procs, err)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (s *sampler) stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
		s.cancel = nil
	}
}

// observe records one scan taken at `at`.
func (s *sampler) observe(at time.Time, took time.Duration, procs []proc, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs = append(s.errs, fmt.Sprintf("%s: %v", clock(at), err))
		return
	}
	if !s.last.IsZero() {
		s.maxGap = max(s.maxGap, at.Sub(s.last))
		if gap := at.Sub(s.last); gap > 4*s.interval {
			s.stalls = append(s.stalls, stall{From: s.last, To: at})
		}
	}
	s.last = at
	s.scans++
	s.maxScan = max(s.maxScan, took)
	seen := map[proc]bool{}
	for _, p := range procs {
		seen[p] = true
		sp := s.spans[p]
		if sp == nil {
			sp = &span{proc: p, First: at}
			s.spans[p] = sp
			s.order = append(s.order, sp)
		}
		sp.Last = at
	}
	for _, p := range s.current {
		if !seen[p] {
			s.spans[p].Gone = at
		}
	}
	s.current = procs
	// pairs alive together in this scan
	for i, a := range procs {
		for _, b := range procs[i+1:] {
			kind, what := "", ""
			if a.UUID == b.UUID {
				kind, what = "domain", a.UUID
			} else if d := sharedDisk(s.disks[a.UUID], s.disks[b.UUID]); d != "" {
				kind, what = "disk", d
			} else {
				continue
			}
			x, y := a, b
			if x.Host > y.Host || (x.Host == y.Host && x.PID > y.PID) {
				x, y = y, x
			}
			k := [2]proc{x, y}
			t := s.pairs[k]
			if t == nil {
				t = &together{Kind: kind, What: what, A: x, B: y, First: at}
				s.pairs[k] = t
				s.pairList = append(s.pairList, t)
			}
			t.Last = at
		}
	}
}

// stall is a time the sampler did not run when it should have: the
// machine (or this process) got no CPU. Everything in the lab stalled too.
type stall struct{ From, To time.Time }

// stalled is how much of [from, to] fell in stalls (beyond one period each).
func stalled(ss []stall, from, to time.Time, period time.Duration) time.Duration {
	var d time.Duration
	for _, st := range ss {
		a, b := st.From, st.To
		if a.Before(from) {
			a = from
		}
		if b.After(to) {
			b = to
		}
		if b.After(a) {
			d += max(b.Sub(a)-period, 0)
		}
	}
	return d
}

func sharedDisk(a, b []string) string {
	for _, d := range a {
		if slices.Contains(b, d) {
			return d
		}
	}
	return ""
}

// running is the latest scan: UUID → hosts running it.
func (s *sampler) running() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	for _, p := range s.current {
		out[p.UUID] = append(out[p.UUID], p.Host)
	}
	return out
}

func (s *sampler) stallList() []stall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stall(nil), s.stalls...)
}

func (s *sampler) snapshot() (spans []span, pairs []together) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range s.order {
		spans = append(spans, *sp)
	}
	for _, t := range s.pairList {
		pairs = append(pairs, *t)
	}
	return spans, pairs
}

// waitScans returns after n more scans (or timeout).
func (s *sampler) waitScans(n int) {
	s.mu.Lock()
	want := s.scans + n
	s.mu.Unlock()
	deadline := time.Now().Add(time.Duration(n+5) * s.interval * 4)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		done := s.scans >= want
		s.mu.Unlock()
		if done {
			return
		}
		time.Sleep(s.interval / 2)
	}
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("15:04:05.000")
}
