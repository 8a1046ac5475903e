package procscan

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A fake /proc: each process its PID namespace, command line and stat.
func TestScan(t *testing.T) {
	dir := t.TempDir()
	mk := func(pid, ns, cmdline, stat string) {
		p := filepath.Join(dir, pid)
		os.MkdirAll(filepath.Join(p, "ns"), 0o755)
		os.Symlink(ns, filepath.Join(p, "ns", "pid"))
		os.WriteFile(filepath.Join(p, "cmdline"), []byte(strings.ReplaceAll(cmdline, " ", "\x00")+"\x00"), 0o644)
		os.WriteFile(filepath.Join(p, "stat"), []byte(stat), 0o644)
	}
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 "
	mk("100", "pid:[1]", "qemu -name vm1 -uuid AAAA-1", "100 (qemu) S"+tail+"555 19 20")
	mk("101", "pid:[2]", "qemu -uuid bbbb-2", "101 (qemu (x) y) T"+tail+"556 19 20") // stopped, odd comm
	mk("102", "pid:[1]", "qemu -uuid cccc-3", "102 (qemu) Z"+tail+"557 19 20")       // zombie
	mk("103", "pid:[9]", "qemu -uuid dddd-4", "103 (qemu) S"+tail+"558 19 20")       // not a lab host
	mk("104", "pid:[1]", "sleep 10", "104 (sleep) S"+tail+"559 19 20")               // not a QEMU
	mk("105", "pid:[1]", "qemu -uuid", "105 (qemu) S"+tail+"560 19 20")              // truncated
	os.MkdirAll(filepath.Join(dir, "self"), 0o755)
	got, err := Scan(dir, map[string]string{"pid:[1]": "host-a", "pid:[2]": "host-b"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Proc{{PID: 100, Start: 555, UUID: "aaaa-1", Host: "host-a"}, {PID: 101, Start: 556, UUID: "bbbb-2", Host: "host-b"}}
	if !slices.Equal(got, want) {
		t.Fatalf("Scan = %+v, want %+v", got, want)
	}
}

// InPIDNS: the processes of one PID namespace with their comm, in /proc's
// order; other namespaces and non-process entries left out.
func TestInPIDNS(t *testing.T) {
	dir := t.TempDir()
	mk := func(pid, ns, comm string) {
		p := filepath.Join(dir, pid)
		os.MkdirAll(filepath.Join(p, "ns"), 0o755)
		os.Symlink(ns, filepath.Join(p, "ns", "pid"))
		os.WriteFile(filepath.Join(p, "comm"), []byte(comm+"\n"), 0o644)
	}
	mk("7", "pid:[1]", "libvirtd")
	mk("12", "pid:[2]", "libvirtd")
	mk("30", "pid:[1]", "qemu-system-x86")
	os.MkdirAll(filepath.Join(dir, "self"), 0o755)
	got := InPIDNS(dir, "pid:[1]")
	want := []Named{{PID: 30, Comm: "qemu-system-x86"}, {PID: 7, Comm: "libvirtd"}}
	if !slices.Equal(got, want) {
		t.Fatalf("InPIDNS = %+v, want %+v", got, want)
	}
	if got := InPIDNS(dir, ""); got != nil {
		t.Fatalf("InPIDNS with no namespace = %+v, want none", got)
	}
}
