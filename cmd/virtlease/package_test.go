package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// needTool finds a program the test cannot do without: a skip on a
// developer's machine, a failure under CI=true (a skipped check is no pass).
func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI=true: a missing prerequisite fails)", name)
		}
		t.Skipf("%s is not installed", name)
	}
}

// buildDeb runs scripts/package.sh into a scratch directory and returns the
// .deb's path.
func buildDeb(t *testing.T, version string) string {
	t.Helper()
	needTool(t, "go")
	needTool(t, "dpkg-deb")
	out := t.TempDir()
	script, _ := filepath.Abs("../../scripts/package.sh")
	cmd := exec.Command("bash", script, "--version", version, "--out", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("package.sh: %v\n%s", err, stderr.String())
	}
	deb := strings.TrimSpace(string(stdout))
	want := filepath.Join(out, "virtlease_"+version+"_"+runtime.GOARCH+".deb")
	if deb != want {
		t.Fatalf("package.sh printed %q; want %q", deb, want)
	}
	return deb
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPackageDeb: the .deb holds the binary in /usr/sbin (libvirtd's
// AppArmor profile runs nothing under /usr/local), the hook as a link in
// hooks/qemu.d (never hooks/qemu, which may be another program's), the units
// in /lib/systemd/system running that binary, the config as a conffile, a
// man page and completion made by the binary, and maintainer scripts that
// restart the watchdog on upgrade but never stop or restart the shutdown
// unit (its ExecStop marks a host shutdown).
func TestPackageDeb(t *testing.T) {
	deb := buildDeb(t, "1.2.3")

	listing := dpkgDeb(t, "--contents", deb)
	entries := map[string]string{} // path → mode and link target
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb --contents line %q", line)
		}
		path := strings.TrimPrefix(f[5], ".")
		if strings.HasSuffix(path, "/") {
			continue
		}
		entries[path] = f[0] + " " + strings.Join(f[6:], " ")
	}
	want := map[string]string{
		"/usr/sbin/virtlease":                              "-rwxr-xr-x ",
		"/etc/libvirt/hooks/qemu.d/50-virtlease":           "lrwxrwxrwx -> /usr/sbin/virtlease",
		"/lib/systemd/system/virtlease-watchdog.service":   "-rw-r--r-- ",
		"/lib/systemd/system/virtlease-shutdown.service":   "-rw-r--r-- ",
		"/etc/virtlease/config.yaml":                       "-rw-r--r-- ",
		"/usr/share/man/man8/virtlease.8.gz":               "-rw-r--r-- ",
		"/usr/share/virtlease/config.example.yaml":         "-rw-r--r-- ",
		"/usr/share/bash-completion/completions/virtlease": "-rw-r--r-- ",
	}
	for path, mode := range want {
		got, ok := entries[path]
		if !ok {
			t.Errorf("%s is missing from the package", path)
			continue
		}
		// nfpm writes links with mode 0 (l---------); only the target counts.
		if strings.HasPrefix(mode, "l") {
			if !strings.HasPrefix(got, "l") || !strings.HasSuffix(got, mode[len("lrwxrwxrwx"):]) {
				t.Errorf("%s: %q; want a link%s", path, got, mode[len("lrwxrwxrwx"):])
			}
		} else if got != mode {
			t.Errorf("%s: %q; want %q", path, got, mode)
		}
	}
	for path := range entries {
		if _, ok := want[path]; !ok {
			t.Errorf("unexpected file in the package: %s", path)
		}
	}

	info := dpkgDeb(t, "--field", deb, "Package", "Version", "Architecture", "Depends")
	for _, w := range []string{"Package: virtlease", "Version: 1.2.3", "Architecture: " + runtime.GOARCH, "Depends: libvirt-daemon-system"} {
		if !strings.Contains(info, w) {
			t.Errorf("control fields lack %q:\n%s", w, info)
		}
	}

	tree := t.TempDir()
	dpkgDeb(t, "--raw-extract", deb, tree)
	if got := strings.TrimSpace(readFile(t, filepath.Join(tree, "DEBIAN/conffiles"))); got != "/etc/virtlease/config.yaml" {
		t.Errorf("conffiles %q; want /etc/virtlease/config.yaml only", got)
	}
	for _, u := range []string{"virtlease-watchdog.service", "virtlease-shutdown.service"} {
		unit := readFile(t, filepath.Join(tree, "lib/systemd/system", u))
		if strings.Contains(unit, "/usr/local") || !strings.Contains(unit, "=/usr/sbin/virtlease ") {
			t.Errorf("%s does not run /usr/sbin/virtlease:\n%s", u, unit)
		}
	}
	if got := readFile(t, filepath.Join(tree, "usr/share/bash-completion/completions/virtlease")); got != bashCompletion {
		t.Errorf("completion is not the binary's:\n%s", got)
	}
	gz, err := os.Open(filepath.Join(tree, "usr/share/man/man8/virtlease.8.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer gz.Close()
	zr, err := gzip.NewReader(gz)
	if err != nil {
		t.Fatalf("man page: %v", err)
	}
	page, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("man page: %v", err)
	}
	for _, w := range []string{".TH virtlease 8", ".SH watchdog", ".SH hook"} {
		if !bytes.Contains(page, []byte(w)) {
			t.Errorf("man page lacks %q", w)
		}
	}

	// Maintainer scripts: valid sh, and the unit actions per upgrade/remove.
	scripts := map[string]string{}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(tree, "DEBIAN", s)
		if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v\n%s", s, err, out)
		}
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v (%v); want 0755", s, st.Mode(), err)
		}
		scripts[s] = readFile(t, p)
	}
	for _, c := range []struct{ script, re string }{
		{"postinst", `deb-systemd-helper enable "\$u"`},
		{"postinst", `deb-systemd-invoke restart \$WATCHDOG`},
		{"postinst", `deb-systemd-invoke start \$SHUTDOWN`},
		{"postinst", `deb-systemd-invoke restart "\$d"`}, // libvirtd re-reads its hooks
		{"prerm", `remove\)\n(.*\n)*\s*deb-systemd-invoke stop virtlease-watchdog.service`},
		{"postrm", `purge(.*\n)*\s*deb-systemd-helper purge virtlease-watchdog.service virtlease-shutdown.service`},
		{"postrm", `rm -rf /etc/virtlease`},
	} {
		if !regexp.MustCompile(c.re).MatchString(scripts[c.script]) {
			t.Errorf("%s lacks %s", c.script, c.re)
		}
	}
	shutdownAction := regexp.MustCompile(`(?m)^.*(stop|restart).*(\$SHUTDOWN|virtlease-shutdown).*$`)
	for s, text := range scripts {
		for _, line := range shutdownAction.FindAllString(text, -1) {
			if !strings.HasPrefix(strings.TrimSpace(line), "#") && strings.Contains(line, "deb-systemd-invoke") {
				t.Errorf("%s stops or restarts the shutdown unit (its ExecStop marks a shutdown): %s", s, line)
			}
		}
	}
}

// TestManPage: `virtlease man` renders every visible command, from the same
// definitions as --help.
func TestManPage(t *testing.T) {
	var out, errb bytes.Buffer
	// `help CMD` first: urfave/cli's shared help command then lists itself
	// among its own subcommands, and a page made naively never ends.
	run([]string{"virtlease", "help", "status"}, strings.NewReader(""), &out, &errb, func(string) string { return "" })
	out.Reset()
	errb.Reset()
	if code := run([]string{"virtlease", "man"}, strings.NewReader(""), &out, &errb, func(string) string { return "" }); code != 0 {
		t.Fatalf("virtlease man: exit %d: %s", code, errb.String())
	}
	page := out.String()
	if !strings.HasPrefix(page, ".nh\n.TH virtlease 8") {
		t.Errorf("not a section 8 man page:\n%.200s", page)
	}
	for _, c := range []string{"hook", "watchdog", "status", "release", "drain", "check", "completion", "version"} {
		if !strings.Contains(page, "\n.SH "+c+"\n") {
			t.Errorf("man page lacks command %s", c)
		}
	}
	if strings.Contains(page, "\n.SH man\n") {
		t.Errorf("the hidden man command is in its own page")
	}
}
