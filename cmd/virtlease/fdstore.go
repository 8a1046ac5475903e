package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/virtlease/virtlease/fence"
)

// fdStoreName names the hardware watchdog's file in systemd's file
// descriptor store.
const fdStoreName = "hwdog"

// keptDevice is the hardware watchdog device, its open file kept in
// systemd's file descriptor store (FileDescriptorStoreMax= in the unit)
// while the watchdog runs. Linux pets a device when its last open file is
// closed without the magic "V", and the kernel closes the files of a
// process that dies: a watchdog killed, crashed or aborted by systemd during
// a partition would otherwise push the reset past the session's expiry,
// and one restarted in a loop would keep the device from firing. With
// systemd holding a copy, such a death releases nothing, and the restarted
// process takes the same open file back (LISTEN_FDS) instead of opening
// the device again.
//
// A deliberate Close takes the file out of the store first, so a stop with
// guests running releases (and pets) the device as before, and a clean stop
// disarms it. Outside systemd (no NOTIFY_SOCKET) it is the plain device.
type keptDevice struct {
	dev    *fence.FileDevice
	passed *os.File // from the previous process, if any
	notify func(state string, f *os.File) error
	warn   func(msg string, err error)
}

func (k *keptDevice) Open() error {
	if k.passed != nil {
		f := k.passed
		k.passed = nil
		if err := k.dev.OpenFile(f); err != nil {
			k.remove()
			return err
		}
		return nil
	}
	if err := k.dev.Open(); err != nil {
		return err
	}
	if err := k.notify("FDSTORE=1\nFDNAME="+fdStoreName+"\nFDPOLL=0", k.dev.File()); err != nil {
		k.warn("cannot keep the hardware watchdog in systemd's file descriptor store: if this process dies, the kernel pets the device once more", err)
	}
	return nil
}

func (k *keptDevice) Pet() error { return k.dev.Pet() }

func (k *keptDevice) Close(disarm bool) error {
	if k.passed != nil { // never opened: the previous process's file, untouched
		k.passed.Close()
		k.passed = nil
	}
	if k.dev.File() == nil {
		return nil
	}
	k.remove()
	return k.dev.Close(disarm)
}

func (k *keptDevice) remove() {
	if err := k.notify("FDSTOREREMOVE=1\nFDNAME="+fdStoreName, nil); err != nil {
		k.warn("cannot take the hardware watchdog out of systemd's file descriptor store", err)
	}
}

// sdNotifyFD sends state to systemd's notification socket (NOTIFY_SOCKET),
// with f attached when not nil. Outside systemd it does nothing.
func sdNotifyFD(getenv func(string) string) func(state string, f *os.File) error {
	return func(state string, f *os.File) error {
		sock := getenv("NOTIFY_SOCKET")
		if sock == "" {
			return nil
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("systemd notification socket: %w", err)
		}
		defer unix.Close(fd)
		var oob []byte
		if f != nil {
			oob = unix.UnixRights(int(f.Fd()))
		}
		// x/sys/unix turns a leading "@" into the abstract namespace's NUL.
		if err := unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: sock}, 0); err != nil {
			return fmt.Errorf("systemd notification socket %s: %w", sock, err)
		}
		return nil
	}
}

// passedFile returns the file systemd passed this process under name
// (LISTEN_FDS, LISTEN_FDNAMES, for LISTEN_PID), or nil.
func passedFile(getenv func(string) string, name string) *os.File {
	if getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil
	}
	n, err := strconv.Atoi(getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil
	}
	names := strings.Split(getenv("LISTEN_FDNAMES"), ":")
	for i := range n {
		if i < len(names) && names[i] == name {
			fd := 3 + i // SD_LISTEN_FDS_START
			unix.CloseOnExec(fd)
			return os.NewFile(uintptr(fd), name)
		}
	}
	return nil
}
