package main

import (
	"context"
	"fmt"
	"io"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

// defaultStateDir is where the watchdog and the hook share local state (a tmpfs).
const defaultStateDir = "/run/virtlease"

// runHook runs one libvirt hook call under a hard deadline and returns its
// exit code. configPath "" means the default lookup; stateDir is where the
// session file and markers are (defaultStateDir but in tests).
func runHook(args []string, stdin io.Reader, stderr io.Writer, getenv func(string) string, configPath, stateDir string) int {
	call, err := hook.ParseArgs(args)
	if err != nil {
		errorLine(stderr, err)
		return hook.ExitUsage
	}
	// Only a start may fail on a config problem; every other operation
	// must not kill or block guests because of it.
	strict := call.Op == "prepare" || call.Op == "migrate"
	cfg, err := LoadConfig(configPath, getenv)
	if err == nil {
		if err = cfg.Validate(); err != nil {
			file, _ := resolveConfigPath(configPath, getenv)
			err = fmt.Errorf("%s: %w", file, err)
		}
	}
	if err != nil {
		if !strict {
			return hook.ExitOK
		}
		errorLine(stderr, fmt.Errorf("cannot start %s: %w", call.Name, err))
		return hook.ExitUsage
	}
	timeout := time.Duration(cfg.Hook.Timeout)

	// The calls inside get 90% of the deadline to fail cleanly with their
	// own message; the hard stop below covers anything that ignores ctx.
	ctx, cancel := context.WithTimeout(context.Background(), timeout*9/10)
	defer cancel()
	// The calls that will need etcd start connecting now, while the hook
	// reads the XML and the session: Connect then finds the connection
	// (or its error) ready.
	var dial *etcdDial
	if needsEtcd(call) {
		dial = startDial(cfg)
	}
	defer func() {
		if dial != nil {
			dial.close()
		}
	}()
	h := &hook.Hook{
		Config: hook.Config{Host: cfg.Host, Margin: time.Duration(cfg.Fence.Margin), StateDir: stateDir},
		Connect: func(ctx context.Context) (hook.Claims, error) {
			if dial == nil {
				dial = startDial(cfg)
			}
			cli, err := dial.wait()
			if err != nil {
				return nil, err
			}
			return lease.NewStore(cli, cfg.Prefix), nil
		},
		BootNow: lease.BootNow,
		BootID:  lease.BootID,
	}

	done := make(chan error, 1)
	go func() { done <- h.Run(ctx, args, stdin) }()
	select {
	case err = <-done:
	case <-time.After(timeout):
		// The contexts should have ended every call by now; whatever is
		// still running must not hold libvirtd any longer.
		err = fmt.Errorf("%w: hook %s %s gave up after %v", lease.ErrUnavailable, call.Op, call.SubOp, timeout)
		if !strict {
			err = nil
		}
	}
	if err != nil {
		errorLine(stderr, err)
	}
	return hook.Code(err)
}

// needsEtcd reports whether a hook call will most likely call etcd: the
// calls that claim, release or record a migration. A wrong guess costs a
// connection set-up (if true) or the overlap (if false), never a result.
func needsEtcd(c hook.Call) bool {
	switch c.Op + " " + c.SubOp {
	case "prepare begin", "migrate begin", "reconnect begin", "stopped end", "release end":
		return true
	}
	return false
}

// etcdDial is an etcd client being made in the background.
type etcdDial struct {
	done chan struct{}
	cli  *clientv3.Client
	err  error
}

// startDial makes the client of cfg and starts connecting. Without a user
// name that takes no round trip (the connection is set up in the
// background): it is done before startDial returns. With one it logs in,
// in a goroutine, bounded by etcd.dial_timeout.
func startDial(cfg Config) *etcdDial {
	d := &etcdDial{done: make(chan struct{})}
	dial := func() {
		defer close(d.done)
		ec, err := cfg.etcdConfig()
		if err != nil {
			d.err = err
			return
		}
		ec.Eager = true
		d.cli, d.err = lease.Dial(ec)
	}
	if cfg.Etcd.Username == "" {
		dial()
	} else {
		go dial()
	}
	return d
}

// wait returns the client or the error of making it.
func (d *etcdDial) wait() (*clientv3.Client, error) {
	<-d.done
	return d.cli, d.err
}

// close closes the client. A login still in progress (the call did not
// need etcd after all) is not waited for: it closes its client when it
// ends, within etcd.dial_timeout.
func (d *etcdDial) close() {
	select {
	case <-d.done:
		if d.cli != nil {
			d.cli.Close()
		}
	default:
		go func() {
			if cli, _ := d.wait(); cli != nil {
				cli.Close()
			}
		}()
	}
}

// etcdConfig turns the config file's etcd section into the client's.
func (c Config) etcdConfig() (lease.EtcdConfig, error) {
	ec := lease.EtcdConfig{
		Endpoints:   c.Etcd.Endpoints,
		CACert:      c.Etcd.CACert,
		Cert:        c.Etcd.Cert,
		Key:         c.Etcd.Key,
		Username:    c.Etcd.Username,
		DialTimeout: time.Duration(c.Etcd.DialTimeout),
	}
	if c.Etcd.Username != "" {
		pw, err := c.Password()
		if err != nil {
			return ec, err
		}
		ec.Password = pw
	}
	return ec, nil
}
