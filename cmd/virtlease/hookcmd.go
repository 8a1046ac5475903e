package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/virtlease/virtlease/hook"
	"github.com/virtlease/virtlease/lease"
)

// defaultStateDir is where the watchdog and the hook share local state (a tmpfs).
const defaultStateDir = "/run/virtlease"

// defaultRunsDir is where the hook keeps, per domain, the run its last start
// here got: on disk, because a saved state it vouches for survives a reboot.
const defaultRunsDir = "/var/lib/virtlease/runs"

// libvirtSaveDir is where libvirt's QEMU driver keeps managed saves
// (NAME.save), read by the hook, never written.
const libvirtSaveDir = "/var/lib/libvirt/qemu/save"

// runHook runs one libvirt hook call under a hard deadline and returns its
// exit code. configPath "" means the default lookup; stateDir is where the
// session file and markers are (defaultStateDir but in tests). The runs
// records go to defaultRunsDir and managed saves are looked for in
// libvirtSaveDir with the default stateDir, else under stateDir/runs and
// stateDir/save, so that a test never touches this machine's.
func runHook(args []string, stdin io.Reader, stderr io.Writer, getenv func(string) string, configPath, stateDir string) int {
	call, err := hook.ParseArgs(args)
	if err != nil {
		errorLine(stderr, err)
		return hook.ExitUsage
	}
	// Only a start may fail on a config problem; every other operation
	// must not kill or block guests because of it.
	strict := call.Op == "prepare" || call.Op == "migrate" || call.Op == "restore"
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
	runsDir, saveDir := defaultRunsDir, libvirtSaveDir
	if stateDir != defaultStateDir {
		runsDir, saveDir = filepath.Join(stateDir, "runs"), filepath.Join(stateDir, "save")
	}

	// The calls inside get 90% of the deadline to fail cleanly with their
	// own message; the hard stop below covers anything that ignores ctx.
	ctx, cancel := context.WithTimeout(context.Background(), timeout*9/10)
	defer cancel()
	var cli *clientv3.Client
	defer func() {
		if cli != nil {
			cli.Close()
		}
	}()
	h := &hook.Hook{
		Config: hook.Config{Host: cfg.Host, Margin: time.Duration(cfg.Fence.Margin), StateDir: stateDir, RunsDir: runsDir, SaveDir: saveDir},
		Connect: func(ctx context.Context) (hook.Claims, error) {
			ec, err := cfg.etcdConfig()
			if err != nil {
				return nil, err
			}
			if cli, err = lease.Dial(ec); err != nil {
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
