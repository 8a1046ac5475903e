package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --config works before and after the command name, and beats
// $VIRTLEASE_CONFIG.
func TestConfigFlagPlacement(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("sesion: {}\n"), 0o644)
	env := func(k string) string {
		if k == "VIRTLEASE_CONFIG" {
			return "/nonexistent/other.yaml"
		}
		return ""
	}
	for _, args := range [][]string{
		{"virtlease", "--config", bad, "status"},
		{"virtlease", "status", "--config", bad},
		{"virtlease", "watchdog", "--config", bad},
	} {
		t.Run(strings.Join(args[1:], " "), func(t *testing.T) {
			var out, errw bytes.Buffer
			code := run(args, strings.NewReader(""), &out, &errw, env)
			if code != 2 || !strings.Contains(errw.String(), "bad.yaml") || !strings.Contains(errw.String(), "sesion") {
				t.Fatalf("exit %d, stderr %q: want exit 2 naming bad.yaml and the unknown key", code, errw.String())
			}
		})
	}
}
