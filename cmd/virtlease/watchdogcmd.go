package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/virtlease/virtlease/fence"
	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

// bootClock is fence.Clock on CLOCK_BOOTTIME. Timers run on Go's monotonic
// clock, which stops during suspend; the watchdog never waits longer than
// one renew interval before reading the boot clock again, so a resume is
// noticed within one interval.
type bootClock struct{}

func (bootClock) Now() time.Duration { return lease.BootNow() }
func (bootClock) After(d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	time.AfterFunc(d, func() { close(ch) })
	return ch
}

// watchdogEnv is what runWatchdog takes from the machine; tests replace
// parts of it.
type watchdogEnv struct {
	stderr   io.Writer
	journal  bool // stderr is systemd's journal stream (underJournal)
	getenv   func(string) string
	stateDir string
	bootID   func() (string, error)
	clock    fence.Clock
	notify   func(state string)
	// guests, when set, stands for this host's guests (tests): then there
	// is no libvirt, no reconcile and no HA restarter.
	guests fence.Guests
}

func runWatchdog(ctx context.Context, cfg Config, stderr io.Writer, getenv func(string) string) error {
	return startWatchdog(ctx, cfg, watchdogEnv{
		stderr:   stderr,
		journal:  underJournal(os.Stderr, getenv) && stderr == io.Writer(os.Stderr),
		getenv:   getenv,
		stateDir: defaultStateDir,
		bootID:   lease.BootID,
		clock:    bootClock{},
		notify:   func(s string) { daemon.SdNotify(false, s) },
	})
}

// startWatchdog runs the watchdog until ctx ends. The order is safety's:
// only local checks (timings, systemd's watchdog interval, the device's
// path, the boot ID) may refuse the start (exit 2), and nothing waits on
// the network before the loop runs, which first reads the session file
// and enforces its fence point (fence.Watchdog.Run). etcd is dialled in the
// background and re-dialled until it answers (lazyEtcd): a watchdog
// restarted while etcd is unreachable, with or without a login, fences at
// the resumed session's fence point and keeps running.
//
// Outcomes: nil once ctx ended (see fence.Watchdog.Run for what happens to
// the session); exit 2 for a configuration that cannot work or another
// machine registered under this host's name.
func startWatchdog(ctx context.Context, cfg Config, env watchdogEnv) error {
	// The fence loop must never wait on the journal: log through a queue
	// that drops when full, and write out what is queued before exiting.
	logq := fence.NewLogQueue(newLogHandler(env.stderr, env.journal), 4096)
	defer flushLog(logq)
	log := slog.New(logq).With("host", cfg.Host)
	fc := fence.Config{TTL: time.Duration(cfg.Session.TTL), RenewInterval: time.Duration(cfg.Session.RenewInterval), Margin: time.Duration(cfg.Fence.Margin)}
	if err := fc.Validate(); err != nil {
		return exit(hook.ExitUsage, err)
	}
	if err := fc.CheckSystemdWatchdog(systemdWatchdog(env.getenv), cfg.Fence.HardwareWatchdog != ""); err != nil {
		return exit(hook.ExitUsage, err)
	}
	var dev fence.Device
	if cfg.Fence.HardwareWatchdog == "" {
		log.Warn("no hardware watchdog configured (fence.hardware_watchdog): if this process dies, nothing fences this host's guests")
		if f := passedFile(env.getenv, fdStoreName); f != nil {
			// A device the previous process used, now unconfigured:
			// disarm it rather than leave it counting.
			f.Write([]byte("V"))
			f.Close()
			sdNotifyFD(env.getenv)("FDSTOREREMOVE=1\nFDNAME="+fdStoreName, nil)
		}
	} else {
		// Not opened here: opening arms it, and Linux pets it on the
		// timeout's ioctl; the loop opens it once a session is verified
		// or a resumed deadline is being enforced (fence.Device).
		d, err := fence.NewDevice(cfg.Fence.HardwareWatchdog, fc.DeviceTimeout())
		if err != nil {
			return exit(hook.ExitUsage, err)
		}
		dev = &keptDevice{dev: d, passed: passedFile(env.getenv, fdStoreName), notify: sdNotifyFD(env.getenv),
			warn: func(msg string, err error) { log.Warn(msg, "err", err.Error()) }}
	}
	bootID, err := env.bootID()
	if err != nil {
		return exit(hook.ExitUsage, err)
	}
	ec, err := cfg.etcdConfig()
	if err != nil {
		return exit(hook.ExitUsage, err)
	}
	ec.Logger = etcdLogger(log, time.Minute)
	etcd := &lazyEtcd{}
	defer etcd.Close()
	cctx, stopConnect := context.WithCancel(ctx)
	defer stopConnect()
	go etcd.connect(cctx, ec, cfg.Prefix, fc.RenewInterval, log, func(store *lease.Store) { checkEtcd(cctx, store, log) })

	var metrics fence.Metrics
	if cfg.Metrics.Listen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		pm := newPromMetrics(reg, env.stateDir)
		pm.setTimings(fc)
		if err := serveMetrics(ctx, cfg.Metrics.Listen, reg, log); err != nil {
			// Not fatal: exiting would leave a resumed session unfenced.
			log.Error("no metrics: "+err.Error(), "listen", cfg.Metrics.Listen)
		} else {
			metrics = pm
		}
	}
	o := fence.Options{
		Config:   fc,
		Host:     cfg.Host,
		Version:  version,
		StateDir: env.stateDir,
		BootID:   bootID,
		Clock:    env.clock,
		Sessions: etcd,
		Prefix:   cfg.Prefix,
		Guests:   env.guests,
		Log:      log,
		Notify:   env.notify,
		Device:   dev,
		Metrics:  metrics,
	}
	if env.guests == nil {
		lv, err := fence.NewLibvirt(cfg.Libvirt.URI)
		if err != nil {
			return exit(hook.ExitUsage, fmt.Errorf("libvirt.uri: %w", err))
		}
		defer lv.Close()
		lv.SetLogger(log)
		o.Guests = fence.NewHostGuests("/proc", lv)
		o.HA = &fence.HAOptions{
			Store:         etcd,
			Starter:       lv,
			MaxRestarts:   cfg.HA.MaxRestarts,
			DefineMissing: cfg.HA.DefineMissing,
		}
		o.Reconcile = &fence.ReconcileOptions{
			Domains: lv,
			Parse:   parseClaim,
		}
	}
	w := fence.New(o)
	log.Info("watchdog starting", "ttl", fc.TTL.String(), "renew_interval", fc.RenewInterval.String(), "margin", fc.Margin.String(),
		"endpoints", fmt.Sprint(cfg.Etcd.Endpoints))
	err = w.Run(ctx)
	if errors.Is(err, fence.ErrFatal) {
		return exit(hook.ExitUsage, err)
	}
	return err
}

// systemdWatchdog is systemd's watchdog interval for this process
// (WATCHDOG_USEC, when WATCHDOG_PID names us or is unset), 0 for none.
func systemdWatchdog(getenv func(string) string) time.Duration {
	usec, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

// checkEtcd warns about an etcd the safety argument does not hold for:
// fewer than 3 members (losing one stops every guest everywhere) and
// servers that lack the lease fixes it relies on (lease.VersionProblem).
// It runs once etcd is connected, on the connecting goroutine, never on
// the fence loop.
func checkEtcd(ctx context.Context, store *lease.Store, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if members, err := store.Members(ctx); err == nil && len(members) < 3 {
		log.Warn("etcd has fewer than 3 members: losing one stops every guest on every host (see README, Running etcd)", "members", len(members))
	}
	for _, v := range store.Versions(ctx) {
		switch {
		case v.Err != nil:
			log.Warn("cannot read the etcd server version of an endpoint", "endpoint", v.Endpoint, "err", v.Err.Error())
		case lease.VersionProblem(v.Version) != "":
			log.Warn(lease.VersionProblem(v.Version), "endpoint", v.Endpoint)
		}
	}
}

// flushLog writes out the queued log lines, waiting at most 2 s for a
// journal that does not read.
func flushLog(q *fence.LogQueue) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	q.Flush(ctx)
}

// parseClaim turns a live domain XML into its claim, for the reconciler.
func parseClaim(xml string) (lease.Claim, bool, error) {
	d, err := hook.ParseDomain([]byte(xml))
	if err != nil {
		return lease.Claim{}, false, err
	}
	return lease.Claim{UUID: d.UUID, Name: d.Name, Disks: d.DiskIDs()}, d.Mode != hook.ModeOff, nil
}
