package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/virtlease/virtlease/fence"
	"github.com/virtlease/virtlease/lease"
)

// migrateTimeout bounds one live migration of a small guest; a guest that
// cannot move in this time stays where it is and is listed.
const migrateTimeout = 3 * time.Minute

// migrator live-migrates one guest of this host to dest.
type migrator func(ctx context.Context, name, dest string) error

// evacuate live-migrates the HA guests host runs to other candidates, one
// at a time, through libvirt; the hook's migration hand-off moves the keys,
// so no restart and no gap. It runs on host itself (virsh talks to the
// local libvirtd). Guests that cannot move stay running and are listed.
//
// Outcomes:
//   - nil: every HA guest of host moved (or there was none);
//   - an error naming the guests that could not move (no live candidate,
//     every migration failed, or ctx ended first): they still run here;
//   - the error of reading etcd: nothing was tried.
func evacuate(ctx context.Context, snap lease.Snapshot, host string, mig migrator, out io.Writer) error {
	var live []string
	for _, h := range snap.Hosts {
		if _, draining := snap.Drains[h.Host]; !draining && h.Host != host {
			live = append(live, h.Host)
		}
	}
	slices.Sort(live)
	var stuck []string
	moved := 0
	for _, d := range snap.Domains {
		in, ha := snap.Intents[d.UUID]
		if d.Host != host || !ha || in.Want != lease.WantRunning {
			continue
		}
		order := fence.RestartOrder(d.UUID, in.Candidates, live)
		if len(order) == 0 {
			fmt.Fprintf(out, "  %s: no other live candidate host; it stays here\n", d.Name)
			stuck = append(stuck, d.Name)
			continue
		}
		var err error
		for _, dest := range order {
			if err = ctx.Err(); err != nil {
				fmt.Fprintf(out, "  %s: out of time for migrations; it stays here\n", d.Name)
				break
			}
			start := time.Now()
			if err = mig(ctx, d.Name, dest); err == nil {
				fmt.Fprintf(out, "  %s → %s (live migration, %v)\n", d.Name, dest, time.Since(start).Round(time.Millisecond))
				moved++
				break
			}
			fmt.Fprintf(out, "  %s → %s failed: %v\n", d.Name, dest, err)
		}
		if err != nil {
			stuck = append(stuck, d.Name)
		}
	}
	fmt.Fprintf(out, "evacuated %d HA guest(s) from %s\n", moved, host)
	if len(stuck) > 0 {
		return fmt.Errorf("%d HA guest(s) could not move and keep running on %s: %s", len(stuck), host, strings.Join(stuck, ", "))
	}
	return nil
}

// readSnapshot reads the cluster's state within timeout.
func readSnapshot(ctx context.Context, store *lease.Store, timeout time.Duration) (lease.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return store.Snapshot(ctx)
}

// virshMigrator migrates with virsh migrate --live. With p2p, libvirtd
// itself connects to the destination's libvirtd (VIR_MIGRATE_PEER2PEER):
// the caller needs no credentials for the destination, only the local
// socket, which is what a sandboxed unit at shutdown has. Without it, virsh
// connects to the destination as the caller (an operator's ssh keys).
func virshMigrator(cfg Config, p2p bool) migrator {
	return func(ctx context.Context, name, dest string) error {
		ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
		defer cancel()
		args := []string{"-c", cfg.Libvirt.URI, "migrate", "--live"}
		if p2p {
			args = append(args, "--p2p")
		}
		args = append(args, name, strings.ReplaceAll(cfg.HA.MigrateURI, "{host}", dest))
		if cfg.HA.MigrateDataURI != "" {
			args = append(args, strings.ReplaceAll(cfg.HA.MigrateDataURI, "{host}", dest))
		}
		if _, err := virsh(ctx, args...); err != nil {
			return fmt.Errorf("virsh migrate: %w", err)
		}
		return nil
	}
}

// virsh runs virsh. When ctx ends it is interrupted, not killed: on SIGINT
// virsh migrate aborts libvirt's migration job, where a killed virsh would
// leave it running in libvirtd.
func virsh(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "virsh", args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	b, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.Join(strings.Fields(string(b)), " "))
	}
	return string(b), nil
}
