package lease

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A saved state (virsh managedsave, or libvirt-guests' ON_SHUTDOWN=suspend)
// holds a guest's memory as it was when it was saved. Restored after the
// guest ran on another host, that memory comes back over disks that changed
// meanwhile: silent corruption. PREFIX/runs/UUID names the host that started
// the domain last; every start (a Claim with Start) bumps its sequence number
// in the Txn that takes the keys, and the host remembers locally the Run its
// own start got. A saved state is restorable on a host only while the record
// still names that host's Run: nobody has started the guest anywhere since.
//
// Sequence numbers, not times: a clock step can make a later start look
// earlier, but it cannot change which Txn came first.

// Run is the value of PREFIX/runs/UUID (no lease: it outlives sessions and
// hosts; one key per domain, overwritten by each start). Host started the
// domain last, as the Seq-th start recorded for it, at Since (for people;
// decisions never read it).
type Run struct {
	Host  string    `json:"host"`
	Seq   uint64    `json:"seq"`
	Since time.Time `json:"since"`
}

// same reports whether r and o are one run: same host and sequence number.
func (r Run) same(o Run) bool { return r.Host == o.Host && r.Seq == o.Seq }

// Restore marks a Claim as the start of a saved state's restore, which is
// refused unless CheckRestore allows it at the Claim's own revision.
type Restore struct {
	// Mine is the last run this host recorded of the domain (the one whose
	// end the saved state comes from); nil when this host knows none.
	Mine *Run
	// tried is the run Claim's previous Txn tried to record: found in
	// etcd after a Txn that may have landed, it was checked by that Txn.
	tried *Run
}

// RestoreError refuses the restore of a saved state that may be stale.
type RestoreError struct {
	Name string // the domain's name on this host
	Host string // this host
	Last Run    // the last start etcd recorded
	Mine *Run   // this host's last run; nil: none known
}

func (e *RestoreError) Error() string {
	var why string
	switch {
	case e.Last.Host != e.Host:
		why = fmt.Sprintf("host %s started it after this host last did (run %d, %s)", e.Last.Host, e.Last.Seq, e.Last.Since.UTC().Format(time.RFC3339))
	case e.Mine == nil:
		why = fmt.Sprintf("etcd's last run of it is this host's run %d, but this host keeps no record of which run the saved state comes from", e.Last.Seq)
	default:
		why = fmt.Sprintf("the saved state comes from run %d here, but etcd's last run of it is run %d", e.Mine.Seq, e.Last.Seq)
	}
	return fmt.Sprintf("refusing to restore %s from its saved state: %s, so its disks may have changed under the saved memory; `virsh managedsave-remove %s` discards the saved state (the guest then boots from its disks, as after a power cut), then start it again",
		e.Name, why, e.Name)
}

// CheckRestore decides whether host may restore a saved state of domain
// name, given the last start etcd recorded (nil: none) and the last run
// this host recorded locally (nil: none).
//
// Outcomes:
//   - nil when etcd records no start (the product's rule: a domain the
//     cluster has no record of ran nowhere else);
//   - nil when etcd's last start is mine: same host, same sequence number;
//   - *RestoreError otherwise: another host started it since, or this host
//     cannot tell which of its runs the saved state comes from.
func CheckRestore(name, host string, last, mine *Run) error {
	if last == nil {
		return nil
	}
	if mine != nil && last.Host == host && last.same(*mine) {
		return nil
	}
	return &RestoreError{Name: name, Host: host, Last: *last, Mine: mine}
}

// handRun moves the domain's runs record, as read (kvs), from a
// migration's source to its destination in the hand-off's Txn: the guest's
// run goes on there, under the same sequence number, which the
// destination's incoming claim returned (ClaimResult.Run) for it to keep.
// ok is false when the record does not name the source (absent, or another
// start since): then it stays as it is.
func (s *Store) handRun(uuid, from, to string, since time.Time, kvs []*mvccpb.KeyValue) (clientv3.Cmp, clientv3.Op, bool) {
	if len(kvs) == 0 {
		return clientv3.Cmp{}, clientv3.Op{}, false
	}
	key := s.keys.Run(uuid)
	r, err := decode[Run](key, kvs[0].Value)
	if err != nil || r.Host != from {
		return clientv3.Cmp{}, clientv3.Op{}, false
	}
	r.Host, r.Since = to, since
	return clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision), clientv3.OpPut(key, encode(r)), true
}

// LastRun reads PREFIX/runs/UUID: the last start recorded for the domain,
// nil when none is.
//
// Outcomes: the record; nil, nil when there is none; an error when the key
// holds something else; ErrUnavailable (wrapped) when etcd did not answer.
func (s *Store) LastRun(ctx context.Context, uuid string) (*Run, error) {
	key := s.keys.Run(uuid)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, s.wrap(err, "reading the last run of domain "+uuid)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	r, err := decode[Run](key, resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	return &r, nil
}
