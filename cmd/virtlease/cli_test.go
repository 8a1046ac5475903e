package main

import (
	"bytes"
	"strings"
	"testing"
)

// Usage errors follow the documented exit codes (2, usage on stderr,
// nothing on stdout); help and --version work as in other tools.
func TestCLIUsage(t *testing.T) {
	cases := []struct {
		args       []string
		code       int
		stdout     string // contained in stdout ("" for empty stdout)
		stderr     string // contained in stderr
		stdoutNone bool
	}{
		{[]string{"--bogus"}, 2, "", "usage: virtlease", true},
		{[]string{"bogus"}, 2, "", `unknown command "bogus"`, true},
		{[]string{"status", "--bogus"}, 2, "", "usage: virtlease status", true},
		{[]string{"ha", "reset", "--bogus"}, 2, "", "usage: virtlease ha reset", true},
		{[]string{"help", "bogus"}, 2, "", `unknown command "bogus"`, true},
		{[]string{"help", "status"}, 0, "virtlease status", "", false},
		{[]string{"help"}, 0, "COMMANDS:", "", false},
		{[]string{"--version"}, 0, "virtlease version " + version + " (", "", false},
		{[]string{"version"}, 0, "virtlease " + version + " (go", "", false},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errw bytes.Buffer
			code := runCLI(append([]string{"virtlease"}, tc.args...), strings.NewReader(""), &out, &errw, mapEnv(nil))
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errw.String())
			}
			if tc.stdoutNone && out.Len() != 0 {
				t.Errorf("stdout not empty on a usage error: %q", out.String())
			}
			if !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errw.String(), tc.stderr) {
				t.Errorf("stdout %q, stderr %q; want %q and %q in them", out.String(), errw.String(), tc.stdout, tc.stderr)
			}
		})
	}
}
