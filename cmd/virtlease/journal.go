package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

// underJournal reports whether f is the stream systemd connected to the
// journal: JOURNAL_STREAM names its device and inode ("DEV:INO"). A child
// whose stderr was redirected elsewhere inherits the variable but not the
// stream, so the variable alone is not enough (systemd.exec(5)).
func underJournal(f *os.File, getenv func(string) string) bool {
	v := getenv("JOURNAL_STREAM")
	if v == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return v == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// newLogHandler is the daemon's slog handler on w. Under systemd's journal
// each line starts with its syslog priority, "<4>" for a warning, which
// journald strips and records (SyslogLevelPrefix= is on by default), so
// `journalctl -p warning` finds warnings and errors; the time is left out
// there, as the journal stamps every line itself.
func newLogHandler(w io.Writer, journal bool) slog.Handler {
	if !journal {
		return slog.NewTextHandler(w, nil)
	}
	return slog.NewTextHandler(priorityWriter{w}, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
}

// priorityWriter prefixes each line slog's text handler writes (one Write
// per record, starting with "level=" once the time is dropped) with the
// syslog priority of that level.
type priorityWriter struct{ w io.Writer }

func (p priorityWriter) Write(b []byte) (int, error) {
	prio := "<6>" // info
	switch {
	case bytes.HasPrefix(b, []byte("level=ERROR")):
		prio = "<3>"
	case bytes.HasPrefix(b, []byte("level=WARN")):
		prio = "<4>"
	case bytes.HasPrefix(b, []byte("level=DEBUG")):
		prio = "<7>"
	}
	if _, err := p.w.Write(append([]byte(prio), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}
