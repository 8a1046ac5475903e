package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

// The bounds of a host shutdown. virtlease-shutdown.service's
// TimeoutStopSec covers their sum plus shutdownSlack (install_test checks
// it), so systemd never kills the unit while it still works by plan.
const (
	// shutdownEvacuateFor bounds all live migrations together
	// (on_shutdown: migrate); what has not moved by then fails over.
	shutdownEvacuateFor = 3 * time.Minute
	// shutdownStopFor is how long the guests left get to shut down after
	// an ACPI request, before they are destroyed.
	shutdownStopFor = 90 * time.Second
	// shutdownSlack covers reading etcd, listing and destroying guests.
	shutdownSlack = time.Minute
)

// shutdownCommand is what virtlease-shutdown.service runs when the host
// goes down (its ExecStop). It stops this host's guests itself, before
// libvirtd and the watchdog stop, so that the watchdog finds none left and
// revokes its session (rather than recording them as unfenced); it does
// not rely on libvirt-guests, which on some distributions cannot reach
// libvirtd at that point. ha.on_shutdown decides what HA guests get.
func shutdownCommand(getenv func(string) string, configFlag cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "shutdown-mark",
		Usage: "at host shutdown: mark it, move or fail over HA guests, stop the rest (run by virtlease-shutdown.service)",
		Description: `Run by the virtlease-shutdown.service unit at host shutdown, before
libvirtd and the watchdog stop. First it marks the shutdown in
/run/virtlease/shutdown (from then on this host takes no new guest and
restarts no HA guest); then, per ha.on_shutdown:
   migrate   live-migrate the HA guests to other hosts (libvirt peer to peer,
             for at most 3 minutes); those that could not move fail over
   failover  HA guests stopped now are restarted on other hosts at once
   stop      HA guests stopped now stay stopped
Last, it shuts down every guest this host still holds (ACPI, then destroy
after 90 s). /run/virtlease/shutdown is gone at the next boot (a tmpfs).

Example:
   virtlease shutdown-mark --config /etc/virtlease/config.yaml`,
		Flags: []cli.Flag{configFlag},
		Action: func(c *cli.Context) error {
			cfg, err := loadValid(c, getenv)
			if err != nil {
				return err
			}
			if ok, why := isHostShutdown(c.Context, getenv, systemState); !ok {
				fmt.Fprintln(c.App.ErrWriter, "virtlease: "+why)
				return nil
			}
			// systemd sends SIGTERM when the stop timeout runs out: the
			// marker is already written; cut the migrations short and stop
			// what is left.
			ctx, cancel := signal.NotifyContext(c.Context, syscall.SIGTERM, os.Interrupt)
			defer cancel()
			r := shutdownRun{
				mode: cfg.HA.OnShutdown, host: cfg.Host, stateDir: defaultStateDir,
				migrate: virshMigrator(cfg, true), guests: virshGuests{uri: cfg.Libvirt.URI},
				out: c.App.ErrWriter, evacuateFor: shutdownEvacuateFor, stopFor: shutdownStopFor,
			}
			store, closeFn, err := dial(cfg)
			if err == nil {
				defer closeFn()
				r.snapshot = func(ctx context.Context) (lease.Snapshot, error) { return readSnapshot(ctx, store, cfg.callTimeout()) }
			} else {
				r.snapshot = func(context.Context) (lease.Snapshot, error) { return lease.Snapshot{}, err }
			}
			if err := r.run(ctx); err != nil {
				return exit(hook.ExitRefused, err)
			}
			return nil
		},
	}
}

// isHostShutdown tells whether shutdown-mark, run by systemd (which sets
// INVOCATION_ID), runs because the host goes down: the unit also stops
// when an operator or a package upgrade stops or restarts it, and then
// moving and stopping every guest would be a disaster. Run by hand it
// always goes on.
//
// Outcomes:
//   - true: run by hand, or systemd says the system is stopping;
//   - false, and why: systemd says otherwise, or could not be asked (when
//     unsure, leave the guests alone).
func isHostShutdown(ctx context.Context, getenv func(string) string, state func(context.Context) (string, error)) (bool, string) {
	if getenv("INVOCATION_ID") == "" {
		return true, ""
	}
	st, err := state(ctx)
	switch {
	case err != nil:
		return false, fmt.Sprintf("cannot ask systemd whether the host is shutting down (%v): leaving the guests alone", err)
	case st != "stopping":
		return false, fmt.Sprintf("the unit stopped but the host is not shutting down (systemd: %s): nothing done; to move guests away use virtlease drain --evacuate", st)
	}
	return true, ""
}

// systemState is systemctl is-system-running's answer ("stopping" while
// the host shuts down).
func systemState(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// It exits non-zero for every state but running: the word is the answer.
	b, err := exec.CommandContext(ctx, "systemctl", "is-system-running").Output()
	if st := strings.TrimSpace(string(b)); st != "" {
		return st, nil
	}
	if err == nil {
		err = errors.New("no answer")
	}
	return "", err
}

// shutdownRun is one host shutdown.
type shutdownRun struct {
	mode, host, stateDir string
	snapshot             func(context.Context) (lease.Snapshot, error)
	migrate              migrator
	guests               hostGuests
	out                  io.Writer
	evacuateFor, stopFor time.Duration
}

// hostGuests is what a shutdown does to this host's guests, by UUID.
type hostGuests interface {
	// Running lists the UUIDs of the domains running here.
	Running(ctx context.Context) ([]string, error)
	// Shutdown asks a guest to shut down (ACPI).
	Shutdown(ctx context.Context, uuid string) error
	// Destroy stops a guest at once.
	Destroy(ctx context.Context, uuid string) error
}

// run marks the shutdown, then evacuates (migrate), then stops the guests
// this host holds. The marker comes first so that, whatever happens after
// (a slow migration, SIGTERM), no start or HA restart happens here and the
// stops are judged as the policy says: with failover (and migrate) they
// leave the HA intents running, so other hosts restart those guests.
//
// Outcomes:
//   - nil: marked, and no guest this host held is left running;
//   - an error: the marker could not be written (the guests are stopped
//     anyway: the watchdog must find none), or guests are left running
//     (the watchdog records them as unfenced when it stops).
func (r shutdownRun) run(ctx context.Context) error {
	var errs []error
	if err := markShutdown(r.stateDir, r.mode); err != nil {
		fmt.Fprintln(r.out, "virtlease: "+err.Error())
		errs = append(errs, err)
	} else {
		fmt.Fprintf(r.out, "virtlease: host %s shutting down with ha.on_shutdown %s: it takes no new guests; %s\n", r.host, r.mode, policyText[r.mode])
	}
	snap, serr := r.snapshot(ctx)
	if serr != nil {
		fmt.Fprintf(r.out, "virtlease: cannot read etcd (%v): no evacuation; stopping every guest running here\n", serr)
	}
	if r.mode == "migrate" && serr == nil {
		ectx, cancel := context.WithTimeout(ctx, r.evacuateFor)
		if err := evacuate(ectx, snap, r.host, r.migrate, r.out); err != nil {
			fmt.Fprintln(r.out, "virtlease: "+err.Error()+"; they fail over")
		}
		cancel()
	}
	var held map[string]bool
	if serr == nil {
		held = map[string]bool{}
		for _, d := range snap.Domains {
			if d.Host == r.host {
				held[d.UUID] = true
			}
		}
	}
	if err := r.stopGuests(ctx, held); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

var policyText = map[string]string{
	"migrate":  "HA guests move to other hosts; those that cannot fail over",
	"failover": "HA guests stopped now are restarted on other hosts",
	"stop":     "HA guests stopped now stay stopped",
}

// stopGuests shuts down the running guests in held (every running guest
// when held is nil: etcd could not say), and destroys those still running
// after r.stopFor or once ctx ends.
func (r shutdownRun) stopGuests(ctx context.Context, held map[string]bool) error {
	left := func() []string {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		uuids, err := r.guests.Running(lctx)
		if err != nil {
			fmt.Fprintf(r.out, "virtlease: listing the guests: %v\n", err)
			return nil
		}
		var out []string
		for _, u := range uuids {
			if held == nil || held[u] {
				out = append(out, u)
			}
		}
		return out
	}
	todo := left()
	if len(todo) == 0 {
		return nil
	}
	fmt.Fprintf(r.out, "virtlease: shutting down %d guest(s): %s\n", len(todo), strings.Join(todo, ", "))
	for _, u := range todo {
		if err := r.guests.Shutdown(ctx, u); err != nil {
			fmt.Fprintf(r.out, "  %s: %v\n", u, err)
		}
	}
	deadline := time.NewTimer(r.stopFor)
	defer deadline.Stop()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
wait:
	for len(todo) > 0 {
		select {
		case <-ctx.Done():
			break wait
		case <-deadline.C:
			break wait
		case <-tick.C:
			todo = left()
		}
	}
	if todo = left(); len(todo) == 0 {
		return nil
	}
	fmt.Fprintf(r.out, "virtlease: destroying %d guest(s) that did not shut down: %s\n", len(todo), strings.Join(todo, ", "))
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, u := range todo {
		if err := r.guests.Destroy(dctx, u); err != nil {
			fmt.Fprintf(r.out, "  %s: %v\n", u, err)
		}
	}
	if todo = left(); len(todo) > 0 {
		return fmt.Errorf("%d guest(s) still run here: %s", len(todo), strings.Join(todo, ", "))
	}
	return nil
}

// markShutdown writes stateDir/shutdown: "stop" for on_shutdown stop,
// "failover" otherwise (with migrate, what could not move fails over). Its
// presence makes the hook refuse starts and incoming migrations and the HA
// restarter skip this host; "failover" makes the hook judge stops as not
// clean (lease.StopState.JudgeStop), so HA intents stay running.
func markShutdown(stateDir, mode string) error {
	content := "failover"
	if mode == "stop" {
		content = "stop"
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("marking the shutdown: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, "shutdown"), []byte(content+"\n"), 0o644); err != nil {
		return fmt.Errorf("marking the shutdown: %w", err)
	}
	return nil
}

// virshGuests is hostGuests through virsh on the local libvirtd.
type virshGuests struct{ uri string }

func (v virshGuests) Running(ctx context.Context) ([]string, error) {
	out, err := virsh(ctx, "-c", v.uri, "list", "--uuid")
	if err != nil {
		return nil, fmt.Errorf("virsh list: %w", err)
	}
	return strings.Fields(out), nil
}

func (v virshGuests) Shutdown(ctx context.Context, uuid string) error {
	if _, err := virsh(ctx, "-c", v.uri, "shutdown", uuid); err != nil {
		return fmt.Errorf("virsh shutdown: %w", err)
	}
	return nil
}

func (v virshGuests) Destroy(ctx context.Context, uuid string) error {
	if _, err := virsh(ctx, "-c", v.uri, "destroy", uuid); err != nil {
		return fmt.Errorf("virsh destroy: %w", err)
	}
	return nil
}
