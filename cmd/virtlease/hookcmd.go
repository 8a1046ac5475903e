package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
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
// session file and markers are (defaultStateDir but in tests).
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

	// The calls inside get 90% of the deadline to fail cleanly with their
	// own message; the hard stop below covers anything that ignores ctx.
	ctx, cancel := context.WithTimeout(context.Background(), timeout*9/10)
	defer cancel()
	conn := &etcdConn{cfg: cfg}
	defer conn.close()
	return runHookCall(ctx, newHook(cfg, stateDir, conn), call, strict, timeout, args, stdin, stderr)
}

// runHookCall runs h on args within timeout (ctx ends earlier) and
// returns the exit code, after one line on stderr for any failure.
func runHookCall(ctx context.Context, h *hook.Hook, call hook.Call, strict bool, timeout time.Duration, args []string, stdin io.Reader, stderr io.Writer) int {
	var err error
	done := make(chan error, 1)
	go func() {
		defer func() {
			// A bug must not become a Go stack trace and exit 2: a start
			// is refused with one line (exit 1); the operations that fail
			// open say so and exit 0 (failing reconnect kills a guest).
			if r := recover(); r != nil {
				code := hook.ExitRefused
				if !strict {
					code = hook.ExitOK
				}
				done <- &hook.Error{Code: code, Err: fmt.Errorf("internal error in hook %s %s (please report it): %v", call.Op, call.SubOp, r)}
			}
		}()
		done <- h.Run(ctx, args, stdin)
	}()
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

// newHook is the hook as production runs it, on this config and state
// directory, dialling etcd through conn. The runs records go to
// defaultRunsDir and managed saves are looked for in libvirtSaveDir with
// the default stateDir, else under stateDir/runs and stateDir/save, so that
// a test never touches this machine's.
func newHook(cfg Config, stateDir string, conn *etcdConn) *hook.Hook {
	runsDir, saveDir := defaultRunsDir, libvirtSaveDir
	if stateDir != defaultStateDir {
		runsDir, saveDir = filepath.Join(stateDir, "runs"), filepath.Join(stateDir, "save")
	}
	return &hook.Hook{
		Config: hook.Config{Host: cfg.Host, Margin: time.Duration(cfg.Fence.Margin), StateDir: stateDir,
			RunsDir: runsDir, SaveDir: saveDir},
		Connect: conn.connect,
		BootNow: lease.BootNow,
		BootID:  lease.BootID,
	}
}

// etcdConn dials etcd for one hook call. The call runs on its own
// goroutine and may still be dialling when runHook gives up and closes
// the connection: the mutex keeps the two from racing on the client, and a
// client that arrives after the close is closed at once.
type etcdConn struct {
	cfg    Config
	mu     sync.Mutex
	cli    *clientv3.Client
	closed bool
}

func (c *etcdConn) connect(ctx context.Context) (hook.Claims, error) {
	ec, err := c.cfg.etcdConfig()
	if err != nil {
		return nil, err
	}
	cli, err := lease.DialContext(ctx, ec)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cli.Close()
		return nil, fmt.Errorf("%w: the hook's deadline passed while dialling", lease.ErrUnavailable)
	}
	if c.cli != nil {
		c.cli.Close() // a second Connect in one call: keep the newest
	}
	c.cli = cli
	return lease.NewStore(cli, c.cfg.Prefix), nil
}

func (c *etcdConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.cli != nil {
		c.cli.Close()
		c.cli = nil
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
