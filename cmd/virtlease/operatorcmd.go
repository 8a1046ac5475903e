package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/sys/unix"

	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

type releaseOptions struct {
	Domain      string // name or UUID; "" with Host
	Host        string // clear this host's whole unfenced record
	EvenIfAlive bool
	Yes         bool
}

// runRelease is `virtlease release --force`. The plan is read under one
// deadline and applied under another: the operator's answer to the prompt
// may take any time, and Apply refuses if etcd changed meanwhile.
func runRelease(ctx context.Context, cfg Config, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string, opt releaseOptions) error {
	store, closeFn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer closeFn()
	pctx, cancel := context.WithTimeout(ctx, cfg.callTimeout())
	defer cancel()
	var a *lease.Action
	if opt.Host != "" {
		a, err = store.PlanClearUnfenced(pctx, opt.Host)
	} else {
		a, err = store.PlanForceRelease(pctx, opt.Domain)
	}
	if err != nil {
		return etcdFailure(cfg, err)
	}
	if len(a.Alive) > 0 && !opt.EvenIfAlive {
		return exit(hook.ExitRefused, fmt.Errorf("%w (--even-if-alive)", &lease.AliveError{Action: a}))
	}
	if opt.Yes {
		for _, why := range a.Alive {
			fmt.Fprintf(stderr, "virtlease: warning: %s; releasing anyway (--even-if-alive)\n", why)
		}
	} else {
		if !isTerminal(stdin) {
			return exit(hook.ExitUsage, fmt.Errorf("not releasing %s: standard input is not a terminal, so nobody can confirm; add --yes", actionSubject(a)))
		}
		ok, err := confirm(stdin, stderr, a)
		if err != nil {
			return exit(hook.ExitUsage, err)
		}
		if !ok {
			return exit(hook.ExitRefused, fmt.Errorf("not releasing %s: not confirmed", actionSubject(a)))
		}
	}
	actx, cancel2 := context.WithTimeout(ctx, cfg.callTimeout())
	defer cancel2()
	rec, key, err := store.Apply(actx, a, operatorName(getenv), opt.EvenIfAlive)
	if err != nil {
		return etcdFailure(cfg, err)
	}
	fmt.Fprintf(stdout, "released %s%s (audit record %s)\n", actionSubject(a), heldBy(a), key)
	for _, k := range rec.Keys {
		if slices.Contains(a.Rewritten, k) {
			fmt.Fprintf(stdout, "  rewrote %s (without %s)\n", k, a.Domain)
		} else {
			fmt.Fprintf(stdout, "  deleted %s\n", k)
		}
	}
	return nil
}

func heldBy(a *lease.Action) string {
	if a.Kind == lease.ActionForceRelease && a.Lease != 0 {
		return fmt.Sprintf(", held by %s since %s", a.Host, stamp(a.Since))
	}
	return ""
}

// actionSubject names what an action releases, for messages.
func actionSubject(a *lease.Action) string {
	if a.Kind == lease.ActionClearUnfenced {
		return "the unfenced record of host " + a.Host
	}
	return fmt.Sprintf("%s (%s)", a.Domain, a.UUID)
}

// confirm shows what a is about to do and asks on the terminal.
func confirm(stdin io.Reader, w io.Writer, a *lease.Action) (bool, error) {
	for _, k := range a.Keys {
		if slices.Contains(a.Rewritten, k) {
			fmt.Fprintf(w, "  will rewrite %s (without %s)\n", k, a.Domain)
		} else {
			fmt.Fprintf(w, "  will delete %s\n", k)
		}
	}
	for _, why := range a.Alive {
		fmt.Fprintf(w, "WARNING: %s; if it still runs the guest, two copies may write its disks\n", why)
	}
	var q string
	switch {
	case a.Kind == lease.ActionClearUnfenced:
		q = fmt.Sprintf("Clear the unfenced record of host %s (since %s), letting its guests start elsewhere?", a.Host, stamp(a.Since))
	case a.Lease != 0:
		q = fmt.Sprintf("Release %s held by %s since %s?", a.Domain, a.Host, stamp(a.Since))
	default:
		q = fmt.Sprintf("Release %s, listed as unfenced on %s?", a.Domain, strings.Join(a.Unfenced, ", "))
	}
	fmt.Fprintf(w, "%s [y/N] ", q)
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("reading the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "an unknown time" // an unreadable record
	}
	return t.UTC().Format(time.RFC3339)
}

// isTerminal reports whether r is a terminal an operator can answer on.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// operatorName is who runs a command, for audit and drain records:
// the user behind sudo if any, and this machine's host name.
func operatorName(getenv func(string) string) string {
	user := getenv("SUDO_USER")
	if user == "" {
		user = getenv("USER")
	}
	if user == "" {
		user = fmt.Sprintf("uid %d", os.Getuid())
	}
	machine, err := os.Hostname()
	if err != nil || machine == "" {
		machine = "unknown-host"
	}
	return user + "@" + machine
}

// etcdFailure turns the error of an operator command's etcd call into an
// exit: 3 when etcd did not answer, 2 when the etcd user may not touch the
// prefix (a configuration problem), else 1 (not found, alive, changed).
func etcdFailure(cfg Config, err error) error {
	switch {
	case errors.Is(err, lease.ErrUnavailable):
		return exit(hook.ExitUnavailable, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		who := "this client"
		if cfg.Etcd.Username != "" {
			who = "etcd user " + cfg.Etcd.Username
		}
		return exit(hook.ExitUsage, fmt.Errorf("%w (%s needs readwrite permission on the key range %s/)", err, who, strings.TrimRight(cfg.Prefix, "/")))
	}
	return exit(hook.ExitRefused, err)
}

// drainOptions are drain's flags.
type drainOptions struct {
	evacuate  bool // --evacuate
	unknownOK bool // --new: a host etcd has no trace of
}

// runDrain is `virtlease drain`: new starts on host are refused from now on.
func runDrain(ctx context.Context, cfg Config, host string, opt drainOptions, stdout io.Writer, getenv func(string) string) error {
	evacuate := opt.evacuate
	store, closeFn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer closeFn()
	cctx, cancel := context.WithTimeout(ctx, cfg.callTimeout())
	defer cancel()
	if host != cfg.Host && !opt.unknownOK {
		// A typo would otherwise drain a host that does not exist and
		// leave the real one accepting starts.
		snap, err := store.Snapshot(cctx)
		if err != nil {
			return etcdFailure(cfg, err)
		}
		if known := knownHosts(snap); !slices.Contains(known, host) {
			return exit(hook.ExitRefused, fmt.Errorf("no host %s in etcd (no session, held domain, drain or unfenced record; known: %s): check the name; drain --new --host %[1]s drains it anyway", host, strings.Join(known, ", ")))
		}
	}
	d, was, err := store.SetDrain(cctx, host, lease.Drain{Since: time.Now().UTC().Truncate(time.Second), By: operatorName(getenv), Evacuate: evacuate})
	if err != nil {
		return etcdFailure(cfg, err)
	}
	how := "is draining"
	if was {
		how = "was already draining"
	}
	fmt.Fprintf(stdout, "host %s %s since %s (by %s): new starts there are refused; running guests keep running (virtlease undrain --host %s ends it)\n",
		host, how, stamp(d.Since), d.By, host)
	if evacuate {
		if err := evacuateHA(ctx, cfg, host, stdout); err != nil {
			return exit(hook.ExitRefused, err)
		}
	}
	return nil
}

// knownHosts lists, sorted, every host etcd has a trace of: a session, a
// held domain, an HA candidate, a drain or an unfenced record.
func knownHosts(snap lease.Snapshot) []string {
	var hosts []string
	for _, h := range snap.Hosts {
		hosts = append(hosts, h.Host)
	}
	for _, d := range snap.Domains {
		hosts = append(hosts, d.Host)
	}
	for _, in := range snap.Intents {
		hosts = append(hosts, in.Candidates...)
	}
	for h := range snap.Drains {
		hosts = append(hosts, h)
	}
	for h := range snap.Unfenced {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// evacuateHA moves this host's HA guests away (drain --evacuate). It must
// run on the host being drained: virsh talks to the local libvirtd.
func evacuateHA(ctx context.Context, cfg Config, host string, stdout io.Writer) error {
	if host != cfg.Host {
		return fmt.Errorf("drain --evacuate moves guests with the local libvirtd: run it on %s itself", host)
	}
	store, closeFn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer closeFn()
	snap, err := readSnapshot(ctx, store, cfg.callTimeout())
	if err != nil {
		return err
	}
	return evacuate(ctx, snap, host, virshMigrator(cfg, false), stdout)
}

// runUndrain is `virtlease undrain`.
func runUndrain(ctx context.Context, cfg Config, host string, stdout io.Writer) error {
	store, closeFn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, cfg.callTimeout())
	defer cancel()
	d, err := store.ClearDrain(ctx, host)
	if err != nil {
		return etcdFailure(cfg, err)
	}
	if d == nil {
		fmt.Fprintf(stdout, "host %s was not draining\n", host)
		return nil
	}
	fmt.Fprintf(stdout, "host %s no longer draining (it was since %s, by %s): it accepts new starts again\n", host, stamp(d.Since), d.By)
	return nil
}

// hostFlag is --host, or the config's host.
func hostFlag(c *cli.Context, cfg Config) (string, error) {
	host := c.String("host")
	if host == "" {
		return cfg.Host, nil
	}
	if strings.ContainsFunc(host, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", exit(hook.ExitUsage, fmt.Errorf("--host %q must not contain /, spaces or control characters", host))
	}
	return host, nil
}
