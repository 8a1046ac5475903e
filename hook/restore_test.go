package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtlease/virtlease/lease"
)

const rbdUUID = "6a1c2f0e-3b9d-4c27-9f51-0d2e8b7a4c11" // rbd-auth-hosts.xml

var runAt = time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)

// remember leaves the record of this host's last run of rbdUUID.
func (e *env) remember(t *testing.T, r lease.Run) {
	t.Helper()
	if err := writeDurable(filepath.Join(e.dir, "runs", rbdUUID), encodeRun(r)); err != nil {
		t.Fatal(err)
	}
}

func TestRestore(t *testing.T) {
	mine := lease.Run{Host: "host-a", Seq: 5, Since: runAt}
	unavailable := fmt.Errorf("reading: %w", lease.ErrUnavailable)
	tests := []struct {
		name     string
		xml      string
		setup    func(t *testing.T, e *env)
		wantCode int
		wantMsg  []string
	}{
		{"no record in etcd: ran nowhere else", "rbd-auth-hosts.xml", nil, ExitOK, nil},
		{"my run is the last", "rbd-auth-hosts.xml", func(t *testing.T, e *env) {
			e.remember(t, mine)
			e.claims.lastRun = &lease.Run{Host: "host-a", Seq: 5, Since: runAt}
		}, ExitOK, nil},
		{"another host started it since", "rbd-auth-hosts.xml", func(t *testing.T, e *env) {
			e.remember(t, mine)
			e.claims.lastRun = &lease.Run{Host: "host-b", Seq: 6, Since: runAt.Add(time.Hour)}
		}, ExitRefused, []string{"refusing to restore vm-rbd from its saved state", "host host-b started it",
			"`virsh managedsave-remove vm-rbd` discards the saved state"}},
		{"this host started it again since", "rbd-auth-hosts.xml", func(t *testing.T, e *env) {
			e.remember(t, mine)
			e.claims.lastRun = &lease.Run{Host: "host-a", Seq: 7, Since: runAt}
		}, ExitRefused, []string{"run 5 here", "run 7"}},
		{"no local record, etcd names this host", "rbd-auth-hosts.xml", func(t *testing.T, e *env) {
			e.claims.lastRun = &lease.Run{Host: "host-a", Seq: 5, Since: runAt}
		}, ExitRefused, []string{"keeps no record"}},
		{"local record of another host name", "rbd-auth-hosts.xml", func(t *testing.T, e *env) {
			e.remember(t, lease.Run{Host: "host-z", Seq: 5})
			e.claims.lastRun = &lease.Run{Host: "host-a", Seq: 5, Since: runAt}
		}, ExitRefused, []string{"keeps no record"}},
		{"unreadable local record", "rbd-auth-hosts.xml", func(t *testing.T, e *env) {
			os.MkdirAll(filepath.Join(e.dir, "runs"), 0o755)
			os.WriteFile(filepath.Join(e.dir, "runs", rbdUUID), []byte("{"), 0o644)
			e.claims.lastRun = &lease.Run{Host: "host-a", Seq: 5, Since: runAt}
		}, ExitRefused, []string{"keeps no record"}},
		{"etcd unreachable", "rbd-auth-hosts.xml", func(t *testing.T, e *env) {
			e.remember(t, mine)
			e.claims.lastRunErr = unavailable
		}, ExitUnavailable, []string{"cannot restore vm-rbd: etcd did not answer"}},
		{"cannot dial etcd", "rbd-auth-hosts.xml", func(t *testing.T, e *env) { e.dialErr = errors.New("bad TLS config") }, ExitUsage, []string{"bad TLS config"}},
		{"opt-out: not checked", "mode-off.xml", func(t *testing.T, e *env) {
			e.claims.lastRun = &lease.Run{Host: "host-b", Seq: 6}
		}, ExitOK, nil},
		{"bad XML", "", nil, ExitUsage, []string{"domain XML"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			var xml []byte
			if tc.xml != "" {
				xml = fixture(t, tc.xml)
			}
			err := e.hook(t).Run(context.Background(), []string{"vm", "restore", "begin", "-"}, bytes.NewReader(xml))
			if Code(err) != tc.wantCode {
				t.Fatalf("exit %d (%v), want %d", Code(err), err, tc.wantCode)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("message is not one line: %q", err)
			}
			for _, w := range tc.wantMsg {
				if !strings.Contains(fmt.Sprint(err), w) {
					t.Errorf("message %q lacks %q", err, w)
				}
			}
			_, mark := os.Stat(filepath.Join(e.dir, "restoring", rbdUUID))
			if allowed := tc.wantCode == ExitOK && tc.xml == "rbd-auth-hosts.xml"; allowed != (mark == nil) {
				t.Errorf("restoring marker left: %v, want %v", mark == nil, allowed)
			}
		})
	}
}

// The restore's prepare checks again in its claim's Txn, with the run
// restore begin vouched for; the marker serves that one prepare only.
func TestRestoreThenPrepare(t *testing.T) {
	e := newEnv(t)
	mine := lease.Run{Host: "host-a", Seq: 5, Since: runAt}
	e.remember(t, mine)
	e.claims.lastRun = &lease.Run{Host: "host-a", Seq: 5, Since: runAt}
	e.claims.claimRun = &lease.Run{Host: "host-a", Seq: 6, Since: runAt.Add(time.Minute)}
	h := e.hook(t)
	xml := fixture(t, "rbd-auth-hosts.xml")
	run := func(op, sub string) error {
		return h.Run(context.Background(), []string{"vm-rbd", op, sub, "-"}, bytes.NewReader(xml))
	}
	if err := run("restore", "begin"); err != nil {
		t.Fatal(err)
	}
	if err := run("prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	c := e.claims.claims[0]
	if c.Restore == nil || c.Restore.Mine == nil || c.Restore.Mine.Seq != 5 {
		t.Fatalf("the restore's claim carries %+v, want the check against run 5", c.Restore)
	}
	// The start's run is this host's last now: a state saved at its end is
	// restorable.
	if got := h.lastRun(rbdUUID); got == nil || got.Seq != 6 || got.Host != "host-a" {
		t.Fatalf("remembered run %+v after the claim recorded run 6", got)
	}
	// A later fresh start is no restore.
	if err := run("prepare", "begin"); err != nil {
		t.Fatal(err)
	}
	if c := e.claims.claims[1]; c.Restore != nil {
		t.Fatalf("a plain start claimed as a restore: %+v", c.Restore)
	}
}

func TestRestoreMarkerLeftovers(t *testing.T) {
	xml := fixture(t, "rbd-auth-hosts.xml")
	t.Run("too old: a restore that failed before its prepare", func(t *testing.T) {
		e := newEnv(t)
		h := e.hook(t)
		if err := h.Run(context.Background(), []string{"vm-rbd", "restore", "begin", "-"}, bytes.NewReader(xml)); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-2 * restoringTTL)
		os.Chtimes(h.marker("restoring", rbdUUID), old, old)
		if err := h.Run(context.Background(), []string{"vm-rbd", "prepare", "begin", "-"}, bytes.NewReader(xml)); err != nil {
			t.Fatal(err)
		}
		if c := e.claims.claims[0]; c.Restore != nil {
			t.Fatalf("claimed with a stale restore check: %+v", c.Restore)
		}
	})
	t.Run("release drops it", func(t *testing.T) {
		e := newEnv(t)
		h := e.hook(t)
		h.Run(context.Background(), []string{"vm-rbd", "restore", "begin", "-"}, bytes.NewReader(xml))
		h.Run(context.Background(), []string{"vm-rbd", "release", "end", "-"}, bytes.NewReader(xml))
		if _, err := os.Stat(h.marker("restoring", rbdUUID)); err == nil {
			t.Fatal("restoring marker outlived release end")
		}
	})
}

// A refused claim records no run here: the run this host remembers stays.
func TestPrepareRemembersOnlyRecordedRuns(t *testing.T) {
	e := newEnv(t)
	mine := lease.Run{Host: "host-a", Seq: 5, Since: runAt}
	e.remember(t, mine)
	e.claims.claimErr = held()
	h := e.hook(t)
	h.Run(context.Background(), []string{"vm-rbd", "prepare", "begin", "-"}, bytes.NewReader(fixture(t, "rbd-auth-hosts.xml")))
	if got := h.lastRun(rbdUUID); got == nil || got.Seq != 5 {
		t.Fatalf("remembered run %+v after a refused claim, want run 5", got)
	}
}

// A start that is not a restore must not leave a managed save of the
// domain behind: libvirt keeps it through an incoming migration (and virsh
// create), and would restore it at the next virsh start over a changed disk.
func TestStartRefusedOverSavedState(t *testing.T) {
	xml := fixture(t, "nbd.xml") // vm-nbd
	const uuid = "2f9d8c7b-6a5e-4d3c-b2a1-908f7e6d5c4b"
	save := func(e *env) {
		os.MkdirAll(filepath.Join(e.dir, "save"), 0o755)
		os.WriteFile(filepath.Join(e.dir, "save", "vm-nbd.save"), []byte("state"), 0o600)
	}
	run := func(h *Hook, op, sub string) error {
		return h.Run(context.Background(), []string{"vm-nbd", op, sub, "-"}, bytes.NewReader(xml))
	}
	t.Run("plain start (virsh create)", func(t *testing.T) {
		e := newEnv(t)
		save(e)
		h := e.hook(t)
		err := run(h, "prepare", "begin")
		if Code(err) != ExitRefused || !strings.Contains(fmt.Sprint(err), "keeps a saved state of it") ||
			!strings.Contains(fmt.Sprint(err), "`virsh managedsave-remove vm-nbd`") {
			t.Fatalf("exit %d: %v", Code(err), err)
		}
		if len(e.claims.claims) != 0 {
			t.Fatal("claimed anyway")
		}
		if _, err := os.Stat(h.marker("refused", uuid)); err != nil {
			t.Fatal("no refused marker: the stop calls that follow would wait on etcd")
		}
	})
	t.Run("incoming migration: refused, its record dropped at release", func(t *testing.T) {
		e := newEnv(t)
		save(e)
		e.claims.migrateFrom = "host-b"
		h := e.hook(t)
		if err := run(h, "migrate", "begin"); err != nil {
			t.Fatal(err)
		}
		if err := run(h, "prepare", "begin"); Code(err) != ExitRefused {
			t.Fatalf("incoming migration over a saved state: exit %d: %v", Code(err), err)
		}
		run(h, "stopped", "end")
		run(h, "release", "end")
		if e.claims.dropped == 0 {
			t.Fatal("the refused migration's record was not dropped")
		}
	})
	t.Run("the restore of that very state", func(t *testing.T) {
		e := newEnv(t)
		save(e)
		h := e.hook(t)
		if err := run(h, "restore", "begin"); err != nil {
			t.Fatal(err)
		}
		if err := run(h, "prepare", "begin"); err != nil {
			t.Fatalf("restore's prepare: %v", err)
		}
	})
	t.Run("no saved state", func(t *testing.T) {
		e := newEnv(t)
		if err := run(e.hook(t), "prepare", "begin"); err != nil {
			t.Fatal(err)
		}
	})
}

// virtlease check of a domain with a managed save here judges what virsh
// start would do: restore it.
func TestCheckJudgesTheRestore(t *testing.T) {
	e := newEnv(t)
	mine := lease.Run{Host: "host-a", Seq: 5, Since: runAt}
	e.remember(t, mine)
	h := e.hook(t)
	dom, err := ParseDomain(fixture(t, "rbd-auth-hosts.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Check(context.Background(), dom); err != nil || e.claims.checks[0].Restore != nil {
		t.Fatalf("no saved state: %v, checked as a restore: %+v", err, e.claims.checks[0].Restore)
	}
	os.MkdirAll(filepath.Join(e.dir, "save"), 0o755)
	os.WriteFile(filepath.Join(e.dir, "save", "vm-rbd.save"), []byte("state"), 0o600)
	if err := h.Check(context.Background(), dom); err != nil {
		t.Fatal(err)
	}
	if r := e.claims.checks[1].Restore; r == nil || r.Mine == nil || r.Mine.Seq != 5 {
		t.Fatalf("with a managed save, checked as %+v; want the restore of run 5", r)
	}
}
