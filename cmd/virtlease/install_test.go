package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const installScript = "../../scripts/install.sh"

// runInstall runs scripts/install.sh for real with --root (every path it
// writes is under root; systemd is left alone) and returns its exit code and
// combined output.
func runInstall(t *testing.T, root string, args ...string) (int, string) {
	t.Helper()
	script, err := filepath.Abs(installScript)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", append([]string{script, "--root", root}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("running install.sh: %v", err)
	return 0, ""
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// exists reports whether path exists, without following a final link.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestInstallScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go on PATH to build the binary with")
	}
	root := t.TempDir()

	// First run: no --binary, so it builds one (CGO_ENABLED=0).
	code, out := runInstall(t, root)
	if code != 0 {
		t.Fatalf("install: exit %d\n%s", code, out)
	}
	bin := filepath.Join(root, "usr/sbin/virtlease")
	if st, err := os.Stat(bin); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", st, err)
	}
	hookPath := filepath.Join(root, "etc/libvirt/hooks/qemu")
	if target, err := os.Readlink(hookPath); err != nil || target != "/usr/sbin/virtlease" {
		t.Fatalf("hook link: %q %v", target, err)
	}
	unit := readFile(t, filepath.Join(root, "etc/systemd/system/virtlease-watchdog.service"))
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=always", "Before=libvirtd.service libvirt-guests.service",
		"ExecStart=/usr/sbin/virtlease watchdog --config /etc/virtlease/config.yaml", "RuntimeDirectory=virtlease",
		"RuntimeDirectoryPreserve=yes", "CAP_KILL"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	for _, line := range strings.Split(unit, "\n") {
		for _, bad := range []string{"ProtectProc=invisible", "PrivateDevices=yes", "DevicePolicy=", "ProtectClock=yes"} {
			if strings.HasPrefix(line, bad) {
				t.Errorf("unit line %q hides processes or devices the watchdog needs", line)
			}
		}
	}
	if !strings.Contains(out, "systemd was not touched") {
		t.Errorf("install under --root should say it left systemd alone:\n%s", out)
	}

	// The example config is a valid config.
	config := filepath.Join(root, "etc/virtlease/config.yaml")
	cfg, err := LoadConfig(config, nil)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if d := DefaultConfig(); cfg.Prefix != d.Prefix || cfg.Session != d.Session || cfg.Fence != d.Fence || cfg.Etcd.Endpoints[0] != d.Etcd.Endpoints[0] {
		t.Errorf("example config differs from the defaults: %+v", cfg)
	}

	// The link points at /usr/sbin/virtlease on the target machine,
	// not under root; run the binary as libvirt runs the link, with the
	// link's path as argv[0]. That is hook mode: with no arguments, a hook
	// usage error (exit 2), not the CLI's help.
	asHook := func(argv0 string) error {
		cmd := &exec.Cmd{Path: bin, Args: []string{argv0}, Stdin: strings.NewReader("")}
		out, err := cmd.CombinedOutput()
		if strings.Contains(string(out), "USAGE") {
			return errors.New("ran the CLI, not the hook: " + string(out))
		}
		return err
	}
	var ee *exec.ExitError
	if err := asHook(hookPath); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Errorf("running as the hook link: %v", err)
	}

	// Bash completion, installed from the binary, completes for real.
	completion := filepath.Join(root, "usr/share/bash-completion/completions/virtlease")
	for _, tc := range []struct{ words, want string }{
		{"virtlease st", "status"},
		{"virtlease un", "undrain"},
		{"virtlease release --ev", "--even-if-alive"},
	} {
		words := strings.Fields(tc.words)
		script := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _virtlease; echo "${COMPREPLY[@]}"`
		cmd := exec.Command("bash", append([]string{"-c", script, "bash", completion}, words...)...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "VIRTLEASE_CONFIG=/nonexistent")
		got, err := cmd.Output()
		if err != nil || strings.TrimSpace(string(got)) != tc.want {
			t.Errorf("completing %q: %q %v, want %q", tc.words, got, err, tc.want)
		}
	}

	// A second run is idempotent and keeps an edited config.
	edited := readFile(t, config) + "# edited by the operator\n"
	os.WriteFile(config, []byte(edited), 0o644)
	code, out = runInstall(t, root, "--binary", bin)
	if code != 0 || !strings.Contains(out, "kept /etc/virtlease/config.yaml") {
		t.Fatalf("second install: exit %d\n%s", code, out)
	}
	if readFile(t, config) != edited {
		t.Error("second install overwrote the config")
	}
	if target, _ := os.Readlink(hookPath); target != "/usr/sbin/virtlease" {
		t.Errorf("hook link after a second run: %q", target)
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "*/*/*.virtlease-new"))
	more, _ := filepath.Glob(filepath.Join(root, "*/*/*/*.virtlease-new"))
	if len(leftovers)+len(more) > 0 {
		t.Errorf("temporary files left: %v %v", leftovers, more)
	}

	// systemd's own checker accepts the unit. It resolves ExecStart on
	// this machine, so the copy it checks names the binary under root.
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		copyUnit := filepath.Join(dir, "virtlease-watchdog.service")
		os.WriteFile(copyUnit, []byte(strings.ReplaceAll(unit, "ExecStart=/usr/sbin/virtlease", "ExecStart="+bin)), 0o644)
		if out, err := exec.Command(analyze, "verify", copyUnit).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		// The hardening stays in place: systemd's own exposure score
		// (0-10; 3.1 when written) must not pass 4.0.
		if out, err := exec.Command(analyze, "security", "--offline=true", "--threshold=40", copyUnit).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze security: the unit's exposure rose above 4.0: %v\n%s", err, out)
		}
	} else if os.Getenv("CI") == "true" {
		t.Error("no systemd-analyze: the unit cannot be verified (test.sh installs systemd)")
	} else {
		t.Log("no systemd-analyze: unit not verified")
	}

	// Keep the binary for the subtests: uninstall removes it.
	saved := filepath.Join(t.TempDir(), "virtlease")
	if err := os.WriteFile(saved, []byte(readFile(t, bin)), 0o755); err != nil {
		t.Fatal(err)
	}

	// Uninstall keeps the config; --purge removes it.
	code, out = runInstall(t, root, "--uninstall")
	if code != 0 {
		t.Fatalf("uninstall: exit %d\n%s", code, out)
	}
	for _, p := range []string{bin, hookPath, filepath.Join(root, "etc/systemd/system/virtlease-watchdog.service"), completion} {
		if exists(p) {
			t.Errorf("uninstall left %s", p)
		}
	}
	if !exists(config) {
		t.Error("uninstall removed the config")
	}
	if code, out = runInstall(t, root, "--uninstall", "--purge"); code != 0 || exists(config) {
		t.Errorf("uninstall --purge: exit %d, config still there %v\n%s", code, exists(config), out)
	}

	bin = saved

	t.Run("foreign hook", func(t *testing.T) {
		root := t.TempDir()
		foreign := filepath.Join(root, "etc/libvirt/hooks/qemu")
		os.MkdirAll(filepath.Dir(foreign), 0o755)
		const theirs = "#!/bin/sh\n# site hook: network setup\nexit 0\n"
		os.WriteFile(foreign, []byte(theirs), 0o755)

		code, out := runInstall(t, root, "--binary", bin)
		if code != 1 || !strings.Contains(out, "/etc/libvirt/hooks/qemu already exists and is not virtlease") ||
			!strings.Contains(out, "--qemu-d") || !strings.Contains(out, "chain") || strings.Count(out, "\n") != 1 {
			t.Fatalf("install over a foreign hook: exit %d\n%s", code, out)
		}
		if readFile(t, foreign) != theirs || exists(filepath.Join(root, "usr/sbin/virtlease")) {
			t.Fatal("a refused install changed something")
		}

		// --qemu-d installs beside it; libvirt >= 6.5 runs both.
		code, out = runInstall(t, root, "--binary", bin, "--qemu-d")
		if code != 0 {
			t.Fatalf("install --qemu-d: exit %d\n%s", code, out)
		}
		d := filepath.Join(root, "etc/libvirt/hooks/qemu.d/50-virtlease")
		if target, err := os.Readlink(d); err != nil || target != "/usr/sbin/virtlease" || readFile(t, foreign) != theirs {
			t.Fatalf("qemu.d link %q %v", target, err)
		}
		// A link in qemu.d runs hook mode too (its directory is qemu.d).
		if err := asHook(d); !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("running as the qemu.d link: %v", err)
		}
		if code, out := runInstall(t, root, "--binary", bin, "--qemu-d"); code != 0 {
			t.Fatalf("second install --qemu-d: exit %d\n%s", code, out)
		}
		code, out = runInstall(t, root, "--uninstall")
		if code != 0 || exists(d) || readFile(t, foreign) != theirs || !strings.Contains(out, "left /etc/libvirt/hooks/qemu: it is not virtlease's") {
			t.Fatalf("uninstall beside a foreign hook: exit %d\n%s", code, out)
		}
	})

	t.Run("moving between hooks/qemu and qemu.d", func(t *testing.T) {
		root := t.TempDir()
		if code, out := runInstall(t, root, "--binary", bin); code != 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		code, out := runInstall(t, root, "--binary", bin, "--qemu-d")
		if code != 0 || exists(filepath.Join(root, "etc/libvirt/hooks/qemu")) || !exists(filepath.Join(root, "etc/libvirt/hooks/qemu.d/50-virtlease")) {
			t.Fatalf("one hook, in qemu.d: exit %d\n%s", code, out)
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"--bogus"}, {"--purge"}, {"--binary", "/nonexistent"}} {
			if code, out := runInstall(t, t.TempDir(), args...); code != 2 {
				t.Errorf("%v: exit %d\n%s", args, code, out)
			}
		}
	})

	t.Run("shellcheck", func(t *testing.T) {
		if _, err := exec.LookPath("shellcheck"); err != nil {
			t.Skip("no shellcheck")
		}
		if out, err := exec.Command("shellcheck", installScript).CombinedOutput(); err != nil {
			t.Errorf("shellcheck: %v\n%s", err, out)
		}
	})
}
