package lease

import (
	"context"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Held lists the domains h holds: every domain key naming h's host and
// lease, with the disk IDs held for each. It asks etcd for the keys
// attached to h's lease (exactly this host's claims), then reads those, so
// it costs O(this host's keys), whatever the size of the cluster.
func (s *Store) Held(ctx context.Context, h Holder) ([]DomainStatus, error) {
	ttl, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(h.Lease), clientv3.WithAttachedKeys())
	if err != nil {
		return nil, s.wrap(err, "listing this host's claims")
	}
	var gets []clientv3.Op
	for _, k := range ttl.Keys {
		key := string(k)
		if strings.HasPrefix(key, s.keys.Dir("domains")) || strings.HasPrefix(key, s.keys.Dir("disks")) {
			gets = append(gets, clientv3.OpGet(key))
		}
	}
	if len(gets) == 0 {
		return nil, nil
	}
	// In Txns of at most maxTxnOps reads (a host may hold hundreds of
	// keys), all at the revision of the first.
	var rs []*etcdserverpb.ResponseOp
	var rev int64
	for start := 0; start < len(gets); start += maxTxnOps {
		batch := gets[start:min(start+maxTxnOps, len(gets))]
		if rev != 0 {
			for i, op := range batch {
				batch[i] = clientv3.OpGet(string(op.KeyBytes()), clientv3.WithRev(rev))
			}
		}
		resp, err := s.cli.Txn(ctx).Then(batch...).Commit()
		if err != nil {
			return nil, s.wrap(err, "reading this host's claims")
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		rs = append(rs, resp.Responses...)
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
	res := make([]DomainStatus, len(order))
	for i, u := range order {
		res[i] = *byUUID[u]
		sort.Strings(res[i].Disks)
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
