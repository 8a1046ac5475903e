package fence

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/virtlease/virtlease/lease"
)

var update = flag.Bool("update", false, "rewrite the scenarios' log.expect files")

// The scenario simulator drives the real Watchdog decision code (resume,
// tick, handle, fence) on a fake boot clock against a model of etcd (leases
// that expire on that clock), a network that can drop, delay or lose
// replies, and fake guests. Each directory under testdata/scenarios has a
// README (what it shows), steps (timed faults) and log.expect (the golden
// event log; go test -run Scenario -update rewrites it). Real-etcd tests
// remain the proof; these pin the logic down, deterministically.
//
// The simulator checks the safety relation itself: whenever the model
// etcd expires a lease, no guest of that host may still be alive. A breach
// is logged as "VIOLATION" and fails the test, whatever log.expect says.
func TestScenarios(t *testing.T) {
	dirs, err := filepath.Glob("testdata/scenarios/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			steps, err := os.ReadFile(filepath.Join(dir, "steps"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
				t.Errorf("scenario without README: %v", err)
			}
			got, violations := simulate(t, string(steps))
			golden := filepath.Join(dir, "log.expect")
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run Scenarios -update to record it)", err)
			}
			if got != string(want) {
				t.Errorf("log differs from %s (go test -update rewrites it):\n%s", golden, diff(string(want), got))
			}
			if violations > 0 && !strings.Contains(string(steps), "expect-violation") {
				t.Errorf("%d safety violations", violations)
			}
		})
	}
}

type step struct {
	at   time.Duration
	verb string
	args []string
}

func parseSteps(t *testing.T, text string) (steps []step, end time.Duration) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		at, err := time.ParseDuration(f[0])
		if err != nil || len(f) < 2 {
			t.Fatalf("steps line %d: want DURATION VERB [ARGS]: %q", n, sc.Text())
		}
		if f[1] == "end" {
			end = at
			continue
		}
		steps = append(steps, step{at: at, verb: f[1], args: f[2:]})
	}
	if end == 0 {
		t.Fatal("steps: no end line")
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].at < steps[j].at })
	return steps, end
}

// sim is the world around one watchdog.
type sim struct {
	t   *testing.T
	now time.Duration
	log *strings.Builder

	// model etcd
	nextID  lease.ID
	expires map[lease.ID]time.Duration
	owner   lease.ID // the lease the guests run under

	// network
	partitioned bool
	dropReplies bool
	latency     time.Duration // one way
	replyDelay  time.Duration // extra, on the way back only

	// stale leader: until staleUntil, the client's round robin sends every
	// third request to the stopped leader (it hangs), the others to
	// followers, which forward to the stopped leader (and hang) until a new
	// leader is elected at electedAt.
	staleUntil, electedAt time.Duration
	rr                    int

	guests map[string]int // name → kill rounds it survives (-1: unkillable)
	// hidden guests run and hold keys, but the fence cannot see them (a
	// blind /proc scan).
	hidden   map[string]bool
	unfenced *lease.Unfenced
	// hardware watchdog device model
	device     bool // configured
	armed      bool // opened and not disarmed
	lastPet    time.Duration
	replies    []pending
	violations int
}

type pending struct {
	at time.Duration
	r  renewal
}

type simClock struct{ s *sim }

func (c simClock) Now() time.Duration                  { return c.s.now }
func (c simClock) After(time.Duration) <-chan struct{} { return nil }
func (s *sim) Running(context.Context) ([]Guest, error) {
	return slices.DeleteFunc(s.guestList(), func(g Guest) bool { return s.hidden[g.Name] }), nil
}
func (s *sim) guestList() []Guest {
	var gs []Guest
	for name := range s.guests {
		gs = append(gs, Guest{UUID: "uuid-" + name, Name: name, PID: 100 + int(name[len(name)-1]-'0')})
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].Name < gs[j].Name })
	return gs
}

func (s *sim) Kill(_ context.Context, gs []Guest) []Guest {
	var left []Guest
	for _, g := range gs {
		if n := s.guests[g.Name]; n != 0 {
			if n > 0 {
				s.guests[g.Name] = n - 1
			}
			left = append(left, g)
			continue
		}
		delete(s.guests, g.Name)
		delete(s.hidden, g.Name)
	}
	return left
}

// The Sessions calls the watchdog makes outside renewals answer at once,
// or fail at once while the network is partitioned.
func (s *sim) Grant(context.Context, time.Duration) (lease.ID, time.Duration, error) {
	panic("via launch")
}
func (s *sim) Renew(context.Context, lease.ID) (time.Duration, error) { panic("via launch") }
func (s *sim) Register(context.Context, lease.HostRecord) error       { panic("via launch") }
func (s *sim) etcdDown() error {
	if s.partitioned {
		return fmt.Errorf("%w: partitioned", lease.ErrUnavailable)
	}
	return nil
}
func (s *sim) Revoke(_ context.Context, id lease.ID) error {
	if err := s.etcdDown(); err != nil {
		return err
	}
	s.logf("etcd: lease %s revoked", id)
	// Its keys vanish at once: as at an expiry, no guest of ours may run.
	s.expires[id] = s.now
	s.checkExpiry()
	return nil
}
func (s *sim) Claim(_ context.Context, h lease.Holder, c lease.Claim) (lease.ClaimResult, error) {
	if err := s.etcdDown(); err != nil {
		return lease.ClaimResult{}, err
	}
	s.logf("etcd: %s claims %s", h, c.Name)
	return lease.ClaimResult{}, nil
}
func (s *sim) Release(context.Context, lease.Holder, string, []string, *lease.Intent) (int, error) {
	return 0, nil
}
func (s *sim) ReleaseStale(context.Context, lease.Holder, lease.DomainStatus) (int, error) {
	return 0, nil
}
func (s *sim) DropMigration(context.Context, lease.Holder, string) error { return nil }
func (s *sim) Holdings(ctx context.Context, h lease.Holder) (lease.Holdings, error) {
	ds, err := s.Held(ctx, h)
	return lease.Holdings{Domains: ds}, err
}
func (s *sim) Held(context.Context, lease.Holder) ([]lease.DomainStatus, error) {
	if err := s.etcdDown(); err != nil {
		return nil, err
	}
	var ds []lease.DomainStatus
	for _, g := range s.guestList() {
		ds = append(ds, lease.DomainStatus{Record: lease.Record{UUID: g.UUID, Name: g.Name}, Disks: []string{"disk-" + g.Name}})
	}
	return ds, nil
}
func (s *sim) SetUnfenced(_ context.Context, _ string, u lease.Unfenced) error {
	if err := s.etcdDown(); err != nil {
		return err
	}
	s.unfenced = &u
	s.logf("etcd: unfenced record written: %v", unfencedNames(u))
	return nil
}
func (s *sim) GetUnfenced(context.Context, string) (lease.Unfenced, int64, bool, error) {
	if err := s.etcdDown(); err != nil {
		return lease.Unfenced{}, 0, false, err
	}
	if s.unfenced == nil {
		return lease.Unfenced{}, 0, false, nil
	}
	return *s.unfenced, 1, true, nil
}
func (s *sim) ClearUnfenced(context.Context, string, int64) error {
	if err := s.etcdDown(); err != nil {
		return err
	}
	if s.unfenced != nil {
		s.logf("etcd: unfenced record deleted")
	}
	s.unfenced = nil
	return nil
}

// The sim is also the device: it resets the machine when not petted in time.
func (s *sim) Pet() error {
	s.armed, s.lastPet = true, s.now
	return nil
}
func (s *sim) Close(disarm bool) error {
	if disarm {
		s.armed = false
		s.logf("device: disarmed")
	}
	return nil
}

func unfencedNames(u lease.Unfenced) []string {
	var n []string
	for _, g := range u.Guests {
		n = append(n, g.Name)
	}
	return n
}

func (s *sim) logf(format string, a ...any) {
	fmt.Fprintf(s.log, "t=%-7s %s\n", fmt.Sprintf("%.3fs", s.now.Seconds()), fmt.Sprintf(format, a...))
}

// etcd processes a request at time p; it returns the reply.
func (s *sim) process(p time.Duration, r renewal, ttl time.Duration) renewal {
	if r.fresh {
		if r.id != 0 {
			delete(s.expires, r.id)
		}
		s.nextID++
		r.id = s.nextID
		s.expires[r.id] = p + ttl
		r.ttl = ttl
		s.owner = r.id
		return r
	}
	exp, ok := s.expires[r.id]
	if !ok || p >= exp {
		r.err = fmt.Errorf("%w: lease %s expired or was revoked", lease.ErrNoSession, r.id)
		return r
	}
	s.expires[r.id] = p + ttl
	r.ttl = ttl
	return r
}

// send models the network between the watchdog and etcd for one request.
func (s *sim) send(w *Watchdog, r renewal) {
	timeout := r.sent + 2*w.o.Config.RenewInterval
	unavailable := r
	unavailable.err = fmt.Errorf("renewing: %w", lease.ErrUnavailable)
	stuck := false
	if r.sent < s.staleUntil {
		stuck = s.rr%3 == 0 || r.sent < s.electedAt
		s.rr++
	}
	switch {
	case s.partitioned, stuck:
		s.replies = append(s.replies, pending{timeout, unavailable})
	default:
		reply := s.process(r.sent+s.latency, r, w.o.Config.TTL)
		at := r.sent + 2*s.latency + s.replyDelay
		if s.dropReplies || at > timeout {
			s.replies = append(s.replies, pending{timeout, unavailable})
		} else {
			s.replies = append(s.replies, pending{at, reply})
		}
	}
}

func (s *sim) newWatchdog(dir string) *Watchdog {
	h := slog.New(&simHandler{s: s})
	w := New(Options{Config: DefaultConfig(), Host: "host-a", Version: "sim", StateDir: dir, BootID: "boot",
		Clock: simClock{s}, Guests: s, Sessions: s, Log: h})
	if s.device {
		w.o.Device = s
		s.armed, s.lastPet = true, s.now // opening the device arms it
	}
	w.launch = func(r renewal) { s.send(w, r) }
	w.resume()
	w.nextRenew = s.now
	return w
}

func simulate(t *testing.T, text string) (string, int) {
	steps, end := parseSteps(t, text)
	s := &sim{t: t, log: &strings.Builder{}, expires: map[lease.ID]time.Duration{}, guests: map[string]int{}, hidden: map[string]bool{}}
	dir := t.TempDir()
	ctx := context.Background()
	for _, st := range steps {
		if st.at == 0 && st.verb == "device" {
			s.device = true
		}
	}
	w := s.newWatchdog(dir)
	wakeAt := time.Duration(0)
	for s.now <= end {
		// Apply everything due now, in a fixed order: steps, replies, expiry.
		for len(steps) > 0 && steps[0].at <= s.now {
			st := steps[0]
			steps = steps[1:]
			s.apply(st, &w, dir)
		}
		sort.SliceStable(s.replies, func(i, j int) bool { return s.replies[i].at < s.replies[j].at })
		for w != nil && len(s.replies) > 0 && s.replies[0].at <= s.now {
			r := s.replies[0]
			s.replies = s.replies[1:]
			if err := w.handle(ctx, r.r); err != nil {
				s.logf("watchdog stops: %v", err)
				return s.log.String(), s.violations
			}
		}
		if s.armed && s.now-s.lastPet >= DefaultConfig().DeviceTimeout() {
			s.logf("device: not petted for %v: machine reset, guests %v gone", s.now-s.lastPet, names(s.guestList()))
			s.guests, s.armed, s.replies, w = map[string]int{}, false, nil, nil
		}
		s.checkExpiry()
		wakeAt = end + 1
		if w != nil {
			w.tick(ctx, s.now)
			w.pet() // as Run does after every wake-up
			wakeAt = s.now + w.wake(s.now)
		}
		// Advance to the next event.
		next := end + 1
		if len(steps) > 0 {
			next = min(next, steps[0].at)
		}
		for _, r := range s.replies {
			next = min(next, r.at)
		}
		for _, exp := range s.expires {
			if exp > s.now {
				next = min(next, exp)
			}
		}
		if s.armed {
			next = min(next, s.lastPet+DefaultConfig().DeviceTimeout())
		}
		next = min(next, max(wakeAt, s.now+time.Millisecond))
		s.now = next
	}
	s.logf("end: guests running %v, leases %d", names(s.guestList()), len(s.expires))
	if w != nil && w.active.Load() != nil && s.unfenced != nil {
		// A watchdog with a session ok keeps no record of guests that no
		// longer run here: it would keep them from every other host, and
		// from HA restart, for good.
		for _, g := range s.unfenced.Guests {
			if _, ok := s.guests[g.Name]; !ok {
				s.violations++
				s.logf("STALE: our unfenced record still lists %s, which no longer runs here", g.Name)
			}
		}
	}
	return s.log.String(), s.violations
}

func (s *sim) checkExpiry() {
	for id, exp := range s.expires {
		if s.now < exp {
			continue
		}
		delete(s.expires, id)
		s.logf("etcd: lease %s expired; another host may start its guests now", id)
		// A guest our unfenced record lists is refused on every other
		// host: running it after the expiry is safe.
		var exposed []string
		for _, g := range s.guestList() {
			if s.unfenced == nil || !slices.Contains(unfencedNames(*s.unfenced), g.Name) {
				exposed = append(exposed, g.Name)
			}
		}
		if id == s.owner && len(exposed) > 0 {
			s.violations++
			s.logf("VIOLATION: guests %v still running on host-a, unprotected", exposed)
		}
	}
}

func (s *sim) apply(st step, w **Watchdog, dir string) {
	s.logf("step: %s %s", st.verb, strings.Join(st.args, " "))
	switch st.verb {
	case "guest":
		// guest NAME [unkillable | survives=N | hidden]: N kill rounds
		// survived (uninterruptible I/O), or none ever; or invisible to the
		// fence (and so never killed).
		n := 0
		if len(st.args) > 1 && st.args[1] == "unkillable" {
			n = -1
		} else if len(st.args) > 1 && st.args[1] == "hidden" {
			s.hidden[st.args[0]] = true
		} else if len(st.args) > 1 {
			if _, err := fmt.Sscanf(st.args[1], "survives=%d", &n); err != nil {
				s.t.Fatalf("guest %v: %v", st.args, err)
			}
		}
		s.guests[st.args[0]] = n
	case "stale-leader":
		// stale-leader FOR ELECTION: the etcd leader stops for FOR; a new
		// one is elected after ELECTION (add a leader-change step then).
		// The first request goes to a follower.
		d, err1 := time.ParseDuration(st.args[0])
		e, err2 := time.ParseDuration(st.args[1])
		if err := errors.Join(err1, err2); err != nil {
			s.t.Fatal(err)
		}
		s.staleUntil, s.electedAt, s.rr = s.now+d, s.now+e, 1
	case "partition":
		s.partitioned = true
	case "heal":
		s.partitioned, s.dropReplies, s.latency, s.replyDelay = false, false, 0, 0
	case "drop-replies":
		s.dropReplies = true
	case "latency":
		d, err := time.ParseDuration(st.args[0])
		if err != nil {
			s.t.Fatal(err)
		}
		s.latency = d
	case "reply-delay":
		d, err := time.ParseDuration(st.args[0])
		if err != nil {
			s.t.Fatal(err)
		}
		s.replyDelay = d
	case "leader-change":
		// A new leader restarts every lease's TTL: it only ever extends.
		for id := range s.expires {
			s.expires[id] = max(s.expires[id], s.now+DefaultConfig().TTL)
		}
	case "restart":
		// The watchdog process dies and comes back; replies in flight are lost.
		s.replies = nil
		*w = s.newWatchdog(dir)
	case "stop":
		// SIGTERM: the watchdog exits cleanly.
		(*w).stop()
		s.replies = nil
		*w = nil
	case "reboot":
		// The machine restarts: guests gone, /run (the state directory)
		// empty, and the watchdog starts afresh.
		s.guests, s.hidden, s.replies = map[string]int{}, map[string]bool{}, nil
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
		*w = s.newWatchdog(dir)
	case "crash":
		// kill -9: gone, nothing written.
		s.replies = nil
		*w = nil
	case "start":
		*w = s.newWatchdog(dir)
	case "device":
		// Configure a hardware watchdog device; takes effect at the next
		// watchdog start (put it at 0s to have it from the beginning).
		s.device = true
	case "expect-violation":
	default:
		s.t.Fatalf("unknown step %q", st.verb)
	}
}

func names(gs []Guest) []string {
	var n []string
	for _, g := range gs {
		n = append(n, g.Name)
	}
	return n
}

// simHandler writes the watchdog's log lines on the fake clock, attributes
// in order, so that the log is the same on every run.
type simHandler struct {
	s     *sim
	attrs []slog.Attr
}

func (h *simHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *simHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", strings.ToLower(r.Level.String()), r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.s.logf("%s", b.String())
	return nil
}
func (h *simHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &simHandler{h.s, append(h.attrs, as...)}
}
func (h *simHandler) WithGroup(string) slog.Handler { return h }

func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n- %s\n+ %s\n", i+1, a, c)
		}
	}
	return b.String()
}
