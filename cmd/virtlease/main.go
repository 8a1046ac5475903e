// Command virtlease keeps a libvirt/QEMU guest from running on two hosts at
// once. Installed as /etc/libvirt/hooks/qemu it is libvirt's hook; run as
// `virtlease watchdog` it holds this host's etcd session and fences; the
// other commands are for operators.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// run is main without process globals, for tests.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) > 0 && isHookName(args[0]) {
		return runHook(args[1:], stdin, stderr, getenv, "", defaultStateDir)
	}
	return runCLI(args, stdin, stdout, stderr, getenv)
}

// isHookName reports whether argv[0] is libvirt's hook path: a file named
// qemu, or any file in a qemu.d directory.
func isHookName(argv0 string) bool {
	return filepath.Base(argv0) == "qemu" || filepath.Base(filepath.Dir(argv0)) == "qemu.d"
}

// errorLine prints err as one line prefixed with "virtlease: ", the form
// libvirt relays to virsh.
func errorLine(w io.Writer, err error) {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	fmt.Fprintln(w, "virtlease: "+msg)
}
