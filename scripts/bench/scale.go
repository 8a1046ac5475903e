package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtlease/virtlease/lease"
)

type phaseResult struct {
	Name             string             `json:"name"`
	Keys             int64              `json:"etcd_keys"`
	Seconds          float64            `json:"seconds"`
	RenewalsPerSec   float64            `json:"renewals_per_sec"`  // our own count
	RenewalsPerHost  float64            `json:"renewals_per_host"` // per host per interval
	RenewFailed      int64              `json:"renew_failed"`
	RenewLate        int64              `json:"renew_late"` // renewals sent > 100 ms after their slot
	RenewLatency     Stats              `json:"renew_latency"`
	EtcdMsgsPerSec   map[string]float64 `json:"etcd_calls_per_sec"` // grpc_server_handled_total by method (a stream counts once)
	EtcdTotalPerSec  float64            `json:"etcd_total_calls_per_sec"`
	EtcdSentBytesSec float64            `json:"etcd_sent_bytes_per_sec"`
	EtcdCPUPercent   float64            `json:"etcd_cpu_percent"` // of one core
	EtcdRSSKB        int64              `json:"etcd_rss_kb"`
	ProbeClaim       Stats              `json:"probe_claim"`
	ProbeRelease     Stats              `json:"probe_release"`
	ProbeFailed      int                `json:"probe_failed"`
	WatchdogRSSKB    int64              `json:"watchdog_rss_kb,omitempty"`
	WatchdogRSSMaxKB int64              `json:"watchdog_rss_max_kb,omitempty"`
}

type readCost struct {
	What        string  `json:"what"`
	Calls       int     `json:"calls"`
	Latency     Stats   `json:"latency"`
	EtcdCPUMS   float64 `json:"etcd_cpu_ms_per_call"`
	SentKB      float64 `json:"sent_kb_per_call"`
	EveryPerSec float64 `json:"calls_per_host_per_sec"` // how often each watchdog makes it
	Failed      int     `json:"failed"`
	Err         string  `json:"error,omitempty"` // the first failure
}

type scaleResult struct {
	Hosts          int           `json:"hosts"`
	DomainsPerHost int           `json:"domains_per_host"`
	HADomains      int           `json:"ha_domains"` // of them, claimed with an HA intent (want running)
	Clients        int           `json:"clients"`
	Workers        int           `json:"renew_workers"`
	ClaimWorkers   int           `json:"claim_workers"`
	Interval       string        `json:"interval"`
	TTL            string        `json:"ttl"`
	GrantSeconds   float64       `json:"grant_register_seconds"`
	Claims         int           `json:"claims"`
	ClaimFailed    int64         `json:"claim_failed"`
	ClaimSeconds   float64       `json:"claim_seconds"`
	ClaimLatency   Stats         `json:"claim_setup_latency"` // the 100k claims, 64 at a time, under the renewals
	Phases         []phaseResult `json:"phases"`
	Reads          []readCost    `json:"reads"`
	WatchdogHost   string        `json:"watchdog_host,omitempty"`
	WatchdogClaims int           `json:"watchdog_claims,omitempty"`
	WatchdogRSS0KB int64         `json:"watchdog_rss_start_kb,omitempty"`
	WatchdogHWMKB  int64         `json:"watchdog_hwm_kb,omitempty"`
	RenewFailed    int64         `json:"renew_failed_total"` // over the whole run, claims and reads included
	RenewLate      int64         `json:"renew_late_total"`
	RenewLatency   Stats         `json:"renew_latency_total"`
}

type sample struct {
	at time.Time
	d  time.Duration
}

type renewer struct {
	mu      sync.Mutex
	samples []sample
	ok      atomic.Int64
	failed  atomic.Int64
	late    atomic.Int64
}

func (r *renewer) add(at time.Time, d time.Duration) {
	r.mu.Lock()
	r.samples = append(r.samples, sample{at, d})
	r.mu.Unlock()
}

func (r *renewer) between(t0, t1 time.Time) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for _, s := range r.samples {
		if !s.at.Before(t0) && s.at.Before(t1) {
			out = append(out, s.d)
		}
	}
	return out
}

// cmdScale simulates many host sessions on one etcd: each host's lease is
// renewed once per interval (KeepAliveOnce, as the watchdog does, from a pool
// of workers, the hosts spread over the interval), each host claims its
// domains through lease.Store, and etcd's own counters say what that costs.
func cmdScale(args []string) error {
	fs := flag.NewFlagSet("scale", flag.ExitOnError)
	ep := fs.String("endpoint", "", "etcd client URL")
	prefix := fs.String("prefix", "/virtlease", "key prefix (the real watchdog's, so that it sees the simulated cluster)")
	nHosts := fs.Int("hosts", 1000, "simulated hosts")
	nDom := fs.Int("domains", 100, "domains per host (one disk each)")
	nHA := fs.Int("ha-domains", 200, "of those, how many are HA domains (claimed with an intent want=running, as the hook does for mode=\"ha\"): one on each of the first hosts")
	nClients := fs.Int("clients", 50, "etcd clients shared by the simulated hosts")
	nWorkers := fs.Int("workers", 64, "renewal workers")
	claimWorkers := fs.Int("claim-workers", 64, "claim workers")
	interval := fs.Duration("interval", time.Second, "renew interval")
	ttl := fs.Duration("ttl", 10*time.Second, "session TTL")
	window := fs.Duration("window", 15*time.Second, "steady-state measuring window")
	probes := fs.Int("probes", 600, "probe claims (claim + release) per phase")
	etcdPid := fs.Int("etcd-pid", 0, "etcd's PID (CPU, RSS)")
	wdSession := fs.String("wd-session", "", "session file of a real watchdog: its host also claims -wd-domains domains")
	wdPid := fs.Int("wd-pid", 0, "the real watchdog's PID (RSS)")
	wdDomains := fs.Int("wd-domains", 100, "domains claimed on the real watchdog's session")
	out := fs.String("out", "-", "JSON result file")
	fs.Parse(args)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := scaleResult{Hosts: *nHosts, DomainsPerHost: *nDom, HADomains: min(*nHA, *nHosts), Clients: *nClients, Workers: *nWorkers, ClaimWorkers: *claimWorkers,
		Interval: interval.String(), TTL: ttl.String()}
	stores := make([]*lease.Store, *nClients)
	for i := range stores {
		cli, err := lease.Dial(lease.EtcdConfig{Endpoints: []string{*ep}, DialTimeout: 2 * time.Second})
		if err != nil {
			return err
		}
		defer cli.Close()
		stores[i] = lease.NewStore(cli, *prefix)
	}
	store := func(i int) *lease.Store { return stores[i%len(stores)] }
	metricsURL := strings.TrimSuffix(*ep, "/") + "/metrics"

	// 1. sessions: grant + register every host
	t0 := time.Now()
	holders := make([]lease.Holder, *nHosts)
	err := parallel(32, *nHosts, func(i int) error {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		id, _, err := store(i).Grant(c, *ttl)
		if err != nil {
			return err
		}
		holders[i] = lease.Holder{Host: fmt.Sprintf("sim-%04d", i), Lease: id}
		return store(i).Register(c, lease.HostRecord{Host: holders[i].Host, Lease: id, Started: time.Now().UTC(), Version: "bench"})
	})
	if err != nil {
		return fmt.Errorf("granting sessions: %w", err)
	}
	res.GrantSeconds = time.Since(t0).Seconds()
	fmt.Fprintf(os.Stderr, "scale: %d sessions granted and registered in %.1f s\n", *nHosts, res.GrantSeconds)

	// 2. renewals: host i is renewed at i/N of every interval
	rn := &renewer{}
	work := make(chan int, *nWorkers)
	for w := 0; w < *nWorkers; w++ {
		go func() {
			for i := range work {
				c, cancel := context.WithTimeout(ctx, 2**interval)
				t := time.Now()
				_, err := store(i).Renew(c, holders[i].Lease)
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						rn.failed.Add(1)
					}
					continue
				}
				rn.ok.Add(1)
				rn.add(t, time.Since(t))
			}
		}()
	}
	go func() {
		start := time.Now()
		for round := 0; ctx.Err() == nil; round++ {
			for i := 0; i < *nHosts; i++ {
				slot := start.Add(time.Duration(round)**interval + time.Duration(i)**interval/time.Duration(*nHosts))
				if d := time.Until(slot); d > 0 {
					time.Sleep(d)
				} else if d < -100*time.Millisecond {
					rn.late.Add(1)
				}
				select {
				case work <- i:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	// the real watchdog: claim its domains on its own session
	var wd lease.Holder
	var wdRSS0 int64
	if *wdSession != "" {
		s, err := lease.ReadSession(*wdSession)
		if err != nil {
			return err
		}
		wd = s.Holder()
		res.WatchdogHost, res.WatchdogClaims = wd.Host, *wdDomains
		wdRSS0, _, _ = procRSS(*wdPid)
		res.WatchdogRSS0KB = wdRSS0
		err = parallel(8, *wdDomains, func(j int) error {
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := store(j).Claim(c, wd, lease.Claim{UUID: simUUID(0xffff, j), Name: fmt.Sprintf("wd-%03d", j),
				Disks: []string{fmt.Sprintf("rbd/pool/wd-%03d", j)}, Start: true})
			return err
		})
		if err != nil {
			return fmt.Errorf("claiming the watchdog's domains: %w", err)
		}
		fmt.Fprintf(os.Stderr, "scale: %d domains claimed on the real watchdog's session (%s, RSS %d KiB before)\n", *wdDomains, wd, wdRSS0)
	}

	time.Sleep(3 * time.Second) // let the renewals settle
	phase := func(name string) (phaseResult, error) {
		p, err := measurePhase(ctx, name, rn, metricsURL, *etcdPid, *wdPid, *window, *nHosts, *interval)
		if err != nil {
			return p, err
		}
		// probes: claim + release of new domains, one at a time, under the renewals
		var cl, rl []time.Duration
		for k := 0; k < *probes; k++ {
			h := holders[k%len(holders)]
			uuid, disks := simUUID(0xfffe, k), []string{fmt.Sprintf("rbd/pool/probe-%05d", k)}
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			t := time.Now()
			_, err := store(k).Claim(c, h, lease.Claim{UUID: uuid, Name: fmt.Sprintf("probe-%05d", k), Disks: disks, Start: true})
			cl = append(cl, time.Since(t))
			if err == nil {
				t = time.Now()
				_, err = store(k).Release(c, h, uuid, disks, nil)
				rl = append(rl, time.Since(t))
			}
			cancel()
			if err != nil {
				p.ProbeFailed++
			}
		}
		p.ProbeClaim, p.ProbeRelease = summarize(cl), summarize(rl)
		fmt.Fprintf(os.Stderr, "scale: %s: renewals %.0f/s (%.2f per host per interval), etcd %.0f msgs/s %v, CPU %.0f%%, probe claim %v\n",
			name, p.RenewalsPerSec, p.RenewalsPerHost, p.EtcdTotalPerSec, p.EtcdMsgsPerSec, p.EtcdCPUPercent, p.ProbeClaim)
		return p, nil
	}
	p, err := phase(fmt.Sprintf("%d sessions, no guests", *nHosts))
	if err != nil {
		return err
	}
	res.Phases = append(res.Phases, p)

	// 3. claims: every host claims its domains (domain key + one disk key each)
	t0 = time.Now()
	var claimMu sync.Mutex
	var claimLat []time.Duration
	var done atomic.Int64
	var claimFailed atomic.Int64
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "scale: %d/%d claims (%.0f/s)\n", done.Load(), *nHosts**nDom, float64(done.Load())/time.Since(t0).Seconds())
			}
		}
	}()
	total := *nHosts * *nDom
	parallel(*claimWorkers, total, func(k int) error {
		i, j := k%*nHosts, k / *nHosts
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cl := lease.Claim{UUID: simUUID(i, j), Name: fmt.Sprintf("sim%04d-%03d", i, j),
			Disks: []string{fmt.Sprintf("rbd/pool/sim%04d-%03d", i, j)}, Start: true}
		if j == 0 && i < *nHA {
			cl.Intent = &lease.Intent{Want: lease.WantRunning, Name: cl.Name, Since: time.Now().UTC().Truncate(time.Second)}
		}
		t := time.Now()
		_, err := store(k).Claim(c, holders[i], cl)
		d := time.Since(t)
		done.Add(1)
		if err != nil {
			if claimFailed.Add(1) <= 5 {
				fmt.Fprintf(os.Stderr, "scale: claim failed: %v\n", err)
			}
			return nil
		}
		claimMu.Lock()
		claimLat = append(claimLat, d)
		claimMu.Unlock()
		return nil
	})
	close(stopProgress)
	res.Claims, res.ClaimFailed = total, claimFailed.Load()
	res.ClaimSeconds = time.Since(t0).Seconds()
	res.ClaimLatency = summarize(claimLat)
	fmt.Fprintf(os.Stderr, "scale: %d claims in %.1f s (%d failed), latency %v\n", total, res.ClaimSeconds, res.ClaimFailed, res.ClaimLatency)
	time.Sleep(3 * time.Second)

	p, err = phase(fmt.Sprintf("%d sessions, %d guests", *nHosts, total))
	if err != nil {
		return err
	}
	res.Phases = append(res.Phases, p)

	// 4. what the watchdog's periodic whole-prefix reads cost at this size
	h0 := holders[0]
	res.Reads = append(res.Reads,
		measureRead(ctx, "HAView (HA restarter, every renew interval)", 50, 1/interval.Seconds(), metricsURL, *etcdPid, func(c context.Context) error {
			_, err := stores[0].HAView(c)
			return err
		}),
		measureRead(ctx, "Held (reconciler, every 5 s)", 20, 0.2, metricsURL, *etcdPid, func(c context.Context) error {
			_, err := stores[0].Held(c, h0)
			return err
		}))
	for _, r := range res.Reads {
		fmt.Fprintf(os.Stderr, "scale: %s: %v, etcd CPU %.1f ms and %.0f KiB sent per call, %d/%d failed\n", r.What, r.Latency, r.EtcdCPUMS, r.SentKB, r.Failed, r.Calls)
	}
	if *wdPid > 0 {
		_, res.WatchdogHWMKB, _ = procRSS(*wdPid)
	}
	res.RenewFailed, res.RenewLate = rn.failed.Load(), rn.late.Load()
	res.RenewLatency = summarize(rn.between(time.Time{}, time.Now()))
	fmt.Fprintf(os.Stderr, "scale: renewals over the whole run: %d failed (deadline 2 × interval), %d late, latency %v\n", res.RenewFailed, res.RenewLate, res.RenewLatency)
	return writeJSON(*out, res)
}

func simUUID(i, j int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", 0x51300000+i, j) }

// measurePhase samples etcd's counters and our own over one window.
func measurePhase(ctx context.Context, name string, rn *renewer, metricsURL string, etcdPid, wdPid int, window time.Duration, nHosts int, interval time.Duration) (phaseResult, error) {
	p := phaseResult{Name: name}
	m0, err := scrape(metricsURL)
	if err != nil {
		return p, err
	}
	cpu0, _ := procCPU(etcdPid)
	ok0, f0, l0 := rn.ok.Load(), rn.failed.Load(), rn.late.Load()
	t0 := time.Now()
	var wdMax, wdLast int64
	for time.Since(t0) < window && ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
		if wdPid > 0 {
			if r, _, err := procRSS(wdPid); err == nil {
				wdLast, wdMax = r, max(wdMax, r)
			}
		}
	}
	t1 := time.Now()
	m1, err := scrape(metricsURL)
	if err != nil {
		return p, err
	}
	cpu1, _ := procCPU(etcdPid)
	secs := t1.Sub(t0).Seconds()
	p.Seconds = secs
	p.RenewalsPerSec = float64(rn.ok.Load()-ok0) / secs
	p.RenewalsPerHost = p.RenewalsPerSec * interval.Seconds() / float64(nHosts)
	p.RenewFailed, p.RenewLate = rn.failed.Load()-f0, rn.late.Load()-l0
	p.RenewLatency = summarize(rn.between(t0, t1))
	p.EtcdMsgsPerSec = map[string]float64{}
	for k, v := range m1 {
		if method, ok := strings.CutPrefix(k, "recv:"); ok {
			if r := (v - m0[k]) / secs; r >= 0.05 {
				p.EtcdMsgsPerSec[method] = r
				p.EtcdTotalPerSec += r
			}
		}
	}
	p.EtcdSentBytesSec = (m1["sent_bytes"] - m0["sent_bytes"]) / secs
	p.Keys = int64(m1["keys"])
	p.EtcdCPUPercent = 100 * (cpu1 - cpu0).Seconds() / secs
	p.EtcdRSSKB, _, _ = procRSS(etcdPid)
	p.WatchdogRSSKB, p.WatchdogRSSMaxKB = wdLast, wdMax
	return p, nil
}

func measureRead(ctx context.Context, what string, n int, perSec float64, metricsURL string, etcdPid int, f func(context.Context) error) readCost {
	r := readCost{What: what, Calls: n, EveryPerSec: perSec}
	// the renewals go on meanwhile: measure their own cost first, and
	// charge the reads only with what exceeds it
	b0, _ := scrape(metricsURL)
	bc0, _ := procCPU(etcdPid)
	bt := time.Now()
	time.Sleep(3 * time.Second)
	bc1, _ := procCPU(etcdPid)
	b1, _ := scrape(metricsURL)
	bgSecs := time.Since(bt).Seconds()
	bgCPU := (bc1 - bc0).Seconds() / bgSecs                  // CPU-seconds per second
	bgSent := (b1["sent_bytes"] - b0["sent_bytes"]) / bgSecs // bytes per second
	m0, _ := scrape(metricsURL)
	cpu0, _ := procCPU(etcdPid)
	t0 := time.Now()
	var lat []time.Duration
	for i := 0; i < n; i++ {
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		t := time.Now()
		if err := f(c); err != nil {
			if r.Failed++; r.Err == "" {
				r.Err = err.Error()
				fmt.Fprintf(os.Stderr, "scale: %s: %v\n", what, err)
			}
		}
		lat = append(lat, time.Since(t))
		cancel()
	}
	cpu1, _ := procCPU(etcdPid)
	m1, _ := scrape(metricsURL)
	secs := time.Since(t0).Seconds()
	r.Latency = summarize(lat)
	r.EtcdCPUMS = max(0, (cpu1-cpu0).Seconds()-bgCPU*secs) * 1000 / float64(n)
	r.SentKB = max(0, m1["sent_bytes"]-m0["sent_bytes"]-bgSent*secs) / 1024 / float64(n)
	return r
}

// scrape reads etcd's /metrics: calls handled per gRPC method, any code
// ("recv:METHOD": a unary call, or a stream such as one KeepAliveOnce), bytes sent to clients ("sent_bytes"), keys ("keys").
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New("GET " + url + ": " + resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, "grpc_server_handled_total{"):
			if _, rest, ok := strings.Cut(line, `grpc_method="`); ok {
				method, _, _ := strings.Cut(rest, `"`)
				m["recv:"+method] += v
			}
		case strings.HasPrefix(line, "etcd_network_client_grpc_sent_bytes_total"):
			m["sent_bytes"] += v
		case strings.HasPrefix(line, "etcd_debugging_mvcc_keys_total"):
			m["keys"] = v
		}
	}
	return m, sc.Err()
}

// parallel runs f(0…n-1) on w goroutines; the first error stops new work.
func parallel(w, n int, f func(int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
