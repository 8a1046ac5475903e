package lease

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
//  2. destination, prepare begin: Claim with IncomingFrom and IncomingRev
//     accepts keys the source holds for this UUID (and only while that very
//     record exists, on the destination's session) and marks the record
//     prepared; every other host is refused while the record exists;
//  3. source, stopped/release end (its QEMU is gone): HandOff rewrites the
//     source's keys onto the destination's lease, comparing the record and
//     the destination's live host key, and drops the record; only for a
//     prepared record (otherwise the stop is an ordinary one);
//  4. a failed migration never reaches step 3 on the source; the
//     destination's own release calls DropMigration.

// RecordMigration records an incoming live migration of uuid to h. It
// returns the source host ("" when nobody holds the domain, or h does: then
// the destination's prepare is an ordinary claim) and the record's
// CreateRevision, which the destination's incoming claim names
// (Claim.IncomingRev), so that the record serves this migration only.
//
// Outcomes:
//   - from, rev, nil: recorded (or recorded already by a retried hook call);
//   - "", 0, nil: nothing to record;
//   - *HeldError: another migration of the domain is recorded, or one of
//     disks is held by another domain or host than the source (a record
//     listing it would refuse that domain's own claims until dropped);
//   - ErrNoSession: h's session is not live; ErrUnavailable; ErrConflict.
func (s *Store) RecordMigration(ctx context.Context, h Holder, uuid, name string, disks []string) (string, int64, error) {
	dom, mig, hostKey := s.keys.Domain(uuid), s.keys.Migration(uuid), s.keys.Host(h.Host)
	keys := s.claimKeys(uuid, disks)[1:]
	reads := []clientv3.Op{clientv3.OpGet(dom), clientv3.OpGet(mig), clientv3.OpGet(hostKey)}
	for _, k := range keys {
		reads = append(reads, clientv3.OpGet(k.key))
	}
	for range retries {
		resp, err := s.cli.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			return "", 0, s.wrap(err, "reading the holder of "+name)
		}
		if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) == 0 || ID(kvs[0].Lease) != h.Lease {
			return "", 0, fmt.Errorf("%w: %s is missing or on another lease", ErrNoSession, hostKey)
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return "", 0, nil
		}
		holder, err := decode[Record](dom, kvs[0].Value)
		if err != nil {
			return "", 0, err
		}
		if holder.Host == h.Host {
			return "", 0, nil
		}
		if mk := resp.Responses[1].GetResponseRange().Kvs; len(mk) > 0 {
			m, err := decode[Migration](mig, mk[0].Value)
			if err != nil {
				return "", 0, err
			}
			if m.To == h.Host && m.From == holder.Host && ID(mk[0].Lease) == h.Lease && !m.Prepared {
				return m.From, mk[0].CreateRevision, nil // recorded already (a retried hook call)
			}
			return "", 0, &HeldError{Key: mig, Want: name,
				Why: fmt.Sprintf("domain %s (%s) is being migrated from host %s to host %s since %s", name, uuid, m.From, m.To, m.Since.UTC().Format(time.RFC3339))}
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(dom), "=", kvs[0].ModRevision),
			clientv3.Compare(clientv3.CreateRevision(mig), "=", 0),
			clientv3.Compare(clientv3.LeaseValue(hostKey), "=", clientv3.LeaseID(h.Lease)),
		}
		for i, k := range keys {
			dk := resp.Responses[3+i].GetResponseRange().Kvs
			if len(dk) == 0 {
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k.key), "=", 0))
				continue
			}
			rec, err := decode[Record](k.key, dk[0].Value)
			if err != nil {
				return "", 0, err
			}
			if rec.UUID != uuid || rec.Host != holder.Host {
				return "", 0, &HeldError{Key: k.key, Disk: k.disk, Want: name, Held: rec}
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.key), "=", dk[0].ModRevision))
		}
		rec := Migration{From: holder.Host, To: h.Host, Since: s.now().UTC().Truncate(time.Second), Disks: disks}
		tr, err := s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(mig, encode(rec), clientv3.WithLease(clientv3.LeaseID(h.Lease)))).Commit()
		if err != nil {
			return "", 0, s.wrap(err, "recording the migration of "+name)
		}
		if tr.Succeeded {
			// The put is the Txn's only write: the record was created at
			// the Txn's revision.
			return holder.Host, tr.Header.Revision, nil
		}
	}
	return "", 0, fmt.Errorf("recording the migration of %s: %w", name, ErrConflict)
}

// HandOff gives the keys of uuid that src holds to the destination named
// in the domain's migration record, in one Txn that also drops the record.
// It compares every key, the record, and the destination's host key (which
// must still carry the record's lease), so the keys move only to a live
// destination and are never free in between. It returns false, doing
// nothing, when no migration from src is recorded, when the destination
// never claimed (the record is not Prepared: a failed migration, and this
// an ordinary stop), or when the destination's session is gone (then the
// caller releases as usual).
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
		if err != nil || m.From != src.Host || !m.Prepared {
			return false, err
		}
		dst := Holder{Host: m.To, Lease: ID(resp.Kvs[0].Lease)}
		ops := []clientv3.Op{}
		for _, k := range keys {
			ops = append(ops, clientv3.OpGet(k.key))
		}
		ops = append(ops, clientv3.OpGet(s.keys.Run(uuid)))
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
		if cmp, put, ok := s.handRun(uuid, src.Host, dst.Host, since, kr.Responses[len(keys)].GetResponseRange().Kvs); ok {
			cmps, puts = append(cmps, cmp), append(puts, put)
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

// MigrationMarker is the local trace of an incoming live migration that the
// hook leaves under the state directory: incoming/UUID, written by the
// destination's migrate begin and taken (removed) by the prepare that
// follows it; migrated/UUID, left by that prepare for the destination's
// release, reconnect and the watchdog's reconcile. At and Boot date it on
// the boot clock, which no wall-clock step moves.
type MigrationMarker struct {
	From string `json:"from"` // the source host
	Rev  int64  `json:"rev"`  // the migration record's CreateRevision (Claim.IncomingRev)
	Boot string `json:"boot"` // boot ID when written
	At   int64  `json:"at"`   // CLOCK_BOOTTIME nanoseconds when written
}

// WriteMigrationMarker writes m to path atomically (a complete marker or
// none), creating its directory.
func WriteMigrationMarker(path string, m MigrationMarker) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("migration marker: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("migration marker: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".marker-*")
	if err != nil {
		return fmt.Errorf("migration marker: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("migration marker %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("migration marker %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("migration marker %s: %w", path, err)
	}
	return nil
}

// ReadMigrationMarker reads the marker at path. A marker of an earlier
// version holds the source host alone: it reads with Rev 0 (any record
// from that host) and no date.
func ReadMigrationMarker(path string) (MigrationMarker, error) {
	var m MigrationMarker
	b, err := os.ReadFile(path)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return MigrationMarker{From: strings.TrimSpace(string(b))}, nil
	}
	return m, nil
}
