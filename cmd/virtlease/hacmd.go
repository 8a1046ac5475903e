package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
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
The surviving hosts then restart it if it runs nowhere. An intent a
deliberate stop set to "stopped" is left alone (resetting it starts the
guest) unless --stopped is given. A name that several HA domains share
is refused: give the UUID.
Exit codes: 0 done, 1 no such HA domain, a stopped intent or an ambiguous
name, 2 usage or config, 3 etcd unavailable.`,
			Flags: []cli.Flag{configFlag, &cli.BoolFlag{Name: "stopped", Usage: "also reset an intent a deliberate stop set to stopped (starts the guest)"}},
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
				ctx, cancel := context.WithTimeout(c.Context, cfg.callTimeout())
				defer cancel()
				snap, err := store.Snapshot(ctx)
				if err != nil {
					return exit(hook.ExitUnavailable, err)
				}
				uuid, err := intentByName(snap.Intents, c.Args().First())
				if err != nil {
					return exit(hook.ExitRefused, err)
				}
				if err := store.ResetIntent(ctx, uuid, c.Bool("stopped")); err != nil {
					if errors.Is(err, lease.ErrIntentStopped) {
						err = fmt.Errorf("%s: %w; virtlease ha reset --stopped %s starts it", c.Args().First(), err, c.Args().First())
					}
					return exit(hook.Code(err), err)
				}
				fmt.Fprintf(c.App.Writer, "HA intent of %s (%s) reset to running\n", snap.Intents[uuid].Name, uuid)
				return nil
			},
		}},
	}
}

// intentByName finds the HA intent named arg: by UUID, or else by a
// domain name that exactly one intent carries.
func intentByName(intents map[string]lease.Intent, arg string) (string, error) {
	if _, ok := intents[strings.ToLower(arg)]; ok {
		return strings.ToLower(arg), nil
	}
	var ids []string
	for id, in := range intents {
		if in.Name == arg {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("%s has no HA intent (is it mode=\"ha\" and was it ever started?)", arg)
	case 1:
		return ids[0], nil
	}
	return "", fmt.Errorf("%d HA domains are named %s (%s): give the UUID", len(ids), arg, strings.Join(ids, ", "))
}
