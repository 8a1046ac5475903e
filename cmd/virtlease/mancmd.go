package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

// manCommand prints the manual page (section 8, roff) made from the same
// command and flag definitions as --help, so the two never disagree.
// scripts/package.sh installs it as /usr/share/man/man8/virtlease.8.gz.
//
// Outcomes: the page on stdout, exit 0; a write error.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:      "man",
		Usage:     "print the manual page (roff)",
		UsageText: "virtlease man > virtlease.8",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			// urfave/cli shares one help command among all apps, and once
			// `help CMD` has run it lists itself among its own subcommands:
			// rendering it would never end. The page needs no help command.
			c.App.Commands = withoutHelp(c.App.Commands)
			page, err := c.App.ToManWithSection(8)
			if err != nil {
				return fmt.Errorf("man: rendering the manual page: %w", err)
			}
			_, err = io.WriteString(c.App.Writer, page)
			return err
		},
	}
}

// withoutHelp returns cmds without the help command, at every depth. It
// changes the commands it keeps: only for an app that ends after this.
func withoutHelp(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, c := range cmds {
		if c.Name == "help" {
			continue
		}
		c.Subcommands = withoutHelp(c.Subcommands)
		out = append(out, c)
	}
	return out
}
