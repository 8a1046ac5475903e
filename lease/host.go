package lease

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Held lists the domains h holds: every domain key naming h's host and
// lease, with the disk IDs held for each. It reads the domains and disks
// directories (one range read each), so it costs O(keys in the cluster):
// fine for the watchdog's periodic reconcile, not for a hot path.
func (s *Store) Held(ctx context.Context, h Holder) ([]DomainStatus, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.keys.Dir("domains"), clientv3.WithPrefix()),
		clientv3.OpGet(s.keys.Dir("disks"), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, s.wrap(err, "listing this host's claims")
	}
	byUUID := map[string]*DomainStatus{}
	var out []*DomainStatus
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		rec, err := decode[Record](string(kv.Key), kv.Value)
		if err != nil || rec.Host != h.Host || rec.Lease != h.Lease || ID(kv.Lease) != h.Lease {
			continue
		}
		d := &DomainStatus{Record: rec}
		byUUID[rec.UUID] = d
		out = append(out, d)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		rec, err := decode[Record](string(kv.Key), kv.Value)
		if err != nil || rec.Host != h.Host || rec.Lease != h.Lease {
			continue
		}
		d, ok := byUUID[rec.UUID]
		if !ok {
			// A disk key of ours without its domain key: list it anyway,
			// so it can be released.
			d = &DomainStatus{Record: rec}
			byUUID[rec.UUID] = d
			out = append(out, d)
		}
		d.Disks = append(d.Disks, s.keys.Name(string(kv.Key)))
	}
	res := make([]DomainStatus, len(out))
	for i, d := range out {
		res[i] = *d
	}
	return res, nil
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
