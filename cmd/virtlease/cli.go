package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitError carries an exit code through urfave/cli.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exit(code int, err error) error { return &exitError{code: code, err: err} }

func runCLI(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	// --config is accepted before or after the command name.
	configFlag := &cli.StringFlag{Name: "config", Usage: "config file (default $VIRTLEASE_CONFIG or /etc/virtlease/config.yaml)"}
	app := &cli.App{
		Name:  "virtlease",
		Usage: "run each libvirt guest on one host only, with etcd leases",
		Description: `virtlease claims a domain and its writable disks in etcd when libvirt
starts it (installed as /etc/libvirt/hooks/qemu), refuses the start when
another host holds them, and kills this host's guests before its etcd session
can expire (virtlease watchdog).`,
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		Flags:           []cli.Flag{configFlag},
		ExitErrHandler:  func(*cli.Context, error) {},
		Commands: []*cli.Command{
			{
				Name:      "hook",
				Usage:     "run as libvirt's hook (what /etc/libvirt/hooks/qemu does)",
				ArgsUsage: "qemu NAME OP SUBOP [EXTRA]",
				Description: `Runs one libvirt hook call by hand, with the domain XML on stdin:
   virtlease hook qemu web1 prepare begin - < web1.xml
Exit codes: 0 ok, 1 refused, 2 usage or config, 3 etcd unavailable.`,
				SkipFlagParsing: true,
				Action: func(c *cli.Context) error {
					a := c.Args().Slice()
					if len(a) > 0 && a[0] == "qemu" {
						a = a[1:]
					}
					if code := runHook(a, c.App.Reader, c.App.ErrWriter, getenv, configPath(c), defaultStateDir); code != 0 {
						return exit(code, nil)
					}
					return nil
				},
			},
			{
				Name:  "watchdog",
				Usage: "hold this host's etcd session and fence its guests before it can expire",
				Description: `Runs in the foreground (systemd unit virtlease-watchdog.service).
   virtlease watchdog --config /etc/virtlease/config.yaml`,
				Flags: []cli.Flag{configFlag},
				Action: func(c *cli.Context) error {
					cfg, err := loadValid(c, getenv)
					if err != nil {
						return err
					}
					ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
					defer stop()
					return runWatchdog(ctx, cfg, c.App.ErrWriter)
				},
			},
			{
				Name:      "status",
				Usage:     "show hosts, held domains and disks",
				ArgsUsage: "[DOMAIN]",
				Description: `Reads everything under the prefix from etcd.
   virtlease status            # every host and domain
   virtlease status web1       # one domain (by name or UUID); exit 1 when nobody holds it
   virtlease status --json     # stable JSON for scripts`,
				Flags: []cli.Flag{
					configFlag,
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
					&cli.StringFlag{Name: "host", Usage: "only this host's domains"},
				},
				Action: func(c *cli.Context) error {
					cfg, err := loadValid(c, getenv)
					if err != nil {
						return err
					}
					return runStatus(c.Context, cfg, c.App.Writer, statusOptions{JSON: c.Bool("json"), Host: c.String("host"), Domain: c.Args().First()})
				},
			},
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					fmt.Fprintln(c.App.Writer, "virtlease", version)
					return nil
				},
			},
		},
	}
	err := app.Run(args)
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.err != nil {
			errorLine(stderr, ee.err)
		}
		return ee.code
	}
	errorLine(stderr, err)
	return hook.Code(err)
}

// loadValid loads and validates the config named by --config (or the
// default lookup); a problem is exit 2.
func loadValid(c *cli.Context, getenv func(string) string) (Config, error) {
	cfg, err := LoadConfig(configPath(c), getenv)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		return cfg, exit(hook.ExitUsage, err)
	}
	return cfg, nil
}

// configPath is --config as given before or after the command name.
func configPath(c *cli.Context) string {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("config") {
			return ctx.String("config")
		}
	}
	return ""
}

// dial connects to etcd as the config says.
func dial(cfg Config) (*lease.Store, func(), error) {
	ec, err := cfg.etcdConfig()
	if err != nil {
		return nil, nil, exit(hook.ExitUsage, err)
	}
	cli, err := lease.Dial(ec)
	if err != nil {
		return nil, nil, exit(hook.ExitUnavailable, err)
	}
	return lease.NewStore(cli, cfg.Prefix), func() { cli.Close() }, nil
}

// callTimeout bounds one operator command's etcd calls.
const callTimeout = 5 * time.Second
