package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// retries bounds the optimistic read-decide-write loops. A conflict means
// another host wrote one of our keys between our read and our Txn; a few
// rounds settle any real race, and the caller's deadline bounds the rest.
const retries = 8

// Store is the lease protocol over one etcd client. It is the only code in
// virtlease that reads or writes etcd keys. Every method takes a context: the
// etcd client does not bound calls on its own (dial_timeout does not bound
// connection set-up), so callers must always pass a deadline.
type Store struct {
	cli  *clientv3.Client
	keys Keys
	now  func() time.Time
}

// NewStore returns a Store for the keys under prefix ("" means DefaultPrefix).
func NewStore(cli *clientv3.Client, prefix string) *Store {
	return &Store{cli: cli, keys: NewKeys(prefix), now: time.Now}
}

// Keys returns the key layout the store uses.
func (s *Store) Keys() Keys { return s.keys }

// Claim is everything one domain start takes: its domain key and one key
// per writable disk.
type Claim struct {
	UUID  string
	Name  string
	Disks []string // disk IDs, unescaped
	// Intent, when not nil, is written to PREFIX/intents/UUID in the same
	// Txn as the keys (HA domains: want running).
	Intent *Intent
	// Start marks a new start (prepare), as opposed to adopting a running
	// guest: a draining host refuses new starts only.
	Start bool
	// IncomingFrom is the source host of a live migration to this host:
	// keys it holds for this domain are accepted (and left to it until the
	// hand-off) provided PREFIX/migrations/UUID records from it to us, on
	// our session. The claim marks that record prepared, in its Txn: only
	// then does the source's stop hand the keys over.
	IncomingFrom string
	// IncomingRev binds an incoming claim to one migration: the
	// CreateRevision of the record RecordMigration wrote (it returns it).
	// A record created since, for another migration, does not count. 0
	// accepts any record from IncomingFrom to us.
	IncomingRev int64
	// Unprotected is a domain with mode="off": it claims nothing and
	// needs no session, but is still refused over another's claim (any
	// key held by another host or another domain, a migration, an
	// unfenced record). Only Check takes it.
	Unprotected bool
	// Restore, when not nil, marks the start of a saved state's restore:
	// refused (*RestoreError) unless CheckRestore allows it against the
	// runs record this very Txn compares.
	Restore *Restore
}

// ClaimResult says what a successful Claim did.
type ClaimResult struct {
	Written int // keys this claim took (0: all were mine already)
	// Pending counts keys left to an incoming migration's source: they
	// become ours at its hand-off (0 when every key is ours).
	Pending  int
	Revision int64
	// Prior is the HA intent this claim found (nil: none), which a claim
	// with an Intent replaced: a start that fails before its guest runs
	// puts it back (StopFailedStart).
	Prior *Intent
	// Run is the start a Start claim recorded in PREFIX/runs/UUID, or the
	// run an incoming migration's claim continues (the source's, which
	// the hand-off moves here): its host must remember it to restore a
	// state saved at the end of this run. nil for other claims.
	Run *Run
}

// Claim takes the domain key and every disk key of c for h, all or nothing.
//
// Outcomes:
//   - nil: every key now names h (idempotent: keys already mine are
//     left as they are, but for a start (c.Start), which writes them
//     again with a fresh since);
//   - *HeldError: a key is held by another host or another domain; nothing was written;
//   - *HeldError matching ErrNotIncoming: c.IncomingFrom names a migration etcd
//     does not record (not from that host, not to h on h's lease, or another
//     record than c.IncomingRev); nothing was written;
//   - *RestoreError: c.Restore is set and another start was recorded since; nothing was written;
//   - ErrNoSession: h's session is not live (its hosts key is gone or on another lease);
//   - ErrUnavailable (wrapped): etcd did not answer before ctx ended;
//   - ErrConflict: the keys kept changing through every retry.
//
// It is optimistic: one Txn reads every key at one revision, then one Txn
// writes the keys that are not yet mine, if none of them changed
// (ModRevision as read, 0 when absent) and h's hosts key still carries h's
// lease. The write's Else branch reads the keys again, so a lost race costs
// no extra round trip. A start (c.Start) also bumps PREFIX/runs/UUID in that
// Txn, comparing its ModRevision, so two starts never get one Run.
func (s *Store) Claim(ctx context.Context, h Holder, c Claim) (ClaimResult, error) {
	if c.Unprotected {
		return ClaimResult{}, fmt.Errorf("lease: domain %s is not protected (mode=\"off\"): it is checked, never claimed", c.Name)
	}
	keys, err := s.claimKeysOf(c)
	if err != nil {
		return ClaimResult{}, err
	}
	reads := s.claimReads(h, keys)
	resp, err := s.readClaim(ctx, reads)
	if err != nil {
		return ClaimResult{}, s.wrap(err, "reading the claim of domain "+c.Name)
	}
	// tried is the run our last Txn tried to record: after a Txn that may
	// or may not have landed, finding it there means it did.
	var tried *Run
	for range retries {
		if c.Restore != nil {
			// Our own write, if it landed, was checked by its Txn.
			r := *c.Restore
			r.tried = tried
			c.Restore = &r
		}
		state, err := s.decide(h, keys, c, resp.Responses)
		if err != nil {
			return ClaimResult{}, err
		}
		landed := tried != nil && state.run != nil && state.run.same(*tried)
		var cmps []clientv3.Cmp
		var puts []clientv3.Op
		written := 0
		since := s.now().UTC().Truncate(time.Second)
		for i, k := range keys {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.key), "=", state.modRev[i]))
			if slices.Contains(state.keep, i) {
				continue // the migration source's (check refused anything else)
			}
			if state.recs[i] != nil && !c.Start {
				continue // mine already: an adoption leaves it as it is
			}
			// A start rewrites keys that are mine already (stale ones of
			// an earlier run), so their ModRevision moves: a release of
			// stale keys that looked before this start (ReleaseStale)
			// then leaves them alone.
			if state.recs[i] == nil {
				written++
			}
			rec := Record{Host: h.Host, UUID: c.UUID, Name: c.Name, Lease: h.Lease, Since: since}
			puts = append(puts, clientv3.OpPut(k.key, encode(rec), clientv3.WithLease(clientv3.LeaseID(h.Lease))))
		}
		if state.incoming && !state.mig.Prepared {
			// The destination claims: from now on the source's stop hands
			// its keys over (and only now: see Migration.Prepared).
			m := *state.mig
			m.Prepared = true
			puts = append(puts, clientv3.OpPut(s.keys.Migration(c.UUID), encode(m), clientv3.WithLease(clientv3.LeaseID(h.Lease))))
		}
		cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(s.keys.Host(h.Host)), "=", clientv3.LeaseID(h.Lease)),
			clientv3.Compare(clientv3.ModRevision(s.keys.Migration(c.UUID)), "=", state.migRev),
			// No migration record written since the read: a new one
			// could list one of our disks.
			clientv3.Compare(clientv3.ModRevision(s.keys.Dir("migrations")), "<", resp.Header.Revision+1).WithPrefix())
		var run *Run
		if state.incoming && state.run != nil && state.run.Host == c.IncomingFrom {
			// A live migration continues the source's run: the hand-off
			// moves the record here under the same sequence number.
			run = &Run{Host: h.Host, Seq: state.run.Seq, Since: since}
		}
		if c.Start {
			run = tried
			if !landed {
				run = state.nextRun(h.Host, since)
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.keys.Run(c.UUID)), "=", state.runRev))
				puts = append(puts, clientv3.OpPut(s.keys.Run(c.UUID), encode(*run)))
			}
		}
		if c.Intent != nil {
			in := *c.Intent
			if old := state.intent; old != nil && old.Want == WantRunning {
				// A start by the HA restarter: keep its restart count,
				// which bounds restarts per window.
				in.Restarts, in.Window = old.Restarts, old.Window
			}
			puts = append(puts, clientv3.OpPut(s.keys.Intent(c.UUID), encode(in)))
		}
		if len(puts) == 0 {
			return ClaimResult{Pending: len(state.keep), Revision: resp.Header.Revision, Run: run, Prior: state.intent}, nil
		}
		if c.Start {
			tried = run // an incoming claim's run is the source's: not written here
		}
		resp, err = s.cli.Txn(ctx).If(cmps...).Then(puts...).Else(reads...).Commit()
		if transient(err) && ctx.Err() == nil {
			// A leader change: the write was dropped, or may have landed.
			// Read again and decide from what is there (keys that are
			// mine already are not written twice).
			if resp, err = s.readClaim(ctx, reads); err == nil {
				continue
			}
		}
		if err != nil {
			return ClaimResult{}, s.wrap(err, "claiming domain "+c.Name)
		}
		if resp.Succeeded {
			return ClaimResult{Written: written, Pending: len(state.keep), Revision: resp.Header.Revision, Run: run, Prior: state.intent}, nil
		}
		// Else ran the reads: decide again from what is there now.
		resp = &clientv3.TxnResponse{Header: resp.Header, Responses: resp.Responses}
	}
	return ClaimResult{}, fmt.Errorf("claiming domain %s: %w", c.Name, ErrConflict)
}

// Check decides c for h as Claim would, from one read of the same keys at
// one revision, and writes nothing: "would this start be allowed now?".
// A Claim right after may still be refused (the keys can change in
// between); a Check never takes anything.
//
// Outcomes: as Claim (nil: Claim would succeed now; *HeldError;
// ErrNoSession; ErrUnavailable, wrapped), but never ErrConflict. For
// c.Unprotected (mode="off") h needs no session: only h.Host is used.
func (s *Store) Check(ctx context.Context, h Holder, c Claim) error {
	keys, err := s.claimKeysOf(c)
	if err != nil {
		return err
	}
	resp, err := s.readClaim(ctx, s.claimReads(h, keys))
	if err != nil {
		return s.wrap(err, "reading the claim of domain "+c.Name)
	}
	_, err = s.decide(h, keys, c, resp.Responses)
	return err
}

// decide is the one decision of Claim and Check over one read of the
// claim's keys (claimReads).
func (s *Store) decide(h Holder, keys []claimKey, c Claim, rs []*etcdserverpb.ResponseOp) (claimState, error) {
	st, err := s.readClaimState(h, keys, rs)
	if err != nil {
		return st, err
	}
	return st, st.check(s.keys, h, c)
}

// claimKeysOf is claimKeys for c, within what one Txn takes.
func (s *Store) claimKeysOf(c Claim) ([]claimKey, error) {
	keys := s.claimKeys(c.UUID, c.Disks)
	if len(keys)-1 > MaxClaimDisks {
		return nil, fmt.Errorf("lease: domain %s has %d writable shared disks; one claim holds at most %d (a domain and its disks are claimed in one etcd transaction, and etcd takes at most 128 operations in one by default)",
			c.Name, len(keys)-1, MaxClaimDisks)
	}
	return keys, nil
}

type claimKey struct {
	key  string
	disk string // "" for the domain key
}

func (s *Store) claimKeys(uuid string, disks []string) []claimKey {
	keys := []claimKey{{key: s.keys.Domain(uuid)}}
	seen := map[string]bool{}
	for _, d := range disks {
		if seen[d] {
			continue
		}
		seen[d] = true
		keys = append(keys, claimKey{key: s.keys.Disk(d), disk: d})
	}
	return keys
}

// claimReads reads, in this order: every claim key, h's hosts key, h's
// drain key, every unfenced record, the migration records, the domain's
// intent and its runs record.
func (s *Store) claimReads(h Holder, keys []claimKey) []clientv3.Op {
	ops := make([]clientv3.Op, 0, len(keys)+extraReads)
	for _, k := range keys {
		ops = append(ops, clientv3.OpGet(k.key))
	}
	return append(ops,
		clientv3.OpGet(s.keys.Host(h.Host)),
		clientv3.OpGet(s.keys.Drain(h.Host)),
		clientv3.OpGet(s.keys.Dir("unfenced"), clientv3.WithPrefix()),
		clientv3.OpGet(s.keys.Dir("migrations"), clientv3.WithPrefix()),
		clientv3.OpGet(s.keys.Intent(s.keys.Name(keys[0].key))),
		clientv3.OpGet(s.keys.Run(s.keys.Name(keys[0].key))))
}

// extraReads is how many reads claimReads adds after the claim keys.
const extraReads = 6

// MaxClaimDisks is how many disks one claim may hold: its Txn reads (or
// compares) every key plus extraReads, and writes every key plus an intent
// and a runs record, within etcd's default --max-txn-ops of 128.
const MaxClaimDisks = 128 - 1 - extraReads - 2

type claimState struct {
	keys     []claimKey
	modRev   []int64
	recs     []*Record // nil when absent
	host     *mvccpb.KeyValue
	drain    *Drain
	unfenced map[string]Unfenced // by host
	mig      *Migration
	migRev   int64
	// migCreate and migLease are the record's CreateRevision and the
	// lease it is attached to.
	migCreate int64
	migLease  ID
	// incoming: the claim is the recorded incoming migration (check).
	incoming bool
	keep     []int // keys left to a migration's source (not written)
	intent   *Intent
	run      *Run // the domain's runs record; nil when absent
	runRev   int64
	runErr   error // the runs record is not one: only a start must care
	// otherMigs are the migrations of other domains: their disks are
	// theirs while the record exists.
	otherMigs []otherMigration
}

type otherMigration struct {
	uuid string
	m    Migration
}

func (s *Store) readClaimState(h Holder, keys []claimKey, rs []*etcdserverpb.ResponseOp) (claimState, error) {
	st := claimState{keys: keys, modRev: make([]int64, len(keys)), recs: make([]*Record, len(keys)), unfenced: map[string]Unfenced{}}
	if len(rs) != len(keys)+extraReads {
		return st, fmt.Errorf("lease: etcd answered %d reads, asked %d", len(rs), len(keys)+extraReads)
	}
	for i, k := range keys {
		kvs := rs[i].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue
		}
		rec, err := decode[Record](k.key, kvs[0].Value)
		if err != nil {
			return st, err
		}
		st.modRev[i] = kvs[0].ModRevision
		st.recs[i] = &rec
	}
	if kvs := rs[len(keys)].GetResponseRange().Kvs; len(kvs) > 0 {
		st.host = kvs[0]
	}
	if kvs := rs[len(keys)+1].GetResponseRange().Kvs; len(kvs) > 0 {
		d, err := decode[Drain](string(kvs[0].Key), kvs[0].Value)
		if err != nil {
			return st, err
		}
		st.drain = &d
	}
	for _, kv := range rs[len(keys)+2].GetResponseRange().Kvs {
		u, err := decode[Unfenced](string(kv.Key), kv.Value)
		if err != nil {
			// It may list a guest still running on that host, and says
			// nothing of which: every start must wait for an operator.
			return st, fmt.Errorf("%w; no host starts guests while it is unreadable, since it may list guests still running on host %s: once that host is known to be down, virtlease release --force --host %s deletes it",
				err, s.keys.Name(string(kv.Key)), s.keys.Name(string(kv.Key)))
		}
		st.unfenced[s.keys.Name(string(kv.Key))] = u
	}
	for _, kv := range rs[len(keys)+3].GetResponseRange().Kvs {
		m, err := decode[Migration](string(kv.Key), kv.Value)
		if err != nil {
			return st, fmt.Errorf("%w; no host starts guests while it is unreadable, since it may list disks of a migration in flight: inspect it with etcdctl get %s and delete it once no migration of domain %s runs",
				err, kv.Key, s.keys.Name(string(kv.Key)))
		}
		if string(kv.Key) == s.keys.Migration(s.keys.Name(keys[0].key)) {
			st.mig, st.migRev, st.migCreate, st.migLease = &m, kv.ModRevision, kv.CreateRevision, ID(kv.Lease)
			continue
		}
		st.otherMigs = append(st.otherMigs, otherMigration{uuid: s.keys.Name(string(kv.Key)), m: m})
	}
	if kvs := rs[len(keys)+4].GetResponseRange().Kvs; len(kvs) > 0 {
		in, err := decode[Intent](string(kvs[0].Key), kvs[0].Value)
		if err == nil {
			st.intent = &in
		}
	}
	if kvs := rs[len(keys)+5].GetResponseRange().Kvs; len(kvs) > 0 {
		r, err := decode[Run](string(kvs[0].Key), kvs[0].Value)
		st.run, st.runRev, st.runErr = &r, kvs[0].ModRevision, err
	}
	return st, nil
}

// nextRun is the runs record a start by host writes: the next sequence
// number after the one read.
func (st *claimState) nextRun(host string, since time.Time) *Run {
	r := &Run{Host: host, Seq: 1, Since: since}
	if st.run != nil {
		r.Seq = st.run.Seq + 1
	}
	return r
}

func drainedBy(d *Drain) string {
	if d.By == "" {
		return ""
	}
	return " (by " + d.By + ")"
}

// check refuses the claim unless every key is absent or mine and h may start
// guests. On success it leaves in st.recs only the records that are mine.
//
// An unprotected domain (mode="off") needs no session and ignores drain:
// it only must not start over another's claim.
func (st *claimState) check(keys Keys, h Holder, c Claim) error {
	if !c.Unprotected && (st.host == nil || ID(st.host.Lease) != h.Lease) {
		return fmt.Errorf("%w: %s is missing or on another lease", ErrNoSession, keys.Host(h.Host))
	}
	if c.Start && st.drain != nil && !c.Unprotected {
		return &HeldError{Key: keys.Drain(h.Host), Want: c.Name,
			Why: fmt.Sprintf("host %s is draining since %s%s and takes no new guests (virtlease undrain --host %s ends it)",
				h.Host, st.drain.Since.UTC().Format(time.RFC3339), drainedBy(st.drain), h.Host)}
	}
	if c.Start && st.runErr != nil {
		return st.runErr
	}
	if r := c.Restore; r != nil && !(r.tried != nil && st.run != nil && st.run.same(*r.tried)) {
		if err := CheckRestore(c.Name, h.Host, st.run, r.Mine); err != nil {
			return err
		}
	}
	incoming := c.IncomingFrom != "" && st.mig != nil && st.mig.From == c.IncomingFrom && st.mig.To == h.Host &&
		st.migLease == h.Lease && (c.IncomingRev == 0 || c.IncomingRev == st.migCreate)
	if c.IncomingFrom != "" && !incoming {
		return &HeldError{Key: keys.Migration(c.UUID), Want: c.Name, notIncoming: true,
			Why: fmt.Sprintf("no migration of %s from host %s to host %s is recorded in etcd (for this migration, on this host's session)", c.Name, c.IncomingFrom, h.Host)}
	}
	st.incoming = incoming
	if st.mig != nil && st.mig.To != h.Host && (c.Start || st.mig.From != h.Host) { // the source keeps its running guest until the hand-off
		return &HeldError{Key: keys.Migration(c.UUID), Want: c.Name,
			Why: fmt.Sprintf("domain %s (%s) is being migrated from host %s to host %s since %s", c.Name, c.UUID, st.mig.From, st.mig.To, st.mig.Since.UTC().Format(time.RFC3339))}
	}
	for _, om := range st.otherMigs {
		for _, d := range c.Disks {
			if slices.Contains(om.m.Disks, d) {
				return &HeldError{Key: keys.Migration(om.uuid), Want: c.Name,
					Why: fmt.Sprintf("disk %s belongs to domain %s, being migrated from host %s to host %s since %s",
						d, om.uuid, om.m.From, om.m.To, om.m.Since.UTC().Format(time.RFC3339))}
			}
		}
	}
	for i, k := range st.keys {
		rec := st.recs[i]
		if rec == nil {
			continue
		}
		if incoming && rec.Host == c.IncomingFrom && rec.UUID == c.UUID {
			// The source's, until it hands the keys over.
			st.recs[i] = nil
			st.keep = append(st.keep, i)
			continue
		}
		if c.Unprotected && rec.Host == h.Host && rec.UUID == c.UUID {
			// This host's own (stale) claim of this domain: not another's.
			st.recs[i] = nil
			continue
		}
		if !rec.heldBy(h, c.UUID) {
			return &HeldError{Key: k.key, Disk: k.disk, Want: c.Name, Held: *rec}
		}
	}
	for host, u := range st.unfenced {
		if host == h.Host {
			continue // our own record: the returning watchdog re-claims these
		}
		for _, g := range u.Guests {
			if g.UUID == c.UUID {
				return &HeldError{Key: keys.Unfenced(host), Want: c.Name,
					Why: fmt.Sprintf("domain %s (%s) may still run on host %s, whose watchdog stopped at %s without fencing it (virtlease release --force clears this once the host is known to be down)",
						g.Name, g.UUID, host, u.Since.UTC().Format(time.RFC3339))}
			}
			for _, d := range g.Disks {
				if slices.Contains(c.Disks, d) {
					return &HeldError{Key: keys.Unfenced(host), Want: c.Name,
						Why: fmt.Sprintf("disk %s may still be in use by domain %s on host %s, whose watchdog stopped at %s without fencing it",
							d, g.Name, host, u.Since.UTC().Format(time.RFC3339))}
				}
			}
		}
	}
	return nil
}

// Release deletes the domain key and the disk keys of uuid that are mine:
// naming h's host, h's lease and this uuid. Keys held by anyone else, or by
// another domain of this host (a copied XML refused here), are left alone.
// It returns how many keys it deleted.
//
// intent, when not nil, is written to PREFIX/intents/UUID in the same Txn,
// and only if at least the domain key was mine (a clean stop of an HA guest).
func (s *Store) Release(ctx context.Context, h Holder, uuid string, disks []string, intent *Intent) (int, error) {
	return s.release(ctx, h, uuid, disks, intent, 0)
}

// ReleaseStale is Release for the keys of a domain that h's Holdings
// listed as d and that libvirt then reported inactive here: keys written
// since Holdings read them are left alone. A start between that look and
// this release writes every key of the domain again (Claim with Start), so
// its keys survive; without it the release would delete the keys of a
// guest that just started, and another host could start it too.
//
// intent, when not nil, is written as Release writes it: only with the
// domain key, so not when a start claimed it again.
//
// Outcomes: as Release; keys claimed again since d was read are kept and
// not counted.
func (s *Store) ReleaseStale(ctx context.Context, h Holder, d DomainStatus, intent *Intent) (int, error) {
	if d.Revision == 0 {
		return 0, fmt.Errorf("releasing domain %s: no revision to compare against (not listed by Holdings)", d.UUID)
	}
	return s.release(ctx, h, d.UUID, d.Disks, intent, d.Revision)
}

// release is Release that, when notAfter is not 0, deletes only keys last
// written at or before revision notAfter.
func (s *Store) release(ctx context.Context, h Holder, uuid string, disks []string, intent *Intent, notAfter int64) (int, error) {
	keys := s.claimKeys(uuid, disks)
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpGet(k.key)
	}
	for range retries {
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return 0, s.wrap(err, "reading keys of domain "+uuid)
		}
		var cmps []clientv3.Cmp
		var dels []clientv3.Op
		domainMine := false
		for i, k := range keys {
			kvs := resp.Responses[i].GetResponseRange().Kvs
			if len(kvs) == 0 {
				continue
			}
			rec, err := decode[Record](k.key, kvs[0].Value)
			if err != nil || !rec.heldBy(h, uuid) || ID(kvs[0].Lease) != h.Lease {
				continue
			}
			if notAfter != 0 && kvs[0].ModRevision > notAfter {
				continue // claimed again since the caller looked
			}
			domainMine = domainMine || i == 0
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.key), "=", kvs[0].ModRevision))
			dels = append(dels, clientv3.OpDelete(k.key))
		}
		if len(dels) == 0 {
			return 0, nil
		}
		if intent != nil && domainMine {
			dels = append(dels, clientv3.OpPut(s.keys.Intent(uuid), encode(intent)))
		}
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(dels...).Commit()
		if err != nil {
			return 0, s.wrap(err, "releasing domain "+uuid)
		}
		if tr.Succeeded {
			return len(cmps), nil
		}
	}
	return 0, fmt.Errorf("releasing domain %s: %w", uuid, ErrConflict)
}

// Holding reads the domain key of uuid; nil when nobody holds it.
func (s *Store) Holding(ctx context.Context, uuid string) (*Record, error) {
	resp, err := s.cli.Get(ctx, s.keys.Domain(uuid))
	if err != nil {
		return nil, s.wrap(err, "reading domain "+uuid)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	rec, err := decode[Record](string(resp.Kvs[0].Key), resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	return &rec, nil
}

// Grant creates a new session lease of ttl (whole seconds) and returns it
// with the TTL etcd granted.
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (ID, time.Duration, error) {
	resp, err := s.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return 0, 0, s.wrap(err, "granting a session lease")
	}
	return ID(resp.ID), time.Duration(resp.TTL) * time.Second, nil
}

// Renew renews id once and returns the TTL etcd restarted it with.
// ErrNoSession (wrapped) means the lease no longer exists.
func (s *Store) Renew(ctx context.Context, id ID) (time.Duration, error) {
	resp, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(id))
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return 0, fmt.Errorf("%w: lease %s expired or was revoked", ErrNoSession, id)
		}
		return 0, s.wrap(err, "renewing session lease "+id.String())
	}
	if resp.TTL <= 0 {
		return 0, fmt.Errorf("%w: lease %s expired", ErrNoSession, id)
	}
	return time.Duration(resp.TTL) * time.Second, nil
}

// Revoke ends the session id: etcd deletes every key attached to it.
func (s *Store) Revoke(ctx context.Context, id ID) error {
	_, err := s.cli.Revoke(ctx, clientv3.LeaseID(id))
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return s.wrap(err, "revoking session lease "+id.String())
	}
	return nil
}

// Register writes PREFIX/hosts/HOST on rec's lease, unless another live
// session holds the host name (ErrHostTaken, wrapped with who has it).
func (s *Store) Register(ctx context.Context, rec HostRecord) error {
	key := s.keys.Host(rec.Host)
	for range retries {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return s.wrap(err, "reading "+key)
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			if ID(kv.Lease) != rec.Lease {
				other, _ := decode[HostRecord](key, kv.Value)
				other.Lease = ID(kv.Lease)
				return &HostTakenError{Key: key, Holder: other}
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)
		}
		tr, err := s.cli.Txn(ctx).If(cmp).
			Then(clientv3.OpPut(key, encode(rec), clientv3.WithLease(clientv3.LeaseID(rec.Lease)))).Commit()
		if err != nil {
			return s.wrap(err, "registering "+key)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("registering %s: %w", key, ErrConflict)
}

// wrap turns etcd client errors into operator sentences; a deadline or an
// unreachable cluster becomes ErrUnavailable.
// readClaim reads a claim's keys in one Txn. A leader election under way
// gets a few more tries within ctx: reading again is harmless, and
// refusing a start for a routine election is not.
func (s *Store) readClaim(ctx context.Context, reads []clientv3.Op) (*clientv3.TxnResponse, error) {
	resp, err := s.cli.Txn(ctx).Then(reads...).Commit()
	for try := 1; transient(err) && try < 4 && ctx.Err() == nil; try++ {
		time.Sleep(time.Duration(try) * 50 * time.Millisecond)
		resp, err = s.cli.Txn(ctx).Then(reads...).Commit()
	}
	return resp, err
}

// transient: etcd could not serve the request because its leader changed
// (an election, a leadership transfer); it may be made again. A write that
// failed so may or may not have been applied: read before writing again.
func transient(err error) bool {
	if err == nil {
		return false
	}
	return errors.Is(err, rpctypes.ErrLeaderChanged) || errors.Is(err, rpctypes.ErrNoLeader) ||
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) ||
		// etcd 3.7 sends a dropped proposal as a bare status.
		status.Convert(err).Message() == "raft proposal dropped"
}

func (s *Store) wrap(err error, doing string) error {
	if err == nil {
		return nil
	}
	if transient(err) || errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) {
		return fmt.Errorf("%s: %w (%s: %v)", doing, ErrUnavailable, strings.Join(s.cli.Endpoints(), ","), err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w (no answer from %s before the deadline)", doing, ErrUnavailable, strings.Join(s.cli.Endpoints(), ","))
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%s: %w (%s: %v)", doing, ErrUnavailable, strings.Join(s.cli.Endpoints(), ","), rpctypes.ErrorDesc(err))
	case codes.Unimplemented:
		// Something answered, but not etcd's gRPC API: a wrong port, an
		// HTTP proxy or a load balancer. Nothing was decided.
		return fmt.Errorf("%s: %w (%s answered, but not as etcd: is it an etcd client URL, such as port 2379? %v)", doing, ErrUnavailable, strings.Join(s.cli.Endpoints(), ","), rpctypes.ErrorDesc(err))
	}
	return fmt.Errorf("%s: %w", doing, err)
}
