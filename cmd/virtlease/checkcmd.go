package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/virtlease/virtlease/hook"
)

// checkCommand answers "would a start of DOMAIN on this host be allowed
// now?" with the hook's own decision, and changes nothing.
func checkCommand(getenv func(string) string, configFlag cli.Flag) *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "would a start of DOMAIN on this host be allowed now? (read-only)",
		ArgsUsage: "DOMAIN",
		UsageText: "virtlease check --xml FILE|- DOMAIN",
		Description: `Decides as the hook's prepare would when libvirt starts DOMAIN on this
host (session, shutdown, drain, the domain and disk keys, migrations,
unfenced records; for mode="off" only another's claim), and claims
nothing, writes nothing to etcd and leaves no marker. A start right after
may still be refused: another host can claim in between.

The domain XML comes from --xml (a file, or - for stdin); virtlease does
not ask libvirtd for it, so an XML not yet defined (a copy) can be checked
too. DOMAIN is the name or the UUID in that XML, to catch a wrong file.

Examples:
   virsh dumpxml web1 | virtlease check --xml - web1
   virtlease check --xml /srv/vm/web1-copy.xml web1-copy

Exit codes: 0 allowed, 1 refused, 2 usage, config or XML, 3 etcd unavailable.`,
		Flags: []cli.Flag{
			configFlag,
			&cli.StringFlag{Name: "xml", Usage: "the domain XML: a file, or - for stdin (required)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return exit(hook.ExitUsage, fmt.Errorf("check takes one DOMAIN (name or UUID), got %d arguments", c.NArg()))
			}
			if c.String("xml") == "" {
				return exit(hook.ExitUsage, errors.New("check needs the domain XML: --xml FILE, or --xml - with virsh dumpxml DOMAIN on stdin"))
			}
			cfg, err := loadValid(c, getenv)
			if err != nil {
				return err
			}
			return runCheck(c.Context, cfg, defaultStateDir, c.Args().First(), c.String("xml"), c.App.Reader, c.App.Writer)
		},
	}
}

// runCheck reads the XML (file, or "-" for stdin), checks that it is
// DOMAIN's, and runs the hook's check under hook.timeout.
func runCheck(ctx context.Context, cfg Config, stateDir, domain, xmlFile string, stdin io.Reader, stdout io.Writer) error {
	var b []byte
	var err error
	if xmlFile == "-" {
		b, err = io.ReadAll(io.LimitReader(stdin, 16<<20))
	} else {
		b, err = os.ReadFile(xmlFile)
	}
	if err != nil {
		return exit(hook.ExitUsage, fmt.Errorf("reading the domain XML: %w", err))
	}
	dom, err := hook.ParseDomain(b)
	if err != nil {
		return exit(hook.ExitUsage, err)
	}
	if domain != dom.Name && !strings.EqualFold(domain, dom.UUID) {
		return exit(hook.ExitUsage, fmt.Errorf("the XML is domain %s (%s), not %s", dom.Name, dom.UUID, domain))
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Hook.Timeout))
	defer cancel()
	conn := &etcdConn{cfg: cfg}
	defer conn.close()
	h := newHook(cfg, stateDir, conn)
	h.Warnings = stdout
	if err := h.Check(ctx, dom); err != nil {
		return exit(hook.Code(err), err)
	}
	fmt.Fprintf(stdout, "allowed: %s (%s) may start on host %s now\n", dom.Name, dom.UUID, cfg.Host)
	return nil
}
