package lease

import (
	"context"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Snapshot is everything virtlease keeps in etcd, read at one revision.
type Snapshot struct {
	Revision   int64
	Hosts      []HostStatus
	Domains    []DomainStatus
	Migrations map[string]Migration // by UUID
	Intents    map[string]Intent    // by UUID
	Drains     map[string]Drain     // by host
	Unfenced   map[string]Unfenced  // by host
	// Problems lists keys under the prefix that could not be read as
	// virtlease records; they are shown, never acted on.
	Problems []string
}

// HostStatus is one registered host and how long its session has left.
type HostStatus struct {
	HostRecord
	TTL time.Duration // left on the lease as etcd reports it; -1 when unknown
}

// DomainStatus is one held domain with the disks held for it.
type DomainStatus struct {
	Record
	Disks []string `json:"disks"`
	// Revision is the newest ModRevision among the keys as Holdings read
	// them (0 elsewhere): ReleaseStale releases nothing written later.
	Revision int64 `json:"-"`
}

// Snapshot reads every key under the prefix in one range read, plus one
// TimeToLive per host lease (for display only: virtlease never dates a
// deadline from TimeToLive).
func (s *Store) Snapshot(ctx context.Context) (Snapshot, error) {
	resp, err := s.cli.Get(ctx, s.keys.Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return Snapshot{}, s.wrap(err, "reading "+s.keys.Prefix)
	}
	snap := Snapshot{Revision: resp.Header.Revision,
		Migrations: map[string]Migration{}, Intents: map[string]Intent{},
		Drains: map[string]Drain{}, Unfenced: map[string]Unfenced{}}
	domains := map[string]*DomainStatus{}
	var disks []Record
	var diskIDs []string
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		rest := strings.TrimPrefix(key, s.keys.Prefix+"/")
		kind, _, _ := strings.Cut(rest, "/")
		name := s.keys.Name(key)
		var err error
		switch kind {
		case "hosts":
			var h HostRecord
			if h, err = decode[HostRecord](key, kv.Value); err == nil {
				snap.Hosts = append(snap.Hosts, HostStatus{HostRecord: h, TTL: -1})
			}
		case "domains":
			var r Record
			if r, err = decode[Record](key, kv.Value); err == nil {
				domains[r.UUID] = &DomainStatus{Record: r}
			}
		case "disks":
			var r Record
			if r, err = decode[Record](key, kv.Value); err == nil {
				disks = append(disks, r)
				diskIDs = append(diskIDs, name)
			}
		case "migrations":
			snap.Migrations[name], err = decode[Migration](key, kv.Value)
		case "intents":
			snap.Intents[name], err = decode[Intent](key, kv.Value)
		case "drain":
			snap.Drains[name], err = decode[Drain](key, kv.Value)
		case "unfenced":
			snap.Unfenced[name], err = decode[Unfenced](key, kv.Value)
		}
		if err != nil {
			snap.Problems = append(snap.Problems, err.Error())
		}
	}
	for i, r := range disks {
		if d, ok := domains[r.UUID]; ok && d.Host == r.Host {
			d.Disks = append(d.Disks, diskIDs[i])
		} else {
			// A disk key without its domain key: show it as its own line.
			domains["disk:"+diskIDs[i]] = &DomainStatus{Record: r, Disks: []string{diskIDs[i]}}
		}
	}
	for _, d := range domains {
		sort.Strings(d.Disks)
		snap.Domains = append(snap.Domains, *d)
	}
	sort.Slice(snap.Domains, func(i, j int) bool {
		if snap.Domains[i].Name != snap.Domains[j].Name {
			return snap.Domains[i].Name < snap.Domains[j].Name
		}
		return snap.Domains[i].UUID < snap.Domains[j].UUID
	})
	sort.Slice(snap.Hosts, func(i, j int) bool { return snap.Hosts[i].Host < snap.Hosts[j].Host })
	for i := range snap.Hosts {
		ttl, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(snap.Hosts[i].Lease))
		if err == nil && ttl.TTL >= 0 {
			snap.Hosts[i].TTL = time.Duration(ttl.TTL) * time.Second
		}
	}
	return snap, nil
}
