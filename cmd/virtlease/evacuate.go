package main

import (
	"context"
	"fmt"
	"io"
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

// evacuate live-migrates the HA guests host runs to other candidates, one
// at a time, through libvirt (virsh migrate --live); the hook's migration
// hand-off moves the keys, so no restart and no gap. It runs on host itself
// (virsh talks to the local libvirtd). Guests that cannot move stay running
// and are listed; the error says how many.
func evacuate(ctx context.Context, cfg Config, store *lease.Store, host string, out io.Writer) error {
	sctx, cancel := context.WithTimeout(ctx, cfg.callTimeout())
	snap, err := store.Snapshot(sctx)
	cancel()
	if err != nil {
		return err
	}
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
			start := time.Now()
			if err = migrate(ctx, cfg, d.Name, dest); err == nil {
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

func migrate(ctx context.Context, cfg Config, name, dest string) error {
	ctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	args := []string{"-c", cfg.Libvirt.URI, "migrate", "--live", name, strings.ReplaceAll(cfg.HA.MigrateURI, "{host}", dest)}
	if cfg.HA.MigrateDataURI != "" {
		args = append(args, strings.ReplaceAll(cfg.HA.MigrateDataURI, "{host}", dest))
	}
	b, err := exec.CommandContext(ctx, "virsh", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("virsh migrate: %v: %s", err, strings.Join(strings.Fields(string(b)), " "))
	}
	return nil
}
