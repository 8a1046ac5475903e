package hook

import (
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    Call
		wantErr string
	}{
		// ok
		{name: "prepare begin",
			args: []string{"vm1", "prepare", "begin", "-"},
			want: Call{Name: "vm1", Op: "prepare", SubOp: "begin", Extra: "-"}},
		{name: "no fourth argument",
			args: []string{"vm1", "release", "end"},
			want: Call{Name: "vm1", Op: "release", SubOp: "end"}},
		{name: "reason in fourth argument",
			args: []string{"vm1", "stopped", "end", "shutdown reason=destroyed"},
			want: Call{Name: "vm1", Op: "stopped", SubOp: "end", Extra: "shutdown reason=destroyed"}},
		{name: "empty fourth argument",
			args: []string{"vm1", "started", "begin", ""},
			want: Call{Name: "vm1", Op: "started", SubOp: "begin"}},
		{name: "arguments beyond the fourth ignored",
			args: []string{"vm1", "migrate", "begin", "-", "future", "args"},
			want: Call{Name: "vm1", Op: "migrate", SubOp: "begin", Extra: "-"}},
		{name: "unknown op is parsed, not judged",
			args: []string{"vm1", "teleport", "begin", "-"},
			want: Call{Name: "vm1", Op: "teleport", SubOp: "begin", Extra: "-"}},
		{name: "empty subop",
			args: []string{"vm1", "reconnect", "", "-"},
			want: Call{Name: "vm1", Op: "reconnect", Extra: "-"}},
		{name: "name with spaces and slashes",
			args: []string{"web 1/../x", "prepare", "begin", "-"},
			want: Call{Name: "web 1/../x", Op: "prepare", SubOp: "begin", Extra: "-"}},

		// refused
		{name: "no arguments", args: nil, wantErr: "usage: qemu NAME OP SUBOP [EXTRA]"},
		{name: "two arguments", args: []string{"vm1", "prepare"}, wantErr: "usage: qemu NAME OP SUBOP [EXTRA]"},
		{name: "empty name", args: []string{"", "prepare", "begin", "-"}, wantErr: "hook arguments: empty domain name"},
		{name: "empty op", args: []string{"vm1", "", "begin", "-"}, wantErr: "hook arguments: empty operation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseArgs(%q) = %+v, %v; want error containing %q", tt.args, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tt.args, err)
			}
			if got != tt.want {
				t.Errorf("ParseArgs(%q) = %+v, want %+v", tt.args, got, tt.want)
			}
		})
	}
}

func FuzzParseArgs(f *testing.F) {
	f.Add("vm1", "prepare", "begin", "-", uint8(4))
	f.Add("vm1", "release", "end", "", uint8(3))
	f.Add("", "", "", "", uint8(0))
	f.Add("a/b", "stopped", "end", "shutdown", uint8(5))
	f.Fuzz(func(t *testing.T, name, op, subop, extra string, n uint8) {
		all := []string{name, op, subop, extra, "more"}
		args := all[:int(n)%(len(all)+1)]
		c, err := ParseArgs(args)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			return
		}
		if len(args) < 3 || c.Name == "" || c.Op == "" {
			t.Errorf("ParseArgs(%q) accepted %+v", args, c)
		}
		if c.Name != name || c.Op != op || c.SubOp != subop {
			t.Errorf("ParseArgs(%q) = %+v", args, c)
		}
		if len(args) > 3 && c.Extra != extra {
			t.Errorf("ParseArgs(%q).Extra = %q", args, c.Extra)
		}
	})
}
