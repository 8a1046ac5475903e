package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Restartable is an HA domain whose intent says running and that runs
// nowhere: no domain key, no migration record, listed in no unfenced
// record. Its keys vanished with its holder's session (after that host
// fenced), so a surviving host may start it.
type Restartable struct {
	UUID   string
	Intent Intent
	Rev    int64 // the intent's ModRevision, compared when acting on it
	// ViewRev is the revision the view was read at: no unfenced record
	// may have changed since when the restart is counted.
	ViewRev int64
}

// HAView is what the HA restarters decide from, read at one revision.
type HAView struct {
	Revision    int64
	Restartable []Restartable
	Live        []string // live hosts that are not draining, sorted
	Failed      int      // intents that gave up (want "failed"): an operator must look
}

// HAView reads the intents and just enough of everything else to find the
// restartable domains, in two round trips whose cost grows with the number
// of HA intents and hosts, not with the number of guests: the intents and
// the (small) hosts, drain, migration and unfenced directories first, then
// the domain key of each intent that wants running, count only.
func (s *Store) HAView(ctx context.Context) (HAView, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.keys.Dir("intents"), clientv3.WithPrefix()),
		clientv3.OpGet(s.keys.Dir("migrations"), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.keys.Dir("unfenced"), clientv3.WithPrefix()),
		clientv3.OpGet(s.keys.Dir("hosts"), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.keys.Dir("drain"), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return HAView{}, s.wrap(err, "reading HA intents")
	}
	names := func(i int) map[string]bool {
		m := map[string]bool{}
		for _, kv := range resp.Responses[i].GetResponseRange().Kvs {
			m[s.keys.Name(string(kv.Key))] = true
		}
		return m
	}
	migrating, hosts, draining := names(1), names(3), names(4)
	unfenced := map[string]bool{}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		u, err := decode[Unfenced](string(kv.Key), kv.Value)
		if err != nil {
			// Fail closed, as Claim does: any guest may be listed there,
			// and a restart the claim then refuses only burns the count.
			return HAView{}, fmt.Errorf("no HA restart while an unfenced record is unreadable: %w", err)
		}
		for _, g := range u.Guests {
			unfenced[g.UUID] = true
		}
	}
	v := HAView{Revision: resp.Header.Revision}
	var want []Restartable
	var domains []string
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		uuid := s.keys.Name(string(kv.Key))
		in, err := decode[Intent](string(kv.Key), kv.Value)
		if err == nil && in.Want == WantFailed {
			v.Failed++
		}
		if err != nil || in.Want != WantRunning || migrating[uuid] || unfenced[uuid] {
			continue
		}
		want = append(want, Restartable{UUID: uuid, Intent: in, Rev: kv.ModRevision, ViewRev: resp.Header.Revision})
		domains = append(domains, s.keys.Domain(uuid))
	}
	held, err := s.getAll(ctx, domains, v.Revision, "reading the holders of HA domains", clientv3.WithCountOnly())
	if err != nil {
		return HAView{}, err
	}
	for i, r := range want {
		if held[i].GetResponseRange().Count == 0 {
			v.Restartable = append(v.Restartable, r)
		}
	}
	for h := range hosts {
		if !draining[h] {
			v.Live = append(v.Live, h)
		}
	}
	sort.Strings(v.Live)
	return v, nil
}

// maxTxnOps is how many operations virtlease puts in one Txn: etcd refuses
// a Txn of more than --max-txn-ops (default 128) with "too many operations
// in txn request".
const maxTxnOps = 100

// getAll reads keys (with opts) in Txns of at most maxTxnOps reads, all at
// revision rev, or, when rev is 0, at the revision of the first Txn. The
// responses come back in the order of keys.
func (s *Store) getAll(ctx context.Context, keys []string, rev int64, doing string, opts ...clientv3.OpOption) ([]*etcdserverpb.ResponseOp, error) {
	var rs []*etcdserverpb.ResponseOp
	for start := 0; start < len(keys); start += maxTxnOps {
		batch := make([]clientv3.Op, 0, maxTxnOps)
		for _, k := range keys[start:min(start+maxTxnOps, len(keys))] {
			o := opts
			if rev != 0 {
				o = append(slices.Clip(opts), clientv3.WithRev(rev))
			}
			batch = append(batch, clientv3.OpGet(k, o...))
		}
		resp, err := s.cli.Txn(ctx).Then(batch...).Commit()
		if err != nil {
			return nil, s.wrap(err, doing)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		rs = append(rs, resp.Responses...)
	}
	return rs, nil
}

// BeginRestart takes the next restart of r for h: it counts the restart in
// the intent, if the intent is unchanged since r was read, the domain is
// still held by nobody, no migration is recorded, no unfenced record has
// changed since the view (one may list the guest now) and h's session is
// live.
// Past maxRestarts within window the intent becomes failed instead
// (failed true) and nobody restarts it until an operator resets it.
// ok false means someone else acted first: look again.
func (s *Store) BeginRestart(ctx context.Context, h Holder, r Restartable, maxRestarts int, window time.Duration) (ok, failed bool, err error) {
	now := s.now().UTC().Truncate(time.Second)
	in := r.Intent
	if in.Window.IsZero() || now.Sub(in.Window) > window {
		in.Window, in.Restarts = now, 0
	}
	if in.Restarts >= maxRestarts {
		in.Want, failed = WantFailed, true
		in.Reason = fmt.Sprintf("gave up after %d restarts since %s (ha.max_restarts); last: %s", in.Restarts, in.Window.Format(time.RFC3339), in.Reason)
	} else {
		in.Restarts++
		in.Reason = "restarting on " + h.Host // fence's restartingOn
	}
	in.Since = now
	tr, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(s.keys.Intent(r.UUID)), "=", r.Rev),
		clientv3.Compare(clientv3.CreateRevision(s.keys.Domain(r.UUID)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(s.keys.Migration(r.UUID)), "=", 0),
		clientv3.Compare(clientv3.ModRevision(s.keys.Dir("unfenced")), "<", r.ViewRev+1).WithPrefix(),
		clientv3.Compare(clientv3.LeaseValue(s.keys.Host(h.Host)), "=", clientv3.LeaseID(h.Lease)),
	).Then(clientv3.OpPut(s.keys.Intent(r.UUID), encode(in))).Commit()
	if err != nil {
		return false, false, s.wrap(err, "recording the restart of "+in.Name)
	}
	return tr.Succeeded, failed && tr.Succeeded, nil
}

// NoteRestartFailure records why a restart attempt failed, keeping the
// intent running so the next candidate tries.
func (s *Store) NoteRestartFailure(ctx context.Context, uuid, reason string) error {
	key := s.keys.Intent(uuid)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return s.wrap(err, "reading "+key)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	in, err := decode[Intent](key, resp.Kvs[0].Value)
	if err != nil || in.Want != WantRunning {
		return err
	}
	in.Reason = reason
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, encode(in))).Commit()
	return s.wrap(err, "writing "+key)
}

// ErrIntentStopped is ResetIntent's refusal of an intent a deliberate stop
// wrote: resetting it would start a guest someone shut down.
var ErrIntentStopped = errors.New("lease: the HA intent is stopped (a deliberate stop), not failed")

// ResetIntent sets a domain's intent back to running with no restarts
// counted (an operator's `virtlease ha reset` after a failed intent).
//
// Outcomes:
//   - nil: the intent is running, with no restarts counted;
//   - ErrIntentStopped (wrapped): the intent is stopped and evenIfStopped
//     is false; nothing changed;
//   - an error naming the domain: it has no intent, or etcd failed.
func (s *Store) ResetIntent(ctx context.Context, uuid string, evenIfStopped bool) error {
	key := s.keys.Intent(uuid)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return s.wrap(err, "reading "+key)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("lease: domain %s has no HA intent", uuid)
	}
	in, err := decode[Intent](key, resp.Kvs[0].Value)
	if err != nil {
		return err
	}
	if in.Want == WantStopped && !evenIfStopped {
		return fmt.Errorf("%w (%s since %s): resetting it would start the guest", ErrIntentStopped, in.Reason, in.Since.Format(time.RFC3339))
	}
	in.Want, in.Restarts, in.Window, in.Reason = WantRunning, 0, time.Time{}, "reset by an operator"
	in.Since = s.now().UTC().Truncate(time.Second)
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, encode(in))).Commit()
	if err != nil {
		return s.wrap(err, "writing "+key)
	}
	return nil
}

// Intent reads uuid's HA intent; nil when it has none (not an HA domain,
// or never started as one).
func (s *Store) Intent(ctx context.Context, uuid string) (*Intent, error) {
	key := s.keys.Intent(uuid)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, s.wrap(err, "reading "+key)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	in, err := decode[Intent](key, resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	return &in, nil
}

// StopWhileAway records the clean stop of uuid on host made while host's
// watchdog was away long enough for its session to expire, so that no
// release could carry the intent: the intent becomes stopped. Only in one
// compare-and-swap that also requires host's unfenced record, which kept
// the guest from every other host meanwhile, to be as read at unfencedRev,
// the intent to be running and unchanged, and nobody to hold the domain.
// It returns the intent's since when it changed, as a clean stop's marker
// needs it (MarkCrashed); ok false: not an HA domain, or someone acted.
func (s *Store) StopWhileAway(ctx context.Context, host, uuid string, unfencedRev int64) (since time.Time, ok bool, err error) {
	key := s.keys.Intent(uuid)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return time.Time{}, false, s.wrap(err, "reading "+key)
	}
	if len(resp.Kvs) == 0 {
		return time.Time{}, false, nil
	}
	in, err := decode[Intent](key, resp.Kvs[0].Value)
	if err != nil || in.Want != WantRunning {
		return time.Time{}, false, err
	}
	in = StoppedIntent(in, host, s.now())
	tr, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision),
		clientv3.Compare(clientv3.CreateRevision(s.keys.Domain(uuid)), "=", 0),
		clientv3.Compare(clientv3.ModRevision(s.keys.Unfenced(host)), "=", unfencedRev),
	).Then(clientv3.OpPut(key, encode(in))).Commit()
	if err != nil {
		return time.Time{}, false, s.wrap(err, "writing "+key)
	}
	return in.Since, tr.Succeeded, nil
}

// StoppedBy is the Reason the hook writes with a clean stop's intent.
func StoppedBy(host string) string { return "stopped on " + host }

// CrashedOnPrefix starts the Reason MarkCrashed writes: CrashedOn(host).
const CrashedOnPrefix = "crashed on "

// CrashedOn is the Reason of an intent MarkCrashed set back to running.
func CrashedOn(host string) string { return CrashedOnPrefix + host }

// MarkCrashed sets an HA intent back to running after its guest's QEMU
// died on host without anyone asking (libvirt's shutoff reason crashed or
// failed): the hook, which cannot tell a crash from a destroy, recorded the
// stop as clean (want: stopped, reason StoppedBy(host), since stoppedAt).
// Only that very intent is changed, in one compare-and-swap, and only
// while no host holds the domain: a later stop, start or `ha reset`, here
// or elsewhere, wins. It reports whether the intent changed.
func (s *Store) MarkCrashed(ctx context.Context, uuid, host string, stoppedAt time.Time) (bool, error) {
	key := s.keys.Intent(uuid)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return false, s.wrap(err, "reading "+key)
	}
	if len(resp.Kvs) == 0 {
		return false, nil
	}
	in, err := decode[Intent](key, resp.Kvs[0].Value)
	if err != nil {
		return false, err
	}
	if in.Want != WantStopped || in.Reason != StoppedBy(host) || !in.Since.Equal(stoppedAt) {
		return false, nil
	}
	in.Want, in.Reason = WantRunning, CrashedOn(host)
	in.Since = s.now().UTC().Truncate(time.Second)
	tr, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision),
		clientv3.Compare(clientv3.CreateRevision(s.keys.Domain(uuid)), "=", 0),
	).Then(clientv3.OpPut(key, encode(in))).Commit()
	if err != nil {
		return false, s.wrap(err, "writing "+key)
	}
	return tr.Succeeded, nil
}
