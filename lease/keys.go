package lease

import (
	"net/url"
	"strings"
)

// DefaultPrefix is where virtlease keeps its keys when the config names no prefix.
const DefaultPrefix = "/virtlease"

// Keys builds every etcd key virtlease reads or writes. The layout lives here
// and nowhere else, so that etcdctl users, tests and code agree on it.
//
// Every variable part (host name, UUID, disk ID) is escaped with
// url.PathEscape: nothing that comes from a domain's XML or a host name can
// add a path segment or step outside its key.
type Keys struct {
	Prefix string
}

// NewKeys returns the key builder for prefix, cleaned of trailing slashes.
// An empty prefix means DefaultPrefix.
func NewKeys(prefix string) Keys {
	prefix = strings.TrimRight(prefix, "/")
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{Prefix: prefix}
}

func (k Keys) join(kind, name string) string {
	return k.Prefix + "/" + kind + "/" + url.PathEscape(name)
}

// Dir returns the prefix of every key of one kind ("hosts", "domains", …),
// with its trailing slash, for range reads.
func (k Keys) Dir(kind string) string { return k.Prefix + "/" + kind + "/" }

// Host is the key that says host is alive; it carries the host's session lease.
func (k Keys) Host(host string) string { return k.join("hosts", host) }

// Domain is the key that says who runs the domain with this UUID.
func (k Keys) Domain(uuid string) string { return k.join("domains", uuid) }

// Disk is the key that says who writes the disk with this ID.
func (k Keys) Disk(id string) string { return k.join("disks", id) }

// Migration is the record of a live migration of the domain in flight.
func (k Keys) Migration(uuid string) string { return k.join("migrations", uuid) }

// Intent is the desired state of an HA domain.
func (k Keys) Intent(uuid string) string { return k.join("intents", uuid) }

// Run is the record of the domain's last start: which host, the how-manieth
// (no lease; one small key per domain ever started, overwritten by each
// start, never deleted by virtlease). A saved state is restored only where
// the record still names that host's run.
func (k Keys) Run(uuid string) string { return k.join("runs", uuid) }

// Drain marks a host that refuses new starts.
func (k Keys) Drain(host string) string { return k.join("drain", host) }

// Unfenced lists the guests a stopped watchdog left running on host.
func (k Keys) Unfenced(host string) string { return k.join("unfenced", host) }

// Audit is the record of one forced operator action.
func (k Keys) Audit(id string) string { return k.join("audit", id) }

// Name returns the unescaped last segment of a key built by Keys.
func (k Keys) Name(key string) string {
	i := strings.LastIndexByte(key, '/')
	name, err := url.PathUnescape(key[i+1:])
	if err != nil {
		return key[i+1:]
	}
	return name
}
