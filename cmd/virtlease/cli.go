package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// versionString is version with the commit and Go release it was built from
// (Go records the commit when built in a git checkout), so that "dev" builds
// can be told apart: "v0.4.0 (commit 3f714bf2a1c9, go1.26.8)".
func versionString() string {
	v := version
	var extra []string
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			if dirty {
				rev += "-dirty"
			}
			extra = append(extra, "commit "+rev)
		}
	}
	extra = append(extra, runtime.Version())
	return v + " (" + strings.Join(extra, ", ") + ")"
}

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
	timeoutFlag := &cli.DurationFlag{Name: "timeout", Usage: "bound each etcd call of an operator command (default 5s; connecting is bounded by etcd.dial_timeout)"}
	app := &cli.App{
		Name:  "virtlease",
		Usage: "run each libvirt guest on one host only, with etcd leases",
		Description: `virtlease claims a domain and its writable disks in etcd when libvirt
starts it (installed as /etc/libvirt/hooks/qemu), refuses the start when
another host holds them, and kills this host's guests before its etcd session
can expire (virtlease watchdog).

Examples:
   virtlease status
   virtlease drain && virtlease status --host "$(hostname)"
   virtlease release --force web1
   virtlease COMMAND --help

Exit codes: 0 ok, 1 refused or conflict, 2 usage or config, 3 etcd unavailable.`,
		// Completion of commands and flags: the script from `virtlease
		// completion bash` calls back with --generate-bash-completion.
		EnableBashCompletion: true,
		Reader:               stdin,
		Writer:               stdout,
		ErrWriter:            stderr,
		Flags:                []cli.Flag{configFlag, timeoutFlag},
		Version:              versionString(),
		ExitErrHandler:       func(*cli.Context, error) {},
		Commands: []*cli.Command{
			{
				Name:      "hook",
				Usage:     "run as libvirt's hook (what /etc/libvirt/hooks/qemu does)",
				ArgsUsage: "qemu NAME OP SUBOP [EXTRA]",
				UsageText: "virtlease hook qemu NAME OP SUBOP [EXTRA] < DOMAIN.xml",
				Description: `Runs one libvirt hook call by hand, with the domain XML on stdin, as
libvirtd runs /etc/libvirt/hooks/qemu (a link to this binary; a link or copy
in /etc/libvirt/hooks/qemu.d/ works too). It never writes to stdout.

This is the real thing: prepare claims web1 for this host (and sets an HA
guest's intent to running). To ask whether a start would be allowed
without claiming anything, use virtlease check.

Examples:
   virsh dumpxml web1 | virtlease check --xml - web1                # would this host be allowed to start web1? (read-only)
   virsh dumpxml web1 | virtlease hook qemu web1 release end -     # release what this host holds for web1

Exit codes: 0 ok, 1 refused, 2 usage or config, 3 etcd unavailable.`,
				SkipFlagParsing: true,
				Action: func(c *cli.Context) error {
					a := c.Args().Slice()
					if len(a) == 1 && (a[0] == "--help" || a[0] == "-h" || a[0] == "help") {
						// SkipFlagParsing hands --help to us, not to the CLI.
						cli.HelpPrinter(c.App.Writer, cli.CommandHelpTemplate, c.Command)
						return nil
					}
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
				Name:      "watchdog",
				Usage:     "hold this host's etcd session and fence its guests before it can expire",
				UsageText: "virtlease watchdog [--config FILE]",
				Description: `Runs in the foreground, normally as the systemd unit
virtlease-watchdog.service (Type=notify; scripts/install.sh installs it).
It renews this host's etcd session, publishes it in /run/virtlease/session
for the hook, kills this host's guests before the session can expire when
etcd stops answering, and reconciles running guests with etcd.

Examples:
   systemctl enable --now virtlease-watchdog
   virtlease watchdog --config /etc/virtlease/config.yaml    # by hand, in the foreground

Exit codes: 0 stopped (SIGTERM), 2 usage or config (also systemd's WatchdogSec
shorter than the timings need). An unreachable etcd is never an exit: the
watchdog enforces its session file and keeps dialling.`,
				Flags: []cli.Flag{configFlag},
				Action: func(c *cli.Context) error {
					cfg, err := loadValid(c, getenv)
					if err != nil {
						return err
					}
					ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
					defer stop()
					return runWatchdog(ctx, cfg, c.App.ErrWriter, getenv)
				},
			},
			{
				Name:      "status",
				Usage:     "show hosts, held domains and disks, drains and unfenced records",
				ArgsUsage: "[DOMAIN]",
				UsageText: "virtlease status [--host HOST] [--json] [DOMAIN]",
				Description: `Reads everything under the prefix from etcd at one revision. A host
shows as alive (its session lease is live), draining (it refuses new
starts) or unfenced (its watchdog stopped and left guests running); a
domain whose holder has no live session is marked "(no session)".

Examples:
   virtlease status                  # every host and domain
   virtlease status web1             # one domain, by name or UUID; exit 1 when no host holds it
   virtlease status --host host-a    # host-a and the domains it holds
   virtlease status --json | jq -r '.domains[] | .name + " " + .host'

Exit codes: 0 ok, 1 DOMAIN or --host not found, 2 usage or config, 3 etcd unavailable.`,
				Flags: []cli.Flag{
					configFlag, timeoutFlag,
					&cli.BoolFlag{Name: "json", Usage: "print JSON (stable field names, for scripts)"},
					&cli.StringFlag{Name: "host", Usage: "only this host and its domains"},
				},
				BashComplete: completeDomains(getenv, configFlag),
				Action: func(c *cli.Context) error {
					if c.NArg() > 1 {
						return exit(hook.ExitUsage, fmt.Errorf("status takes at most one DOMAIN, got %d arguments", c.NArg()))
					}
					cfg, err := loadValid(c, getenv)
					if err != nil {
						return err
					}
					return runStatus(c.Context, cfg, c.App.Writer, statusOptions{JSON: c.Bool("json"), Host: c.String("host"), Domain: c.Args().First()})
				},
			},
			{
				Name:      "release",
				Usage:     "delete the claim of a domain whose holder is known to be dead (needs --force)",
				ArgsUsage: "DOMAIN",
				UsageText: `virtlease release --force [--even-if-alive] [--yes] DOMAIN
virtlease release --force [--even-if-alive] [--yes] --host HOST`,
				Description: `Normally nothing needs releasing: a dead host's claims vanish with its
etcd session within session.ttl. This is for when etcd still names a holder
you know is gone: etcd restored from a backup, or a host whose watchdog
stopped with guests running (an "unfenced" record) and that will not come
back. DOMAIN is a name or a UUID; a name that several domains share is
refused with their UUIDs.

In one etcd transaction it deletes the domain key and the disk keys the same
host holds for it, removes the domain from every unfenced record, and writes
an audit record PREFIX/audit/TIME-RANDOM (action, domain, uuid, host, by,
even_if_alive, at, keys). If any of those keys changed since they were shown
to you, nothing is written.

It refuses while the holder's session is alive (its hosts/HOST key exists on
the lease the claim names), or while a host whose unfenced record lists the
domain is registered. --even-if-alive overrides that: the holder may still
run the guest until its watchdog notices, so two copies can overlap; use it
only when the host is powered off.

With --host HOST and no DOMAIN it clears HOST's whole unfenced record.

On a terminal it shows what it will do and asks; otherwise add --yes.

Examples:
   virtlease release --force web1
   virtlease release --force --yes 4dea22b3-7c1e-4b8a-9d0f-2a6c5e8b1f30
   virtlease release --force --host host-a    # host-a is gone: its unfenced guests may start elsewhere

Exit codes: 0 released, 1 refused (holder alive, not found, not confirmed, changed meanwhile),
2 usage or config, 3 etcd unavailable.`,
				Flags: []cli.Flag{
					configFlag, timeoutFlag,
					&cli.BoolFlag{Name: "force", Usage: "required: you know the holder is dead"},
					&cli.BoolFlag{Name: "even-if-alive", Usage: "release even though the holder's session is live (two copies may overlap)"},
					&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask for confirmation (needed when stdin is not a terminal)"},
					&cli.StringFlag{Name: "host", Usage: "clear this host's whole unfenced record (instead of DOMAIN)"},
				},
				BashComplete: completeDomains(getenv, configFlag),
				Action: func(c *cli.Context) error {
					opt := releaseOptions{Domain: c.Args().First(), Host: c.String("host"), EvenIfAlive: c.Bool("even-if-alive"), Yes: c.Bool("yes")}
					switch {
					case !c.Bool("force"):
						return exit(hook.ExitUsage, errors.New("release needs --force: it deletes another host's claim, which is only safe when that host is known to be dead (see virtlease release --help)"))
					case c.NArg() > 1:
						return exit(hook.ExitUsage, fmt.Errorf("release takes one DOMAIN, got %d arguments", c.NArg()))
					case opt.Domain == "" && opt.Host == "":
						return exit(hook.ExitUsage, errors.New("release --force needs a DOMAIN (name or UUID), or --host HOST to clear that host's unfenced record"))
					case opt.Domain != "" && opt.Host != "":
						return exit(hook.ExitUsage, errors.New("release --force takes a DOMAIN or --host HOST, not both"))
					}
					cfg, err := loadValid(c, getenv)
					if err != nil {
						return err
					}
					return runRelease(c.Context, cfg, c.App.Reader, c.App.Writer, c.App.ErrWriter, getenv, opt)
				},
			},
			{
				Name:      "drain",
				Usage:     "refuse new starts on this host (or --host); running guests keep running",
				UsageText: "virtlease drain [--evacuate] [--host HOST]",
				Description: `Writes PREFIX/drain/HOST {"since","by","evacuate"} (no lease: it stays
through restarts of the host and its watchdog). From then on every new start
of a guest on HOST is refused (virsh start says the host is draining);
incoming live migrations are refused too. Guests already running and
libvirtd restarts (reconnect) are not affected. HOST is the config's host
unless --host is given.

--evacuate then live-migrates this host's HA guests (mode="ha") to other
live, non-draining candidates, one at a time (virsh migrate --live to
ha.migrate_uri with {host} replaced; the migration hand-off moves their keys:
no restart, no gap). It must run on the host being drained. Guests that
cannot move keep running and are listed (exit 1). Other guests stay.

--host of a host etcd has no trace of (no session, held domain, HA
candidate, drain or unfenced record) is refused, so that a typo does not
drain a host that does not exist; --new drains such a host anyway (one
that is down and holds nothing, before it comes back).

Examples:
   virtlease drain                      # before maintenance on this host
   virtlease drain --host host-b        # from any machine with the config
   virtlease status --host host-b       # shows "draining"

Exit codes: 0 draining (also when it already was), 1 some HA guests could not be evacuated
or an unknown --host, 2 usage or config, 3 etcd unavailable.`,
				Flags: []cli.Flag{
					configFlag, timeoutFlag,
					&cli.BoolFlag{Name: "evacuate", Usage: "also live-migrate this host's HA guests to other hosts"},
					&cli.StringFlag{Name: "host", Usage: "the host to drain (default: the config's host)"},
					&cli.BoolFlag{Name: "new", Usage: "drain --host even though etcd has no trace of it"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return exit(hook.ExitUsage, fmt.Errorf("drain takes no arguments (use --host HOST), got %q", c.Args().First()))
					}
					cfg, err := loadValid(c, getenv)
					if err != nil {
						return err
					}
					host, err := hostFlag(c, cfg)
					if err != nil {
						return err
					}
					return runDrain(c.Context, cfg, host, drainOptions{evacuate: c.Bool("evacuate"), unknownOK: c.Bool("new")}, c.App.Writer, getenv)
				},
			},
			{
				Name:      "undrain",
				Usage:     "accept new starts on this host (or --host) again",
				UsageText: "virtlease undrain [--host HOST]",
				Description: `Deletes PREFIX/drain/HOST. HOST is the config's host unless --host is given.

Examples:
   virtlease undrain
   virtlease undrain --host host-b

Exit codes: 0 not draining any more (also when it was not), 2 usage or config, 3 etcd unavailable.`,
				Flags: []cli.Flag{
					configFlag, timeoutFlag,
					&cli.StringFlag{Name: "host", Usage: "the host to undrain (default: the config's host)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return exit(hook.ExitUsage, fmt.Errorf("undrain takes no arguments (use --host HOST), got %q", c.Args().First()))
					}
					cfg, err := loadValid(c, getenv)
					if err != nil {
						return err
					}
					host, err := hostFlag(c, cfg)
					if err != nil {
						return err
					}
					return runUndrain(c.Context, cfg, host, c.App.Writer)
				},
			},
			checkCommand(getenv, configFlag),
			shutdownCommand(getenv, configFlag),
			haCommand(getenv, configFlag),
			manCommand(),
			{
				Name:      "completion",
				Usage:     "print a shell completion script",
				ArgsUsage: "bash",
				UsageText: "virtlease completion bash",
				Description: `Prints a bash completion script. It completes commands and flags by
running virtlease with --generate-bash-completion, and domain names (status,
release) from etcd.

Examples:
   virtlease completion bash > /usr/share/bash-completion/completions/virtlease
   source <(virtlease completion bash)     # this shell only`,
				Action: func(c *cli.Context) error {
					if sh := c.Args().First(); sh != "bash" || c.NArg() != 1 {
						return exit(hook.ExitUsage, fmt.Errorf("completion: only bash is supported (virtlease completion bash), got %q", strings.Join(c.Args().Slice(), " ")))
					}
					_, err := io.WriteString(c.App.Writer, bashCompletion)
					return err
				},
			},
			{
				Name:      "version",
				Usage:     "print the version",
				UsageText: "virtlease version",
				Description: `Prints the version the binary was built with (install.sh sets it from git describe).

Example:
   virtlease version    # virtlease v0.4.0-3-gabc1234`,
				Action: func(c *cli.Context) error {
					fmt.Fprintln(c.App.Writer, "virtlease", versionString())
					return nil
				},
			},
		},
	}
	// Usage errors are exit 2, the usage going to stderr (stdout may be
	// a script's pipe); urfave/cli's own answer is exit 1 and the whole
	// help on stdout.
	app.UsageText = "virtlease [--config FILE] COMMAND [ARGS...]"
	app.OnUsageError = usageError(stderr, app.UsageText, "virtlease --help")
	setUsageErrors(stderr, app.Commands, "virtlease")
	unknown := false
	app.CommandNotFound = func(c *cli.Context, name string) {
		unknown = true
		fmt.Fprintf(stderr, "virtlease: unknown command %q\nusage: %s\nrun 'virtlease --help' for the commands\n", name, app.UsageText)
	}
	if len(args) == 0 {
		args = []string{"virtlease"} // an empty argv (execve allows it)
	}
	err := app.Run(args)
	var ee *exitError
	switch {
	case unknown:
		return hook.ExitUsage
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

// usageError answers a flag that does not parse: the usage on stderr, exit 2.
func usageError(stderr io.Writer, usage, help string) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		fmt.Fprintf(stderr, "usage: %s\nrun '%s' for details\n", usage, help)
		return exit(hook.ExitUsage, err)
	}
}

// setUsageErrors gives every command (and subcommand) usageError.
func setUsageErrors(stderr io.Writer, cmds []*cli.Command, parent string) {
	for _, c := range cmds {
		name := parent + " " + c.Name
		usage := c.UsageText
		if usage == "" {
			usage = name + " [options] " + c.ArgsUsage
		}
		c.OnUsageError = usageError(stderr, strings.TrimSpace(usage), name+" --help")
		setUsageErrors(stderr, c.Subcommands, name)
	}
}

// loadValid loads and validates the config named by --config (or the
// default lookup); a problem is exit 2.
func loadValid(c *cli.Context, getenv func(string) string) (Config, error) {
	cfg, err := LoadConfig(configPath(c), getenv)
	if err == nil {
		if err = cfg.Validate(); err != nil {
			file, _ := resolveConfigPath(configPath(c), getenv)
			err = fmt.Errorf("%s: %w", file, err)
		}
	}
	if err != nil {
		return cfg, exit(hook.ExitUsage, err)
	}
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("timeout") {
			if cfg.opTimeout = ctx.Duration("timeout"); cfg.opTimeout <= 0 {
				return cfg, exit(hook.ExitUsage, fmt.Errorf("--timeout %v must be positive", cfg.opTimeout))
			}
			break
		}
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
	// gRPC would wait out the whole call deadline and hide the cause:
	// find it first, within dial_timeout.
	pctx, cancel := context.WithTimeout(context.Background(), cfg.callTimeout())
	defer cancel()
	if err := probeEtcd(pctx, ec, min(ec.DialTimeout, cfg.callTimeout())); err != nil {
		code := hook.ExitUsage
		if errors.Is(err, lease.ErrUnavailable) {
			code = hook.ExitUnavailable
		}
		return nil, nil, exit(code, err)
	}
	cli, err := lease.Dial(ec)
	if err != nil {
		// Dial only waits on etcd to log in; anything else it reports is
		// the config's (TLS files, user name or password, endpoints).
		code := hook.ExitUsage
		if errors.Is(err, lease.ErrUnavailable) {
			code = hook.ExitUnavailable
		}
		return nil, nil, exit(code, err)
	}
	return lease.NewStore(cli, cfg.Prefix), func() { cli.Close() }, nil
}

// defaultCallTimeout bounds one operator command's etcd calls unless
// --timeout says otherwise.
const defaultCallTimeout = 5 * time.Second

// callTimeout bounds one operator command's etcd calls: --timeout, or 5 s.
func (c Config) callTimeout() time.Duration {
	if c.opTimeout > 0 {
		return c.opTimeout
	}
	return defaultCallTimeout
}
