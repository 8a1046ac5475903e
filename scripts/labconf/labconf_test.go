package labconf

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDurations(t *testing.T) {
	tests := []struct {
		name, config string
		ttl, margin  time.Duration
		wantErr      bool
	}{
		{"as lab.sh writes it", "host: a # the host\nsession:\n  ttl: 8s\nfence:\n  margin: 3s # fence early\n", 8 * time.Second, 3 * time.Second, false},
		{"missing keys keep their values", "host: a\nsession:\n  renew_interval: 1s\n", 10 * time.Second, 2 * time.Second, false},
		{"same key in another section", "hook:\n  ttl: 1s\n", 10 * time.Second, 2 * time.Second, false},
		{"not a duration", "session:\n  ttl: soon\n", 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.yaml")
			os.WriteFile(p, []byte(tc.config), 0o644)
			ttl, margin := 10*time.Second, 2*time.Second
			err := Durations(p, map[string]*time.Duration{"session.ttl": &ttl, "fence.margin": &margin})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && (ttl != tc.ttl || margin != tc.margin) {
				t.Fatalf("ttl %v margin %v, want %v %v", ttl, margin, tc.ttl, tc.margin)
			}
		})
	}
}
