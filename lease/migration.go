package lease

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A live migration keeps the domain protected throughout: the source holds
// the keys until its QEMU is gone, then hands them to the destination's
// session in one Txn. Steps, as libvirt calls the hooks:
//
//  1. destination, migrate begin: RecordMigration writes
//     PREFIX/migrations/UUID {from: holder, to: me} on the destination's
//     lease, if the holder did not change meanwhile;
//  2. destination, prepare begin: Claim with IncomingFrom accepts keys the
//     source holds for this UUID (and only while that record exists);
//     every other host is refused while the record exists;
//  3. source, stopped/release end (its QEMU is gone): HandOff rewrites the
//     source's keys onto the destination's lease, comparing the record and
//     the destination's live host key, and drops the record;
//  4. a failed migration never reaches step 3 on the source; the
//     destination's own release calls DropMigration.

// RecordMigration records an incoming live migration of uuid to h. It
// returns the source host ("" when nobody holds the domain: then the
// destination's prepare is an ordinary claim), or an error:
// *HeldError when another migration of the domain is recorded, ErrNoSession
// when h's session is not live, ErrUnavailable.
func (s *Store) RecordMigration(ctx context.Context, h Holder, uuid, name string, disks []string) (string, error) {
	dom, mig, hostKey := s.keys.Domain(uuid), s.keys.Migration(uuid), s.keys.Host(h.Host)
	for range retries {
		resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(dom), clientv3.OpGet(mig), clientv3.OpGet(hostKey)).Commit()
		if err != nil {
			return "", s.wrap(err, "reading the holder of "+name)
		}
		if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) == 0 || ID(kvs[0].Lease) != h.Lease {
			return "", fmt.Errorf("%w: %s is missing or on another lease", ErrNoSession, hostKey)
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return "", nil
		}
		holder, err := decode[Record](dom, kvs[0].Value)
		if err != nil {
			return "", err
		}
		if holder.Host == h.Host {
			return "", nil
		}
		if mk := resp.Responses[1].GetResponseRange().Kvs; len(mk) > 0 {
			m, err := decode[Migration](mig, mk[0].Value)
			if err != nil {
				return "", err
			}
			if m.To == h.Host && m.From == holder.Host && ID(mk[0].Lease) == h.Lease {
				return m.From, nil // recorded already (a retried hook call)
			}
			return "", &HeldError{Key: mig, Want: name,
				Why: fmt.Sprintf("domain %s (%s) is being migrated from host %s to host %s since %s", name, uuid, m.From, m.To, m.Since.UTC().Format(time.RFC3339))}
		}
		rec := Migration{From: holder.Host, To: h.Host, Since: s.now().UTC().Truncate(time.Second), Disks: disks}
		tr, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(dom), "=", kvs[0].ModRevision),
			clientv3.Compare(clientv3.CreateRevision(mig), "=", 0),
			clientv3.Compare(clientv3.LeaseValue(hostKey), "=", clientv3.LeaseID(h.Lease)),
		).Then(clientv3.OpPut(mig, encode(rec), clientv3.WithLease(clientv3.LeaseID(h.Lease)))).Commit()
		if err != nil {
			return "", s.wrap(err, "recording the migration of "+name)
		}
		if tr.Succeeded {
			return holder.Host, nil
		}
	}
	return "", fmt.Errorf("recording the migration of %s: %w", name, ErrConflict)
}

// HandOff gives the keys of uuid that src holds to the destination named
// in the domain's migration record, in one Txn that also drops the record.
// It compares every key, the record, and the destination's host key (which
// must still carry the record's lease), so the keys move only to a live
// destination and are never free in between. It returns false, doing
// nothing, when no migration from src is recorded (an ordinary stop) or the
// destination's session is gone (then the caller releases as usual).
func (s *Store) HandOff(ctx context.Context, src Holder, uuid, name string, disks []string) (bool, error) {
	mig := s.keys.Migration(uuid)
	keys := s.claimKeys(uuid, disks)
	for range retries {
		resp, err := s.cli.Get(ctx, mig)
		if err != nil {
			return false, s.wrap(err, "reading the migration of "+uuid)
		}
		if len(resp.Kvs) == 0 {
			return false, nil
		}
		m, err := decode[Migration](mig, resp.Kvs[0].Value)
		if err != nil || m.From != src.Host {
			return false, err
		}
		dst := Holder{Host: m.To, Lease: ID(resp.Kvs[0].Lease)}
		ops := []clientv3.Op{}
		for _, k := range keys {
			ops = append(ops, clientv3.OpGet(k.key))
		}
		kr, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return false, s.wrap(err, "reading the keys of "+uuid)
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(mig), "=", resp.Kvs[0].ModRevision),
			clientv3.Compare(clientv3.LeaseValue(s.keys.Host(dst.Host)), "=", clientv3.LeaseID(dst.Lease)),
		}
		puts := []clientv3.Op{clientv3.OpDelete(mig)}
		since := s.now().UTC().Truncate(time.Second)
		for i, k := range keys {
			kvs := kr.Responses[i].GetResponseRange().Kvs
			rec := Record{UUID: uuid, Name: name}
			if len(kvs) == 0 {
				// Gone already (the source's session expired or was
				// revoked first): the destination runs the guest, so the
				// key goes to it too. Dropping the record without it
				// would leave the guest with no key and no record (found
				// by the model, docs/model: code-handoff).
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k.key), "=", 0))
			} else {
				var err error
				rec, err = decode[Record](k.key, kvs[0].Value)
				if err != nil || !rec.heldBy(src, uuid) {
					continue
				}
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.key), "=", kvs[0].ModRevision))
			}
			rec.Host, rec.Lease, rec.Since = dst.Host, dst.Lease, since
			puts = append(puts, clientv3.OpPut(k.key, encode(rec), clientv3.WithLease(clientv3.LeaseID(dst.Lease))))
		}
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
		if err != nil {
			return false, s.wrap(err, "handing "+uuid+" to "+dst.Host)
		}
		if tr.Succeeded {
			return true, nil
		}
		// Lost a race, or the destination's session is gone: look again.
		hk, err := s.cli.Get(ctx, s.keys.Host(dst.Host))
		if err != nil {
			return false, s.wrap(err, "reading "+s.keys.Host(dst.Host))
		}
		if len(hk.Kvs) == 0 || ID(hk.Kvs[0].Lease) != dst.Lease {
			return false, nil
		}
	}
	return false, fmt.Errorf("handing off %s: %w", uuid, ErrConflict)
}

// DropMigration deletes the migration record of uuid if it is h's (h the
// destination): a failed or finished incoming migration.
func (s *Store) DropMigration(ctx context.Context, h Holder, uuid string) error {
	mig := s.keys.Migration(uuid)
	resp, err := s.cli.Get(ctx, mig)
	if err != nil {
		return s.wrap(err, "reading the migration of "+uuid)
	}
	if len(resp.Kvs) == 0 || ID(resp.Kvs[0].Lease) != h.Lease {
		return nil
	}
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(mig), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpDelete(mig)).Commit()
	if err != nil {
		return s.wrap(err, "dropping the migration record of "+uuid)
	}
	return nil
}
