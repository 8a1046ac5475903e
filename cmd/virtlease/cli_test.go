package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/virtlease/virtlease/lease"
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

// ha reset finds an intent by UUID or by a name only one intent carries; a
// name two HA domains share is refused with both UUIDs listed, never
// resolved to one of them.
func TestIntentByName(t *testing.T) {
	intents := map[string]lease.Intent{
		uuidWeb1: {Name: "web1"},
		uuidDupA: {Name: "dup"},
		uuidDupB: {Name: "dup"},
	}
	for _, tc := range []struct {
		arg, want, errHas string
	}{
		{"web1", uuidWeb1, ""},
		{strings.ToUpper(uuidDupA), uuidDupA, ""},
		{"dup", "", "2 HA domains are named dup (" + uuidDupA + ", " + uuidDupB + "): give the UUID"},
		{"nosuch", "", "nosuch has no HA intent"},
	} {
		got, err := intentByName(intents, tc.arg)
		if got != tc.want || (tc.errHas == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
			t.Errorf("intentByName(%q) = %q, %v; want %q, %q", tc.arg, got, err, tc.want, tc.errHas)
		}
	}
}
