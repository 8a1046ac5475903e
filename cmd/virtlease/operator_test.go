package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/tests/v3/framework/integration"
	"golang.org/x/sys/unix"

	"github.com/virtlease/virtlease/lease"
)

// opsLab is a real in-process etcd, a config file pointing at it (host
// host-a) and a store to set the scene with.
type opsLab struct {
	t      *testing.T
	cli    *clientv3.Client
	store  *lease.Store
	config string
	env    func(string) string
}

func newOpsLab(t *testing.T) *opsLab {
	t.Helper()
	integration.BeforeTestExternal(t)
	clus := integration.NewCluster(t, &integration.ClusterConfig{Size: 1})
	t.Cleanup(func() { clus.Terminate(t) })
	endpoint := clus.Members[0].GRPCURL // unix://localhost:NAME, relative to the test's directory
	config := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(config, []byte("host: host-a\nprefix: /virtlease\netcd:\n  endpoints: ["+endpoint+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &opsLab{t: t, cli: clus.Client(0), store: lease.NewStore(clus.Client(0), "/virtlease"), config: config,
		env: mapEnv(map[string]string{"SUDO_USER": "alice", "USER": "root"})}
}

// run runs the CLI with the lab's config; a nil stdin is an empty one (not
// a terminal).
func (l *opsLab) run(stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	var out, errw bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	code = runCLI(append([]string{"virtlease", "--config", l.config}, args...), stdin, &out, &errw, l.env)
	return code, out.String(), errw.String()
}

func (l *opsLab) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	l.t.Cleanup(cancel)
	return ctx
}

// session registers host on a new lease, as its watchdog does.
func (l *opsLab) session(host string) lease.Holder {
	l.t.Helper()
	id, _, err := l.store.Grant(l.ctx(), 30*time.Second)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := l.store.Register(l.ctx(), lease.HostRecord{Host: host, Lease: id, PID: 1, Started: time.Now(), Version: "test"}); err != nil {
		l.t.Fatal(err)
	}
	return lease.Holder{Host: host, Lease: id}
}

// kill deletes host's hosts key: its session is no longer live, but the
// claims on its lease stay (as after a restore of etcd from a backup).
func (l *opsLab) kill(host string) {
	l.t.Helper()
	if _, err := l.cli.Delete(l.ctx(), l.store.Keys().Host(host)); err != nil {
		l.t.Fatal(err)
	}
}

func (l *opsLab) claim(h lease.Holder, uuid, name string, disks ...string) error {
	_, err := l.store.Claim(l.ctx(), h, lease.Claim{UUID: uuid, Name: name, Disks: disks, Start: true})
	return err
}

func (l *opsLab) exists(key string) bool {
	l.t.Helper()
	resp, err := l.cli.Get(l.ctx(), key)
	if err != nil {
		l.t.Fatal(err)
	}
	return len(resp.Kvs) > 0
}

func (l *opsLab) audits() []lease.Audit {
	l.t.Helper()
	a, err := l.store.Audits(l.ctx())
	if err != nil {
		l.t.Fatal(err)
	}
	return a
}

const (
	uuidWeb1 = "11111111-1111-1111-1111-111111111111"
	uuidDB1  = "22222222-2222-2222-2222-222222222222"
	uuidDupA = "33333333-3333-3333-3333-333333333333"
	uuidDupB = "44444444-4444-4444-4444-444444444444"
	uuidWeb9 = "99999999-9999-9999-9999-999999999999"
	uuidWebX = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
)

func TestStatusCommand(t *testing.T) {
	l := newOpsLab(t)
	a, b := l.session("host-a"), l.session("host-b")
	if err := l.claim(a, uuidWeb1, "web1", "rbd/pool/web1", "rbd/pool/shared"); err != nil {
		t.Fatal(err)
	}
	if err := l.claim(b, uuidDB1, "db1", "rbd/pool/db1"); err != nil {
		t.Fatal(err)
	}
	if code, _, errw := l.run(nil, "drain", "--new", "--host", "host-c"); code != 0 {
		t.Fatalf("drain host-c: exit %d %s", code, errw)
	}

	t.Run("table", func(t *testing.T) {
		code, out, errw := l.run(nil, "status")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errw)
		}
		for _, want := range []string{"host-a", "host-b", "alive", "host-c", "no session,draining", "web1", uuidWeb1,
			"rbd/pool/shared,rbd/pool/web1", "db1", "DRAINING", "alice@"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "(no session)") {
			t.Errorf("a live holder marked as without session:\n%s", out)
		}
	})
	t.Run("json", func(t *testing.T) {
		code, out, errw := l.run(nil, "status", "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errw)
		}
		var s struct {
			Hosts []struct {
				Host       string `json:"host"`
				Lease      string `json:"lease"`
				TTL        int64  `json:"ttl_seconds"`
				Registered bool   `json:"registered"`
				Draining   bool   `json:"draining"`
			} `json:"hosts"`
			Domains []struct {
				Name       string   `json:"name"`
				UUID       string   `json:"uuid"`
				Host       string   `json:"host"`
				Lease      string   `json:"lease"`
				Disks      []string `json:"disks"`
				HolderLive bool     `json:"holder_live"`
			} `json:"domains"`
			Drains map[string]lease.Drain `json:"drains"`
		}
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if len(s.Hosts) != 3 || s.Hosts[0].Host != "host-a" || s.Hosts[0].Lease != a.Lease.String() || !s.Hosts[0].Registered ||
			s.Hosts[0].TTL <= 0 || s.Hosts[2].Host != "host-c" || s.Hosts[2].Registered || !s.Hosts[2].Draining {
			t.Errorf("hosts: %+v", s.Hosts)
		}
		if len(s.Domains) != 2 || s.Domains[0].Name != "db1" || s.Domains[1].Name != "web1" || s.Domains[1].Host != "host-a" ||
			len(s.Domains[1].Disks) != 2 || !s.Domains[1].HolderLive || s.Domains[1].Lease != a.Lease.String() {
			t.Errorf("domains: %+v", s.Domains)
		}
		if d, ok := s.Drains["host-c"]; !ok || !strings.HasPrefix(d.By, "alice@") {
			t.Errorf("drains: %+v", s.Drains)
		}
	})
	filters := []struct {
		name     string
		args     []string
		code     int
		want     []string
		wantNot  []string
		wantErr  string
		jsonDoms int
	}{
		{"by host", []string{"--host", "host-a"}, 0, []string{"host-a", "web1"}, []string{"host-b", "db1", "host-c"}, "", 1},
		{"by name", []string{"web1"}, 0, []string{"web1", uuidWeb1}, []string{"db1", "LEASE"}, "", 1},
		{"by uuid, upper case", []string{strings.ToUpper(uuidDB1)}, 0, []string{"db1"}, []string{"web1"}, "", 1},
		{"domain on another host", []string{"--host", "host-a", "db1"}, 1, nil, []string{"db1"}, "domain db1 is not held by any host on host host-a", 0},
		{"unknown domain", []string{"nosuch"}, 1, nil, nil, "domain nosuch is not held by any host", 0},
		{"unknown host", []string{"--host", "host-z"}, 1, nil, nil, "host host-z is not known to etcd", 0},
		{"draining host without session", []string{"--host", "host-c"}, 0, []string{"host-c", "draining"}, []string{"web1"}, "", 0},
	}
	for _, f := range filters {
		t.Run(f.name, func(t *testing.T) {
			code, out, errw := l.run(nil, append([]string{"status"}, f.args...)...)
			if code != f.code || !strings.Contains(errw, f.wantErr) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, f.code, errw, f.wantErr)
			}
			for _, w := range f.want {
				if !strings.Contains(out, w) {
					t.Errorf("lacks %q:\n%s", w, out)
				}
			}
			for _, w := range f.wantNot {
				if strings.Contains(out, w) {
					t.Errorf("has %q:\n%s", w, out)
				}
			}
			_, out, _ = l.run(nil, append([]string{"status", "--json"}, f.args...)...)
			var s statusJSON
			if err := json.Unmarshal([]byte(out), &s); err != nil || len(s.Domains) != f.jsonDoms {
				t.Errorf("--json: %d domains (want %d), %v:\n%s", len(s.Domains), f.jsonDoms, err, out)
			}
		})
	}

	// A holder whose session is gone is marked: that is what release
	// --force is for.
	l.kill("host-b")
	_, out, _ := l.run(nil, "status", "db1")
	if !strings.Contains(out, "host-b (no session)") {
		t.Errorf("dead holder not marked:\n%s", out)
	}
}

func TestReleaseForce(t *testing.T) {
	l := newOpsLab(t)
	a, b, c := l.session("host-a"), l.session("host-b"), l.session("host-c")
	keys := l.store.Keys()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(l.claim(a, uuidWeb1, "web1", "rbd/pool/web1"))
	must(l.claim(b, uuidDB1, "db1", "rbd/pool/db1", "nbd/nas:10809/db1-log"))
	must(l.claim(c, uuidDupA, "dup", "rbd/pool/dup-a"))
	must(l.claim(c, uuidDupB, "dup", "rbd/pool/dup-b"))

	t.Run("usage", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"release", "web1"}, "release needs --force"},
			{[]string{"release", "--force"}, "needs a DOMAIN"},
			{[]string{"release", "--force", "--host", "host-a", "web1"}, "not both"},
			{[]string{"release", "--force", "web1", "db1"}, "one DOMAIN"},
		} {
			code, _, errw := l.run(nil, tc.args...)
			if code != 2 || !strings.Contains(errw, tc.want) || strings.Count(errw, "\n") != 1 {
				t.Errorf("%v: exit %d, %q; want 2 and one line with %q", tc.args, code, errw, tc.want)
			}
		}
	})

	t.Run("refused while the holder is alive", func(t *testing.T) {
		for _, args := range [][]string{{"web1"}, {"--yes", "web1"}, {"--yes", uuidWeb1}} {
			code, _, errw := l.run(nil, append([]string{"release", "--force"}, args...)...)
			if code != 1 || !strings.Contains(errw, "host host-a holds it on a live session") || !strings.Contains(errw, "--even-if-alive") {
				t.Errorf("%v: exit %d, %q", args, code, errw)
			}
		}
		if !l.exists(keys.Domain(uuidWeb1)) || !l.exists(keys.Disk("rbd/pool/web1")) || len(l.audits()) != 0 {
			t.Fatal("a refused release changed etcd")
		}
	})

	t.Run("even if alive", func(t *testing.T) {
		code, out, errw := l.run(nil, "release", "--force", "--even-if-alive", "--yes", "web1")
		if code != 0 || !strings.Contains(out, "released web1 ("+uuidWeb1+")") || !strings.Contains(errw, "warning: host host-a holds it on a live session") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errw)
		}
		if l.exists(keys.Domain(uuidWeb1)) || l.exists(keys.Disk("rbd/pool/web1")) {
			t.Fatal("keys left behind")
		}
		au := l.audits()
		if len(au) != 1 {
			t.Fatalf("%d audit records", len(au))
		}
		got := au[0]
		host, _ := os.Hostname()
		want := []string{keys.Domain(uuidWeb1), keys.Disk("rbd/pool/web1")}
		if got.Action != lease.ActionForceRelease || got.Domain != "web1" || got.UUID != uuidWeb1 || got.Host != "host-a" ||
			got.By != "alice@"+host || !got.EvenIfAlive || time.Since(got.At) > time.Minute || strings.Join(got.Keys, " ") != strings.Join(want, " ") {
			t.Errorf("audit record %+v", got)
		}
		// The record is plain JSON under audit/, sortable by time.
		resp, _ := l.cli.Get(l.ctx(), keys.Dir("audit"), clientv3.WithPrefix())
		if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != 0 || !strings.Contains(string(resp.Kvs[0].Value), `"even_if_alive":true`) ||
			!strings.HasPrefix(keys.Name(string(resp.Kvs[0].Key)), got.At.UTC().Format("2006-01-02T15:04:05.000000000Z")+"-") {
			t.Errorf("audit key %+v", resp.Kvs)
		}
		// The domain may start elsewhere now.
		if err := l.claim(b, uuidWeb1, "web1", "rbd/pool/web1"); err != nil {
			t.Errorf("claim after forced release: %v", err)
		}
	})

	t.Run("dead holder", func(t *testing.T) {
		l.kill("host-b")
		// Without a terminal and without --yes nobody confirmed.
		code, _, errw := l.run(nil, "release", "--force", "db1")
		if code != 2 || !strings.Contains(errw, "add --yes") {
			t.Fatalf("exit %d, %q", code, errw)
		}
		code, out, errw := l.run(nil, "release", "--force", "--yes", "db1")
		if code != 0 || strings.Count(out, "  deleted /virtlease/") != 3 || !strings.Contains(out, "held by host-b since") {
			t.Fatalf("exit %d, %q %q", code, out, errw)
		}
		for _, k := range []string{keys.Domain(uuidDB1), keys.Disk("rbd/pool/db1"), keys.Disk("nbd/nas:10809/db1-log")} {
			if l.exists(k) {
				t.Errorf("%s left behind", k)
			}
		}
		// host-b's other claim (web1, taken above) is not touched.
		if !l.exists(keys.Domain(uuidWeb1)) {
			t.Error("released a domain it was not asked to")
		}
		au := l.audits()
		if len(au) != 2 || au[1].UUID != uuidDB1 || au[1].EvenIfAlive || len(au[1].Keys) != 3 {
			t.Errorf("audit %+v", au)
		}
		code, _, errw = l.run(nil, "release", "--force", "--yes", "db1")
		if code != 1 || !strings.Contains(errw, `no domain named or with UUID "db1"`) {
			t.Errorf("second release: exit %d %q", code, errw)
		}
	})

	t.Run("ambiguous name", func(t *testing.T) {
		l.kill("host-c")
		code, _, errw := l.run(nil, "release", "--force", "--yes", "dup")
		if code != 1 || !strings.Contains(errw, `domain name "dup" is ambiguous`) || !strings.Contains(errw, uuidDupA) || !strings.Contains(errw, uuidDupB) {
			t.Fatalf("exit %d, %q", code, errw)
		}
		if code, _, errw := l.run(nil, "release", "--force", "--yes", uuidDupB); code != 0 {
			t.Fatalf("by UUID: exit %d %q", code, errw)
		}
		if !l.exists(keys.Domain(uuidDupA)) || !l.exists(keys.Disk("rbd/pool/dup-a")) || l.exists(keys.Disk("rbd/pool/dup-b")) {
			t.Error("released the wrong dup")
		}
	})
}

func TestReleaseForceUnfenced(t *testing.T) {
	l := newOpsLab(t)
	a := l.session("host-a")
	keys := l.store.Keys()
	// host-d's watchdog stopped with two guests running, and its session
	// has since expired: only the unfenced record keeps them from starting.
	err := l.store.SetUnfenced(l.ctx(), "host-d", lease.Unfenced{Since: time.Now(), Guests: []lease.UnfencedGuest{
		{UUID: uuidWeb9, Name: "web9", Disks: []string{"rbd/pool/web9"}},
		{UUID: uuidWebX, Name: "webx", Disks: []string{"rbd/pool/webx"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var held *lease.HeldError
	if err := l.claim(a, uuidWeb9, "web9", "rbd/pool/web9"); !errors.As(err, &held) {
		t.Fatalf("claim of an unfenced guest: %v", err)
	}

	code, out, errw := l.run(nil, "release", "--force", "--yes", "web9")
	if code != 0 || !strings.Contains(out, "  rewrote "+keys.Unfenced("host-d")+" (without web9)") {
		t.Fatalf("exit %d, %q %q", code, out, errw)
	}
	u, _, ok, err := l.store.GetUnfenced(l.ctx(), "host-d")
	if err != nil || !ok || len(u.Guests) != 1 || u.Guests[0].UUID != uuidWebX {
		t.Fatalf("unfenced record after release of web9: %+v %v %v", u, ok, err)
	}
	if err := l.claim(a, uuidWeb9, "web9", "rbd/pool/web9"); err != nil {
		t.Errorf("claim after release: %v", err)
	}
	if err := l.claim(a, uuidWebX, "webx", "rbd/pool/webx"); !errors.As(err, &held) {
		t.Errorf("webx is still unfenced: %v", err)
	}

	// A registered host is alive: its unfenced record is its watchdog's.
	l.session("host-d")
	if code, _, errw := l.run(nil, "release", "--force", "--yes", "--host", "host-d"); code != 1 || !strings.Contains(errw, "host host-d is still registered") {
		t.Fatalf("clear unfenced of a live host: exit %d %q", code, errw)
	}
	l.kill("host-d")
	code, out, errw = l.run(nil, "release", "--force", "--yes", "--host", "host-d")
	if code != 0 || !strings.Contains(out, "released the unfenced record of host host-d (audit record /virtlease/audit/") ||
		!strings.Contains(out, "  deleted "+keys.Unfenced("host-d")) {
		t.Fatalf("exit %d, %q %q", code, out, errw)
	}
	if l.exists(keys.Unfenced("host-d")) {
		t.Fatal("unfenced record left")
	}
	if err := l.claim(a, uuidWebX, "webx", "rbd/pool/webx"); err != nil {
		t.Errorf("claim after clearing: %v", err)
	}
	au := l.audits()
	if len(au) != 2 || au[1].Action != lease.ActionClearUnfenced || au[1].Host != "host-d" || au[1].Keys[0] != keys.Unfenced("host-d") {
		t.Errorf("audit %+v", au)
	}
	if code, _, errw := l.run(nil, "release", "--force", "--yes", "--host", "host-d"); code != 1 || !strings.Contains(errw, "has no unfenced record") {
		t.Errorf("again: exit %d %q", code, errw)
	}
}

func TestDrainUndrain(t *testing.T) {
	l := newOpsLab(t)
	a := l.session("host-a")
	keys := l.store.Keys()

	code, out, errw := l.run(nil, "drain", "--evacuate")
	if code != 0 || !strings.Contains(out, "host host-a is draining since") || !strings.Contains(out, "evacuated 0 HA guest(s) from host-a") {
		t.Fatalf("drain: exit %d %q %q", code, out, errw)
	}
	resp, err := l.cli.Get(l.ctx(), keys.Drain("host-a"))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease != 0 {
		t.Fatalf("drain key: %+v %v", resp, err)
	}
	var d lease.Drain
	if err := json.Unmarshal(resp.Kvs[0].Value, &d); err != nil || !d.Evacuate || !strings.HasPrefix(d.By, "alice@") || time.Since(d.Since) > time.Minute {
		t.Fatalf("drain record %s: %v", resp.Kvs[0].Value, err)
	}
	if code, out, _ := l.run(nil, "drain"); code != 0 || !strings.Contains(out, "was already draining") {
		t.Errorf("drain again: exit %d %q", code, out)
	}
	_, out, _ = l.run(nil, "status", "--host", "host-a")
	if !strings.Contains(out, "alive,draining") {
		t.Errorf("status does not show draining:\n%s", out)
	}

	err = l.claim(a, uuidWeb1, "web1", "rbd/pool/web1")
	var held *lease.HeldError
	if !errors.As(err, &held) || !strings.Contains(err.Error(), "host host-a is draining since ") ||
		!strings.Contains(err.Error(), "(by alice@") || !strings.Contains(err.Error(), "virtlease undrain --host host-a ends it") ||
		!strings.HasSuffix(err.Error(), "refusing to start web1 here") {
		t.Fatalf("start on a draining host: %v", err)
	}
	t.Logf("refusal reads: %v", err)
	// A running guest is still adopted (not a new start).
	if _, err := l.store.Claim(l.ctx(), a, lease.Claim{UUID: uuidDB1, Name: "db1"}); err != nil {
		t.Errorf("adopt on a draining host: %v", err)
	}

	code, out, errw = l.run(nil, "undrain")
	if code != 0 || !strings.Contains(out, "host host-a no longer draining") {
		t.Fatalf("undrain: exit %d %q %q", code, out, errw)
	}
	if err := l.claim(a, uuidWeb1, "web1", "rbd/pool/web1"); err != nil {
		t.Fatalf("start after undrain: %v", err)
	}
	if code, out, _ := l.run(nil, "undrain"); code != 0 || !strings.Contains(out, "was not draining") {
		t.Errorf("undrain again: exit %d %q", code, out)
	}
	if code, _, errw := l.run(nil, "drain", "host-b"); code != 2 || !strings.Contains(errw, "use --host HOST") {
		t.Errorf("drain with an argument: exit %d %q", code, errw)
	}
	// A misspelt --host is refused, not turned into a phantom drain.
	if code, out, errw := l.run(nil, "drain", "--host", "host-z"); code != 1 || !strings.Contains(errw, "no host host-z in etcd") ||
		!strings.Contains(errw, "known: host-a") {
		t.Errorf("drain --host of an unknown host: exit %d %q %q", code, out, errw)
	}
	if resp, err := l.cli.Get(l.ctx(), keys.Drain("host-z")); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("a drain record was written for an unknown host: %+v %v", resp, err)
	}
	l.session("host-b")
	if code, out, errw := l.run(nil, "drain", "--host", "host-b"); code != 0 || !strings.Contains(out, "host host-b is draining") {
		t.Errorf("drain --host of a known host: exit %d %q %q", code, out, errw)
	}
}

// openPTY returns a pseudo-terminal: what the test writes to master, a
// command reading term reads as typed on a real terminal.
func openPTY(t *testing.T) (master, term *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening the terminal side: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// On a terminal, release --force asks and acts only on yes.
func TestReleaseForceConfirm(t *testing.T) {
	l := newOpsLab(t)
	b := l.session("host-b")
	if err := l.claim(b, uuidWeb1, "web1", "rbd/pool/web1"); err != nil {
		t.Fatal(err)
	}
	l.kill("host-b")
	key := l.store.Keys().Domain(uuidWeb1)
	for _, tc := range []struct {
		answer string
		code   int
		gone   bool
	}{
		{"\n", 1, false},
		{"n\n", 1, false},
		{"yes please\n", 1, false},
		{"y\n", 0, true},
	} {
		master, term := openPTY(t)
		if _, err := master.WriteString(tc.answer); err != nil {
			t.Fatal(err)
		}
		code, out, errw := l.run(term, "release", "--force", "web1")
		if code != tc.code || l.exists(key) == tc.gone {
			t.Fatalf("answer %q: exit %d (want %d), key gone %v (want %v); %q %q", tc.answer, code, tc.code, !l.exists(key), tc.gone, out, errw)
		}
		if !strings.Contains(errw, "  will delete "+key) || !regexp.MustCompile(`Release web1 held by host-b since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\? \[y/N\] `).MatchString(errw) {
			t.Errorf("prompt: %q", errw)
		}
		if tc.code == 1 && !strings.Contains(errw, "not releasing web1 ("+uuidWeb1+"): not confirmed") {
			t.Errorf("refusal: %q", errw)
		}
	}
}
