package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

func runWatchdog(ctx context.Context, cfg Config, stderr io.Writer) error {
	// The fence loop must never wait on the journal: log through a queue
	// that drops when full, and write out what is queued before exiting.
	logq := fence.NewLogQueue(slog.NewTextHandler(stderr, nil), 4096)
	defer flushLog(logq)
	log := slog.New(logq).With("host", cfg.Host)
	fc := fence.Config{TTL: time.Duration(cfg.Session.TTL), RenewInterval: time.Duration(cfg.Session.RenewInterval), Margin: time.Duration(cfg.Fence.Margin)}
	if err := fc.Validate(); err != nil {
		return exit(hook.ExitUsage, err)
	}
	var dev fence.Device
	if cfg.Fence.HardwareWatchdog == "" {
		log.Warn("no hardware watchdog configured (fence.hardware_watchdog): if this process dies, nothing fences this host's guests")
	} else {
		d, err := fence.OpenDevice(cfg.Fence.HardwareWatchdog, fc.DeviceTimeout())
		if err != nil {
			return exit(hook.ExitUsage, err)
		}
		dev = d
		log.Info("hardware watchdog armed", "device", cfg.Fence.HardwareWatchdog, "timeout", fc.DeviceTimeout().String())
	}
	bootID, err := lease.BootID()
	if err != nil {
		return exit(hook.ExitUsage, err)
	}
	store, closeFn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer closeFn()
	ec, err := cfg.etcdConfig()
	if err != nil {
		return exit(hook.ExitUsage, err)
	}
	renewer, errs := lease.NewRenewer(ec, store)
	for _, err := range errs {
		log.Warn("renewals will share the main etcd connection for an endpoint that could not be dialled now", "err", err.Error())
	}
	defer renewer.Close()

	mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if members, err := store.Members(mctx); err == nil && len(members) < 3 {
		// With fewer than 3 members etcd cannot lose one and keep quorum:
		// then every host fences everything.
		log.Warn("etcd has fewer than 3 members: losing one stops every guest on every host (see README, Running etcd)", "members", len(members))
	}
	cancel()
	lv, err := fence.NewLibvirt(cfg.Libvirt.URI)
	if err != nil {
		return exit(hook.ExitUsage, fmt.Errorf("libvirt.uri: %w", err))
	}
	defer lv.Close()
	var metrics fence.Metrics
	if cfg.Metrics.Listen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		pm := newPromMetrics(reg)
		if err := serveMetrics(ctx, cfg.Metrics.Listen, reg, log); err != nil {
			return exit(hook.ExitUsage, err)
		}
		metrics = pm
	}
	w := fence.New(fence.Options{
		Config:   fc,
		Host:     cfg.Host,
		Version:  version,
		StateDir: defaultStateDir,
		BootID:   bootID,
		Clock:    bootClock{},
		Sessions: lease.WithRenewer{Store: store, Renewer: renewer},
		Prefix:   cfg.Prefix,
		Guests:   fence.HostGuests{ProcDir: "/proc", RunDir: lv.RunDir(), Libvirt: lv},
		HA: &fence.HAOptions{
			Store:         store,
			Starter:       lv,
			MaxRestarts:   cfg.HA.MaxRestarts,
			DefineMissing: cfg.HA.DefineMissing,
		},
		Reconcile: &fence.ReconcileOptions{
			Domains: lv,
			Parse:   parseClaim,
		},
		Log:     log,
		Notify:  func(s string) { daemon.SdNotify(false, s) },
		Device:  dev,
		Metrics: metrics,
	})
	log.Info("watchdog starting", "ttl", fc.TTL.String(), "renew_interval", fc.RenewInterval.String(), "margin", fc.Margin.String(),
		"endpoints", fmt.Sprint(cfg.Etcd.Endpoints))
	err = w.Run(ctx)
	if errors.Is(err, fence.ErrFatal) {
		return exit(hook.ExitUsage, err)
	}
	return err
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
