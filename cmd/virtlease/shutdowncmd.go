package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
)

// shutdownCommand is what virtlease-shutdown.service runs when the host
// goes down (its ExecStop, ordered so that it runs before
// libvirt-guests.service stops the guests). With ha.on_shutdown: failover
// it marks the shutdown, so the hook treats those stops as not clean and
// the HA guests' intents stay running: another host starts them at once.
// With stop, nothing is marked: the stops are clean and the guests stay
// stopped. With migrate (the default) the HA guests are live-migrated away
// first (as drain --evacuate does); what could not move fails over.
func shutdownCommand(getenv func(string) string) *cli.Command {
	return &cli.Command{
		Name:  "shutdown-mark",
		Usage: "mark this host as shutting down, per ha.on_shutdown (run by virtlease-shutdown.service)",
		Description: `Run by the virtlease-shutdown.service unit at host shutdown, before
libvirt-guests stops the guests:
   virtlease shutdown-mark           # per ha.on_shutdown in the config
/run/virtlease/shutdown is gone at the next boot (a tmpfs).`,
		Action: func(c *cli.Context) error {
			cfg, err := loadValid(c, getenv)
			if err != nil {
				return err
			}
			if cfg.HA.OnShutdown == "migrate" {
				// Evacuate first; whatever could not move fails over.
				if err := evacuateHA(c.Context, cfg, cfg.Host, c.App.ErrWriter); err != nil {
					fmt.Fprintln(c.App.ErrWriter, "virtlease: "+err.Error())
				}
			}
			return markShutdown(c.App.ErrWriter, defaultStateDir, cfg.HA.OnShutdown)
		},
	}
}

func markShutdown(w io.Writer, stateDir, mode string) error {
	switch mode {
	case "stop":
		fmt.Fprintln(w, "virtlease: ha.on_shutdown is stop: HA guests stopped now stay stopped")
		return nil
	case "migrate":
		fmt.Fprintln(w, "virtlease: ha.on_shutdown migrate: HA guests that could not move fail over")
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stateDir, "shutdown"), []byte("failover\n"), 0o644); err != nil {
		return fmt.Errorf("marking the shutdown: %w", err)
	}
	fmt.Fprintln(w, "virtlease: shutting down with ha.on_shutdown failover: HA guests stopped now are restarted on other hosts")
	return nil
}
