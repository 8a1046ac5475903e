package lease

import (
	"context"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Held lists the domains h holds: every domain key naming h's host and
// lease, with the disk IDs held for each. It asks etcd for the keys
// attached to h's lease (exactly this host's claims), then reads those, so
// it costs O(this host's keys), whatever the size of the cluster.
func (s *Store) Held(ctx context.Context, h Holder) ([]DomainStatus, error) {
	hs, err := s.Holdings(ctx, h)
	return hs.Domains, err
}

// Holdings is what hangs on one host's lease.
type Holdings struct {
	Domains []DomainStatus // as Held lists them
	// Incoming are the UUIDs of the migration records on the lease: live
	// migrations to this host not (yet) handed over.
	Incoming []string
}

// Holdings is Held plus the incoming migration records, from the same one
// look at the lease's keys (the reconcile wants both every pass).
func (s *Store) Holdings(ctx context.Context, h Holder) (Holdings, error) {
	ttl, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(h.Lease), clientv3.WithAttachedKeys())
	if err != nil {
		return Holdings{}, s.wrap(err, "listing this host's claims")
	}
	var hs Holdings
	var keys []string
	for _, k := range ttl.Keys {
		key := string(k)
		switch {
		case strings.HasPrefix(key, s.keys.Dir("domains")) || strings.HasPrefix(key, s.keys.Dir("disks")):
			keys = append(keys, key)
		case strings.HasPrefix(key, s.keys.Dir("migrations")):
			hs.Incoming = append(hs.Incoming, s.keys.Name(key))
		}
	}
	if len(keys) == 0 {
		return hs, nil
	}
	// A host may hold more keys than one Txn takes.
	rs, err := s.getAll(ctx, keys, 0, "reading this host's claims")
	if err != nil {
		return Holdings{}, err
	}
	byUUID := map[string]*DomainStatus{}
	var order []string
	for _, r := range rs {
		for _, kv := range r.GetResponseRange().Kvs {
			key := string(kv.Key)
			rec, err := decode[Record](key, kv.Value)
			if err != nil || rec.Host != h.Host || rec.Lease != h.Lease || ID(kv.Lease) != h.Lease {
				continue
			}
			d, ok := byUUID[rec.UUID]
			if !ok {
				d = &DomainStatus{Record: rec}
				byUUID[rec.UUID] = d
				order = append(order, rec.UUID)
			}
			d.Revision = max(d.Revision, kv.ModRevision)
			if strings.HasPrefix(key, s.keys.Dir("domains")) {
				d.Record = rec
			} else {
				// A disk key of ours, possibly without its domain key:
				// listed anyway, so it can be released.
				d.Disks = append(d.Disks, s.keys.Name(key))
			}
		}
	}
	sort.Strings(order)
	hs.Domains = make([]DomainStatus, len(order))
	for i, u := range order {
		hs.Domains[i] = *byUUID[u]
		sort.Strings(hs.Domains[i].Disks)
	}
	return hs, nil
}

// SetUnfenced writes PREFIX/unfenced/HOST (no lease: it must outlive the
// session): the guests a stopping watchdog leaves running unprotected.
func (s *Store) SetUnfenced(ctx context.Context, host string, u Unfenced) error {
	if _, err := s.cli.Put(ctx, s.keys.Unfenced(host), encode(u)); err != nil {
		return s.wrap(err, "writing "+s.keys.Unfenced(host))
	}
	return nil
}

// GetUnfenced reads PREFIX/unfenced/HOST; rev is its ModRevision (0 and
// ok false when there is none).
func (s *Store) GetUnfenced(ctx context.Context, host string) (u Unfenced, rev int64, ok bool, err error) {
	key := s.keys.Unfenced(host)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return u, 0, false, s.wrap(err, "reading "+key)
	}
	if len(resp.Kvs) == 0 {
		return u, 0, false, nil
	}
	u, err = decode[Unfenced](key, resp.Kvs[0].Value)
	return u, resp.Kvs[0].ModRevision, err == nil, err
}

// ClearUnfenced deletes PREFIX/unfenced/HOST if it is still at rev. A
// returning watchdog calls it only after re-claiming the listed guests, so
// they are never free in between.
func (s *Store) ClearUnfenced(ctx context.Context, host string, rev int64) error {
	key := s.keys.Unfenced(host)
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return s.wrap(err, "deleting "+key)
	}
	return nil
}

// Members returns the names of the etcd cluster's members, as the member
// list says (read once; the client keeps using only its configured
// endpoints).
func (s *Store) Members(ctx context.Context) ([]string, error) {
	resp, err := s.cli.MemberList(ctx)
	if err != nil {
		return nil, s.wrap(err, "reading the etcd member list")
	}
	var names []string
	for _, m := range resp.Members {
		names = append(names, m.Name)
	}
	return names, nil
}
