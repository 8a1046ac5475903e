package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

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
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("host", cfg.Host)
	fc := fence.Config{TTL: time.Duration(cfg.Session.TTL), RenewInterval: time.Duration(cfg.Session.RenewInterval), Margin: time.Duration(cfg.Fence.Margin)}
	if err := fc.Validate(); err != nil {
		return exit(hook.ExitUsage, err)
	}
	if cfg.Fence.HardwareWatchdog == "" {
		log.Warn("no hardware watchdog configured (fence.hardware_watchdog): if this process dies, nothing fences this host's guests")
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

	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	lv, err := fence.DialLibvirt(lctx, cfg.Libvirt.URI)
	cancel()
	if err != nil {
		// Fencing does not need libvirtd (it kills from /proc); tidy-up does.
		log.Warn("libvirtd not reachable now; fencing still works from /proc", "uri", cfg.Libvirt.URI, "err", err.Error())
		lv = nil
	} else {
		defer lv.Close()
	}
	w := fence.New(fence.Options{
		Config:   fc,
		Host:     cfg.Host,
		Version:  version,
		StateDir: defaultStateDir,
		BootID:   bootID,
		Clock:    bootClock{},
		Sessions: store,
		Guests:   fence.HostGuests{ProcDir: "/proc", RunDir: "/run/libvirt", Libvirt: lv},
		Log:      log,
		Notify:   func(s string) { daemon.SdNotify(false, s) },
	})
	log.Info("watchdog starting", "ttl", fc.TTL.String(), "renew_interval", fc.RenewInterval.String(), "margin", fc.Margin.String(),
		"endpoints", fmt.Sprint(cfg.Etcd.Endpoints))
	err = w.Run(ctx)
	if errors.Is(err, fence.ErrFatal) {
		return exit(hook.ExitUsage, err)
	}
	return err
}
