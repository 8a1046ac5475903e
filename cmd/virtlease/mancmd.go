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
			page, err := c.App.ToManWithSection(8)
			if err != nil {
				return fmt.Errorf("man: rendering the manual page: %w", err)
			}
			_, err = io.WriteString(c.App.Writer, page)
			return err
		},
	}
}
