package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/virtlease/virtlease/hook"
)

// haCommand is `virtlease ha reset DOMAIN`: an operator's retry after an HA
// domain's intent became failed (too many restarts in the window).
func haCommand(getenv func(string) string, configFlag cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "ha",
		Usage: "HA restart: inspect and reset intents",
		Subcommands: []*cli.Command{{
			Name:      "reset",
			Usage:     "set an HA domain's intent back to running with no restarts counted",
			ArgsUsage: "DOMAIN",
			Description: `After ha.max_restarts restarts within 10 minutes an HA domain's intent
becomes "failed" and nobody restarts it. Once the cause is fixed:
   virtlease ha reset web1        # by name or UUID
The surviving hosts then restart it if it runs nowhere.
Exit codes: 0 done, 1 no such HA domain, 2 usage or config, 3 etcd unavailable.`,
			Flags: []cli.Flag{configFlag},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return exit(hook.ExitUsage, fmt.Errorf("usage: virtlease ha reset DOMAIN"))
				}
				cfg, err := loadValid(c, getenv)
				if err != nil {
					return err
				}
				store, closeFn, err := dial(cfg)
				if err != nil {
					return err
				}
				defer closeFn()
				ctx, cancel := context.WithTimeout(c.Context, callTimeout)
				defer cancel()
				snap, err := store.Snapshot(ctx)
				if err != nil {
					return exit(hook.ExitUnavailable, err)
				}
				want := strings.ToLower(c.Args().First())
				var uuid string
				for id, in := range snap.Intents {
					if id == want || in.Name == c.Args().First() {
						uuid = id
					}
				}
				if uuid == "" {
					return exit(hook.ExitRefused, fmt.Errorf("%s has no HA intent (is it mode=\"ha\" and was it ever started?)", c.Args().First()))
				}
				if err := store.ResetIntent(ctx, uuid); err != nil {
					return exit(hook.Code(err), err)
				}
				fmt.Fprintf(c.App.Writer, "HA intent of %s (%s) reset to running\n", snap.Intents[uuid].Name, uuid)
				return nil
			},
		}},
	}
}
