package lease

import (
	"strings"
	"testing"
)

func TestVersionProblem(t *testing.T) {
	cases := []struct {
		v    string
		want string // "" or a fragment of the problem
	}{
		{"3.7.3", ""},
		{"3.6.5", ""},
		{"3.6.4", "upgrade to 3.6.5"},
		{"3.6.0", "upgrade to 3.6.5"},
		{"3.5.23", ""},
		{"3.5.13", "upgrade to 3.5.23"},
		{"3.5.0", "upgrade to 3.5.23"},
		{"3.4.38", ""},
		{"3.4.37", "upgrade to 3.4.38"},
		{"3.3.27", "older than 3.4"},
		{"4.0.0", ""},
		{"v3.5.9", "upgrade to 3.5.23"},
		{"3.6.0-rc.1", "upgrade to 3.6.5"},
		{"", ""},
		{"garbage", ""},
	}
	for _, tc := range cases {
		t.Run(tc.v, func(t *testing.T) {
			got := VersionProblem(tc.v)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("VersionProblem(%q) = %q, want %q", tc.v, got, tc.want)
			}
		})
	}
}
