package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Operator actions: what `virtlease release --force`, `drain` and `undrain`
// do in etcd. A forced action is two steps, Plan… then Apply, because an
// operator confirms in between: Apply writes only if nothing the plan read
// has changed since, so a confirmation never applies to a state the operator
// did not see.

var (
	// ErrNotFound means no key in etcd names what an operator asked for.
	ErrNotFound = errors.New("lease: not found in etcd")
	// ErrAlive refuses a forced action on a host whose session is live:
	// forcing it would let a second copy start while the first may run.
	ErrAlive = errors.New("lease: host is alive")
	// ErrChanged means the keys changed between a plan and its Apply.
	ErrChanged = errors.New("lease: etcd changed since it was read")
)

// opError is an operator-facing sentence that matches one of the
// sentinels above with errors.Is, without their "lease:" text in the
// message an operator reads.
type opError struct {
	msg  string
	kind error
}

func (e *opError) Error() string        { return e.msg }
func (e *opError) Is(target error) bool { return target == e.kind }

func opErrorf(kind error, format string, args ...any) error {
	return &opError{msg: fmt.Sprintf(format, args...), kind: kind}
}

// Forced action kinds, as written in audit records.
const (
	ActionForceRelease  = "release-force"
	ActionClearUnfenced = "clear-unfenced"
)

// Action is a forced operator action planned from one read of etcd. Apply
// performs it in one Txn.
type Action struct {
	Kind   string    // ActionForceRelease or ActionClearUnfenced
	Domain string    // the domain's name as recorded ("" for ActionClearUnfenced)
	UUID   string    // "" for ActionClearUnfenced
	Host   string    // the holder, or the host whose unfenced record is cleared
	Lease  ID        // the holder's lease as its records name it (0 if none)
	Since  time.Time // when the holder claimed it (zero if no key held it)
	// Keys lists every key the action deletes or rewrites; Rewritten, the
	// unfenced records among them that keep other guests (rewritten, not
	// deleted).
	Keys      []string
	Rewritten []string
	// Unfenced lists the hosts whose unfenced record names the domain.
	Unfenced []string
	// Alive says, one sentence per host, why a host the action touches
	// looks alive. Apply refuses while it is not empty, unless told
	// otherwise.
	Alive []string

	revs   map[string]int64 // key → ModRevision as read (0: absent); Apply compares all
	writes []clientv3.Op
}

// AliveError refuses a forced action because a host it touches has a live
// session. It matches ErrAlive with errors.Is.
type AliveError struct {
	Action *Action
}

func (e *AliveError) Error() string {
	what := "the unfenced record of host " + e.Action.Host
	if e.Action.Kind == ActionForceRelease {
		what = fmt.Sprintf("domain %s (%s)", e.Action.Domain, e.Action.UUID)
	}
	return fmt.Sprintf("not releasing %s: %s; stop the guest there (its hook then releases it), or force it only if you know that host is down",
		what, strings.Join(e.Action.Alive, "; "))
}

// Is makes errors.Is(err, ErrAlive) true.
func (e *AliveError) Is(target error) bool { return target == ErrAlive }

// operatorReads reads, at one revision, every key a forced release may
// touch or must check.
func (s *Store) operatorReads(ctx context.Context, doing string) (map[string][]*mvccpb.KeyValue, error) {
	kinds := []string{"domains", "disks", "unfenced", "hosts"}
	ops := make([]clientv3.Op, len(kinds))
	for i, k := range kinds {
		ops[i] = clientv3.OpGet(s.keys.Dir(k), clientv3.WithPrefix())
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, s.wrap(err, doing)
	}
	out := map[string][]*mvccpb.KeyValue{}
	for i, k := range kinds {
		out[k] = resp.Responses[i].GetResponseRange().Kvs
	}
	return out, nil
}

// PlanForceRelease plans the forced release of one domain, named by UUID or
// by name, for an operator who knows its holder is gone (etcd restored from
// a backup, a host that will not come back):
//   - its domain key and every disk key whose record names the same UUID and
//     host are deleted;
//   - every unfenced record that lists it loses that entry (and is deleted
//     when it was the last one).
//
// Outcomes:
//   - an *Action whose Alive is empty: the holder's hosts key is gone or on
//     another lease, and no host whose unfenced record lists the domain is
//     registered;
//   - an *Action whose Alive says which host looks alive;
//   - ErrNotFound (wrapped): no domain key, disk key or unfenced record
//     names the domain;
//   - an error naming every UUID when the name is ambiguous;
//   - ErrUnavailable (wrapped): etcd did not answer before ctx ended.
func (s *Store) PlanForceRelease(ctx context.Context, domain string) (*Action, error) {
	kvs, err := s.operatorReads(ctx, "looking up domain "+domain)
	if err != nil {
		return nil, err
	}
	type found struct {
		key string
		kv  *mvccpb.KeyValue
		rec Record
	}
	var doms, disks []found
	for _, kv := range kvs["domains"] {
		if rec, err := decode[Record](string(kv.Key), kv.Value); err == nil {
			doms = append(doms, found{string(kv.Key), kv, rec})
		}
	}
	for _, kv := range kvs["disks"] {
		if rec, err := decode[Record](string(kv.Key), kv.Value); err == nil {
			disks = append(disks, found{string(kv.Key), kv, rec})
		}
	}
	unfenced := map[string]Unfenced{}
	unfencedKV := map[string]*mvccpb.KeyValue{}
	for _, kv := range kvs["unfenced"] {
		if u, err := decode[Unfenced](string(kv.Key), kv.Value); err == nil {
			host := s.keys.Name(string(kv.Key))
			unfenced[host], unfencedKV[host] = u, kv
		}
	}
	hosts := map[string]*mvccpb.KeyValue{}
	for _, kv := range kvs["hosts"] {
		hosts[s.keys.Name(string(kv.Key))] = kv
	}

	// Every UUID etcd knows, with where it is seen, to resolve the name.
	seen := map[string][]string{} // uuid → "name on host-a", …
	names := map[string]map[string]bool{}
	note := func(uuid, name, where string) {
		if names[uuid] == nil {
			names[uuid] = map[string]bool{}
		}
		names[uuid][name] = true
		seen[uuid] = append(seen[uuid], where)
	}
	for _, f := range doms {
		note(f.rec.UUID, f.rec.Name, "held by "+f.rec.Host)
	}
	for _, f := range disks {
		note(f.rec.UUID, f.rec.Name, "disk "+s.keys.Name(f.key)+" held by "+f.rec.Host)
	}
	for host, u := range unfenced {
		for _, g := range u.Guests {
			note(g.UUID, g.Name, "unfenced on "+host)
		}
	}
	uuid := ""
	if _, ok := names[strings.ToLower(domain)]; ok {
		uuid = strings.ToLower(domain)
	} else {
		var match []string
		for u, ns := range names {
			if ns[domain] {
				match = append(match, u)
			}
		}
		sort.Strings(match)
		switch len(match) {
		case 0:
			return nil, opErrorf(ErrNotFound, "no domain named or with UUID %q is held by any host or listed as unfenced (virtlease status lists what is)", domain)
		case 1:
			uuid = match[0]
		default:
			var list []string
			for _, u := range match {
				list = append(list, u+" ("+strings.Join(seen[u], ", ")+")")
			}
			return nil, fmt.Errorf("domain name %q is ambiguous: it names %d domains: %s; give the UUID instead", domain, len(match), strings.Join(list, "; "))
		}
	}

	a := &Action{Kind: ActionForceRelease, UUID: uuid, revs: map[string]int64{}}
	domKey := s.keys.Domain(uuid)
	a.revs[domKey] = 0 // a claim made since the plan must fail the Apply
	for _, f := range doms {
		if f.rec.UUID == uuid && f.key == domKey {
			a.Domain, a.Host, a.Lease, a.Since = f.rec.Name, f.rec.Host, f.rec.Lease, f.rec.Since
			a.Keys = append(a.Keys, f.key)
			a.revs[f.key] = f.kv.ModRevision
			a.writes = append(a.writes, clientv3.OpDelete(f.key))
		}
	}
	for _, f := range disks {
		if f.rec.UUID != uuid {
			continue
		}
		if a.Host == "" {
			// Disk keys without their domain key: take their holder.
			a.Domain, a.Host, a.Lease, a.Since = f.rec.Name, f.rec.Host, f.rec.Lease, f.rec.Since
		}
		if f.rec.Host != a.Host {
			continue
		}
		a.Keys = append(a.Keys, f.key)
		a.revs[f.key] = f.kv.ModRevision
		a.writes = append(a.writes, clientv3.OpDelete(f.key))
	}
	if a.Host != "" {
		hk := s.keys.Host(a.Host)
		a.revs[hk] = 0
		if kv := hosts[a.Host]; kv != nil {
			a.revs[hk] = kv.ModRevision
			if ID(kv.Lease) == a.Lease {
				a.Alive = append(a.Alive, fmt.Sprintf("host %s holds it on a live session (lease %s, %s exists)", a.Host, a.Lease, hk))
			}
		}
	}

	var uhosts []string
	for host := range unfenced {
		uhosts = append(uhosts, host)
	}
	sort.Strings(uhosts)
	for _, host := range uhosts {
		u := unfenced[host]
		var rest []UnfencedGuest
		listed := false
		for _, g := range u.Guests {
			if g.UUID == uuid {
				listed = true
				if a.Domain == "" {
					a.Domain = g.Name
				}
				continue
			}
			rest = append(rest, g)
		}
		if !listed {
			continue
		}
		key := s.keys.Unfenced(host)
		a.Unfenced = append(a.Unfenced, host)
		a.Keys = append(a.Keys, key)
		a.revs[key] = unfencedKV[host].ModRevision
		if len(rest) == 0 {
			a.writes = append(a.writes, clientv3.OpDelete(key))
		} else {
			u.Guests = rest
			a.writes = append(a.writes, clientv3.OpPut(key, encode(u)))
			a.Rewritten = append(a.Rewritten, key)
		}
		if a.Host == "" {
			a.Host = host
		}
		hk := s.keys.Host(host)
		if _, ok := a.revs[hk]; !ok {
			a.revs[hk] = 0
		}
		if kv := hosts[host]; kv != nil {
			a.revs[hk] = kv.ModRevision
			if host != a.Host || ID(kv.Lease) != a.Lease {
				a.Alive = append(a.Alive, fmt.Sprintf("host %s, whose watchdog left it unfenced, is still registered (lease %s): its session is live or its watchdog is back", host, ID(kv.Lease)))
			}
		}
	}
	return a, nil
}

// PlanClearUnfenced plans deleting host's whole unfenced record, for an
// operator who knows the host is down: the guests it lists may then start
// elsewhere.
//
// Outcomes: an *Action (Alive not empty when host is registered in etcd),
// ErrNotFound (wrapped) when host has no unfenced record, ErrUnavailable
// (wrapped).
func (s *Store) PlanClearUnfenced(ctx context.Context, host string) (*Action, error) {
	key, hk := s.keys.Unfenced(host), s.keys.Host(host)
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(key), clientv3.OpGet(hk)).Commit()
	if err != nil {
		return nil, s.wrap(err, "reading "+key)
	}
	ukv, hkv := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
	if len(ukv) == 0 {
		return nil, opErrorf(ErrNotFound, "host %s has no unfenced record (%s)", host, key)
	}
	// An unreadable record is cleared too: it blocks every start in the
	// cluster, and the operator vouches that host is down. Its Since is
	// then unknown (zero).
	u, _ := decode[Unfenced](key, ukv[0].Value)
	a := &Action{Kind: ActionClearUnfenced, Host: host, Since: u.Since, Keys: []string{key}, Unfenced: []string{host},
		revs: map[string]int64{key: ukv[0].ModRevision, hk: 0}, writes: []clientv3.Op{clientv3.OpDelete(key)}}
	if len(hkv) > 0 {
		a.revs[hk] = hkv[0].ModRevision
		a.Alive = append(a.Alive, fmt.Sprintf("host %s is still registered (lease %s): its session is live or its watchdog is back", host, ID(hkv[0].Lease)))
	}
	return a, nil
}

// Apply performs a, in one Txn with its audit record
// (PREFIX/audit/TIME-RANDOM, no lease: it outlives every host), if every key
// a read is unchanged.
//
// Outcomes:
//   - the audit record and its key: done;
//   - *AliveError: a.Alive is not empty and evenIfAlive is false; nothing
//     was written;
//   - ErrChanged (wrapped): a key changed since the plan; nothing was
//     written, plan again;
//   - ErrUnavailable (wrapped).
//
// evenIfAlive overrides a live session: the holder may still run the guest
// until its watchdog notices (within one renew interval if it reconciles),
// so two copies can overlap. docs/safety.md lists this among what is not
// promised.
func (s *Store) Apply(ctx context.Context, a *Action, by string, evenIfAlive bool) (Audit, string, error) {
	if len(a.Alive) > 0 && !evenIfAlive {
		return Audit{}, "", &AliveError{Action: a}
	}
	now := s.now().UTC()
	rec := Audit{Action: a.Kind, Domain: a.Domain, UUID: a.UUID, Host: a.Host, By: by,
		EvenIfAlive: evenIfAlive, At: now, Keys: append([]string{}, a.Keys...)}
	id, err := auditID(now)
	if err != nil {
		return Audit{}, "", err
	}
	key := s.keys.Audit(id)
	var cmps []clientv3.Cmp
	for k, rev := range a.revs {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
	}
	cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	ops := append(append([]clientv3.Op{}, a.writes...), clientv3.OpPut(key, encode(rec)))
	tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return Audit{}, "", s.wrap(err, "writing "+key)
	}
	if !tr.Succeeded {
		return Audit{}, "", opErrorf(ErrChanged, "not releasing %s: its keys changed since they were read, so nothing was written; look again (virtlease status)", describe(a))
	}
	return rec, key, nil
}

func describe(a *Action) string {
	if a.Kind == ActionForceRelease {
		return "domain " + a.Domain
	}
	return "host " + a.Host
}

// auditID names an audit record: the time with fixed-width nanoseconds, so
// keys sort by time, then random hex, so two operators never collide.
func auditID(t time.Time) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lease: naming an audit record: %w", err)
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") + "-" + hex.EncodeToString(b[:]), nil
}

// Audits returns every audit record, oldest first.
func (s *Store) Audits(ctx context.Context) ([]Audit, error) {
	resp, err := s.cli.Get(ctx, s.keys.Dir("audit"), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, s.wrap(err, "reading "+s.keys.Dir("audit"))
	}
	out := make([]Audit, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		a, err := decode[Audit](string(kv.Key), kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// SetDrain marks host as draining: the claim of a new start there is refused
// (Claim.Start), while running guests, adoption and incoming migrations go
// on. The key has no lease, so it survives the host's restarts.
//
// When host is already draining its record is kept (its since and by), and
// only Evacuate is updated if d asks for another value. It returns the record
// now in etcd and whether host was draining before.
func (s *Store) SetDrain(ctx context.Context, host string, d Drain) (Drain, bool, error) {
	key := s.keys.Drain(host)
	for range retries {
		tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, encode(d))).Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return Drain{}, false, s.wrap(err, "writing "+key)
		}
		if tr.Succeeded {
			return d, false, nil
		}
		kvs := tr.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // undrained in between: try again
		}
		old, err := decode[Drain](key, kvs[0].Value)
		if err != nil {
			return Drain{}, false, err
		}
		if old.Evacuate == d.Evacuate {
			return old, true, nil
		}
		old.Evacuate = d.Evacuate
		tr, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, encode(old))).Commit()
		if err != nil {
			return Drain{}, false, s.wrap(err, "writing "+key)
		}
		if tr.Succeeded {
			return old, true, nil
		}
	}
	return Drain{}, false, fmt.Errorf("draining host %s: %w", host, ErrConflict)
}

// ClearDrain ends host's drain. It returns the record it deleted, nil when
// host was not draining.
func (s *Store) ClearDrain(ctx context.Context, host string) (*Drain, error) {
	key := s.keys.Drain(host)
	resp, err := s.cli.Delete(ctx, key, clientv3.WithPrevKV())
	if err != nil {
		return nil, s.wrap(err, "deleting "+key)
	}
	if len(resp.PrevKvs) == 0 {
		return nil, nil
	}
	d, err := decode[Drain](key, resp.PrevKvs[0].Value)
	if err != nil {
		// It is gone either way; say what it held.
		return &Drain{}, nil
	}
	return &d, nil
}
